# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cl-fir-installed
RESULTS ?= results

.PHONY: setup demo test test-slow bench clean

setup: $(STAMP)

# Re-installs only when the package definition changes; otherwise a no-op.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# The comparison the project is about, on the default (embedded) scenario: one process per
# cell, two at a time; cells already complete under $(RESULTS) are skipped, interrupted ones resumed.
# The longest cell (static) starts first, so the two processes finish close together.
demo: setup
	$(BIN)/cl-fir sweep --strategies static,mcl_fir,ewc,lwf,finetune --scenarios synth-4inc --seeds 0 --jobs 2 \
		--output-dir $(RESULTS) --no-compare
	$(BIN)/cl-fir compare --root $(RESULTS) --scenario synth-4inc

test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

bench: setup
	$(BIN)/cl-fir bench

clean:
	rm -rf $(RESULTS) .pytest_cache
