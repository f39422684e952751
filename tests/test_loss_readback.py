"""Loss readback: immediate on CPU, one step late on CUDA (tested here by forcing the
deferred path on CPU); a non-finite loss is reported with the step that produced it and
never reaches a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cl_fir.cli import app
from cl_fir.engine.loss_readback import LossReadback


class Stop(Exception):
    pass


def _raise(value, where):
    raise Stop((value, where))


def test_immediate_readback_reads_each_value_at_once():
    rb = LossReadback(_raise, deferred=False)
    for i, v in enumerate([1.0, 2.0, 4.0]):
        rb.push(torch.tensor(v), i)
        assert rb.latest == v
    assert rb.mean == pytest.approx(7 / 3) and rb.count == 3
    with pytest.raises(Stop) as info:
        rb.push(torch.tensor(float("inf")), "step 4")
    assert info.value.args[0] == (float("inf"), "step 4")


def test_deferred_readback_lags_one_step_and_flush_reads_the_rest():
    rb = LossReadback(_raise, deferred=True)
    rb.push(torch.tensor(1.0), 0)
    assert rb.latest is None and rb.count == 0
    rb.push(torch.tensor(3.0), 1)
    assert rb.latest == 1.0 and rb.count == 1
    rb.flush()
    assert rb.latest == 3.0 and rb.mean == 2.0
    rb.flush()                                  # nothing pending: no change
    assert rb.count == 2
    rb.reset()
    assert rb.count == 0 and rb.latest is None


def test_deferred_readback_names_the_step_that_produced_a_non_finite_loss():
    rb = LossReadback(_raise, deferred=True)
    rb.push(torch.tensor(1.0), "a")
    rb.push(torch.tensor(float("nan")), "b")
    with pytest.raises(Stop) as info:
        rb.push(torch.tensor(1.0), "c")
    assert info.value.args[0][1] == "b"
    rb2 = LossReadback(_raise, deferred=True)
    rb2.push(torch.tensor(float("nan")), "last")
    with pytest.raises(Stop):
        rb2.flush()


def test_deferred_readback_keeps_non_finite_weights_out_of_checkpoints(tiny_scenario, tmp_path, monkeypatch,
                                                                       nan_loss_at_step):
    """The CUDA path on CPU: the NaN step's update happens, but the loop flushes before each
    checkpoint, so the saved weights are those of the last good step."""
    from cl_fir.engine import loop as loop_module

    monkeypatch.setattr(loop_module.LossReadback, "for_device",
                        classmethod(lambda cls, device, on_non_finite: cls(on_non_finite, deferred=True)))
    nan_loss_at_step(3)
    res = CliRunner().invoke(app, ["run", "--strategy", "finetune", "--scenario", str(tiny_scenario), "--output-dir",
                                   str(tmp_path), "--checkpoint-every", "1", "--quiet"])
    assert res.exit_code == 2
    assert "non-finite loss (nan) at increment 2, epoch 1, step 1" in res.output
    run_dir = tmp_path / "tiny" / "finetune" / "seed0"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    saved = list((run_dir / "checkpoints").glob("*.pt"))
    assert saved
    for path in saved:
        state = torch.load(path, map_location="cpu", weights_only=False)["loop"]["model"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()), path.name
