"""Every registered strategy (shipped or dropped into strategies/) must pass this.

It trains 2 increments of a tiny scenario and produces a full matrix; and stopping after
the first increment, then resuming from the checkpoint (model and strategy state saved
and restored) gives exactly the same results as the uninterrupted run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cl_fir.registry import available_strategies
from cl_fir.report.run_dir import load_run
from cl_fir.runner import execute_run, resolve_config, resume_run


@pytest.mark.parametrize("name", list(available_strategies()))
def test_strategy_conformance(name, tiny_scenario, tmp_path):
    full = execute_run(resolve_config(name, str(tiny_scenario), output_dir=str(tmp_path / "full"), seed=3))
    run = load_run(full)
    assert run.complete and run.matrix.shape == (2, 4)
    assert np.isfinite(run.matrix[1]).all() and np.isfinite(run.matrix[0, :2]).all()

    split = execute_run(resolve_config(name, str(tiny_scenario), output_dir=str(tmp_path / "split"), seed=3),
                        stop_after=1)
    assert json.loads((split / "run.json").read_text())["status"] == "stopped"
    resume_run(split)
    assert (split / "matrix.csv").read_text() == (full / "matrix.csv").read_text()
    assert (split / "metrics.csv").read_text() == (full / "metrics.csv").read_text()
    counts = ("images_forwarded", "extra_forward_images", "extra_head_passes", "optimizer_steps", "stored_images")
    a, b = (json.loads((p / "cost.json").read_text())["increments"] for p in (full, split))
    assert [[c[k] for k in counts] for c in a] == [[c[k] for k in counts] for c in b]


class _Crash(RuntimeError):
    pass


@pytest.mark.parametrize("name", list(available_strategies()))
def test_crash_mid_increment_then_resume_is_exact(name, tiny_scenario, tmp_path, monkeypatch):
    """A crash after step 3 of 4 (the middle of increment 2), resumed from the step checkpoint."""
    from cl_fir.engine.loop import TrainingLoop

    kw = dict(overrides={"train.checkpoint_every": 1}, seed=4)
    full = execute_run(resolve_config(name, str(tiny_scenario), output_dir=str(tmp_path / "full"), **kw))
    original = TrainingLoop.training_step
    calls = {"n": 0}

    def crashing_step(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise _Crash("simulated crash")
        return original(self, batch)

    monkeypatch.setattr(TrainingLoop, "training_step", crashing_step)
    with pytest.raises(_Crash):
        execute_run(resolve_config(name, str(tiny_scenario), output_dir=str(tmp_path / "crash"), **kw))
    crashed = tmp_path / "crash" / "tiny" / name / "seed4"
    info = json.loads((crashed / "run.json").read_text())
    assert info["status"] == "failed" and info["last_step_checkpoint"]["increment"] == 2
    monkeypatch.setattr(TrainingLoop, "training_step", original)
    resume_run(crashed)
    assert (crashed / "matrix.csv").read_text() == (full / "matrix.csv").read_text()
    assert (crashed / "metrics.csv").read_text() == (full / "metrics.csv").read_text()
    assert not (crashed / "checkpoints" / "step.pt").exists()
    counts = ("images_forwarded", "extra_forward_images", "extra_head_passes", "optimizer_steps")
    a, b = (json.loads((p / "cost.json").read_text())["increments"] for p in (full, crashed))
    assert [[c[k] for k in counts] for c in a] == [[c[k] for k in counts] for c in b]
