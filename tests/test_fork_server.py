"""Commands forked from the warm fork server behave as ``cl-fir <args>`` in a fresh process:
the same exit codes, plain-text logs, byte-identical run results, the sweep's thread count;
without a server (outside Linux, or the server gone) they run as a subprocess instead."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from cl_fir.runtime.fork_server import WarmStarter, run_subprocess
from cl_fir.sweep import COLD_COMMAND, threads_per_cell, warm_starter

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server runs on Linux only")


def _run_args(scenario, out, seed=0):
    return ["run", "--quiet", "--strategy", "finetune", "--scenario", str(scenario), "--seed", str(seed),
            "--output-dir", str(out), "--run-id", f"seed{seed}"]


def test_warm_and_cold_commands_agree(tiny_scenario, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = threads_per_cell(2)
    cold = COLD_COMMAND + _run_args(tiny_scenario, tmp_path / "cold")
    with warm_starter() as starter, ThreadPoolExecutor(2) as pool:   # the cold run beside the warm ones
        cold_run = pool.submit(run_subprocess, cold, tmp_path / "cold.log", threads)
        assert starter.run(_run_args(tiny_scenario, tmp_path / "warm"), tmp_path / "warm.log", threads) == 0
        bad = starter.run(["run", "--strategy", "nope"], tmp_path / "bad.log")
        usage = starter.run(["run", "--no-such-option"], tmp_path / "usage.log")
        assert cold_run.result() == 0
    for name in ("matrix.csv", "metrics.csv"):
        warm = (tmp_path / "warm" / "tiny" / "finetune" / "seed0" / name).read_bytes()
        assert warm == (tmp_path / "cold" / "tiny" / "finetune" / "seed0" / name).read_bytes(), name
    cost = json.loads((tmp_path / "warm" / "tiny" / "finetune" / "seed0" / "cost.json").read_text())
    assert cost["name"] == f"cpu ({threads} threads)"   # the sweep's share of the cores, as for a subprocess
    assert bad == 2
    log = (tmp_path / "bad.log").read_text()
    assert "error: unknown strategy 'nope'" in log and "\x1b[" not in log   # plain text, whatever the terminal
    assert usage == 2 and "No such option" in (tmp_path / "usage.log").read_text()


def test_without_a_server_commands_run_as_subprocesses(tmp_path, monkeypatch):
    with warm_starter() as starter:
        starter._server.kill()
        starter._server.wait()
        assert starter.run(["run", "--no-such-option"], tmp_path / "gone.log") == 2
    assert "No such option" in (tmp_path / "gone.log").read_text()
    monkeypatch.setattr(sys, "platform", "darwin")   # outside Linux no server is started
    with warm_starter() as starter:
        assert starter._server is None
        assert starter.run(["run", "--no-such-option"], tmp_path / "elsewhere.log") == 2
    assert "No such option" in (tmp_path / "elsewhere.log").read_text()


def test_a_server_whose_imports_initialise_cuda_does_not_fork(tmp_path, monkeypatch):
    """A child forked after CUDA was initialised could not use it: such a server stops at
    once and the commands run in fresh interpreters."""
    (tmp_path / "cuda_at_import.py").write_text("import torch\ntorch.cuda.is_initialized = lambda: True\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with WarmStarter(["cuda_at_import"], "cl_fir.cli:run_in_fork", COLD_COMMAND) as starter:
        starter._server.wait(timeout=120)
        assert starter.run(["run", "--no-such-option"], tmp_path / "cold.log") == 2
    assert "No such option" in (tmp_path / "cold.log").read_text()



def test_what_an_import_prints_does_not_disturb_the_replies(tmp_path, monkeypatch):
    (tmp_path / "noisy_import.py").write_text('print("exit 0 0")\nprint("a banner")\n')
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with WarmStarter(["noisy_import"], "cl_fir.cli:run_in_fork", COLD_COMMAND) as starter:
        assert starter.run(["run", "--no-such-option"], tmp_path / "warm.log") == 2
        assert starter._server.poll() is None   # answered by the server, not by the cold fallback
    assert "No such option" in (tmp_path / "warm.log").read_text()
