"""``--log tensorboard``: the event files a run writes, read back with TensorBoard's own reader
and checked against the run's matrix.csv, run.json and cost.json; a resumed run appends
without repeating a step, even after an interrupted process wrote past its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from cl_fir.cli import app
from cl_fir.errors import ConfigError
from cl_fir.runner import _tracker, execute_run, resolve_config, resume_run

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator   # a declared dependency: never skipped


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def logged_run(tiny_scenario, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tb")
    result = CliRunner().invoke(app, ["run", "--strategy", "finetune", "--scenario", str(tiny_scenario), "--seed", "3",
                                      "--output-dir", str(out), "--log", "tensorboard", "--quiet"])
    assert result.exit_code == 0, result.output
    return out / "tiny" / "finetune" / "seed3"


def test_events_hold_step_losses_matrix_cells_derived_metrics_and_cost(logged_run):
    assert json.loads((logged_run / "config.json").read_text())["log"] == "tensorboard"
    cost = json.loads((logged_run / "cost.json").read_text())
    info = json.loads((logged_run / "run.json").read_text())
    train = _scalars(logged_run / "tensorboard" / "train")
    steps = [s for s, _ in train["loss"]]
    assert steps == list(range(1, cost["total"]["optimizer_steps"] + 1))
    assert all(v > 0 for _, v in train["loss"])

    inc = _scalars(logged_run / "tensorboard" / "increments")
    lines = (logged_run / "matrix.csv").read_text().splitlines()
    header = lines[0].split(",")[1:]
    for i, line in enumerate(lines[1:], start=1):
        for name, cell in zip(header, line.split(",")[1:]):
            if cell:   # a task not seen yet has an empty cell and no event
                assert (i, pytest.approx(float(cell), abs=1e-3)) in inc[f"matrix/{name}"]
    assert [s for s, _ in inc["derived/avg_incremental"]] == [1, 2]
    assert [s for s, _ in inc["derived/forgetting"]] == [2]   # nothing to forget after the first increment
    summary = (logged_run / "summary.md").read_text()
    assert f"{inc['derived/forgetting'][0][1]:.2f}" in summary and f"{inc['derived/avg_incremental'][-1][1]:.2f}" in summary
    for k, per_increment in enumerate(cost["increments"], start=1):
        assert (k, pytest.approx(per_increment["image_passes"])) in inc["cost/image_passes"]
        assert (k, pytest.approx(per_increment["train_flops"], rel=1e-6)) in inc["cost/train_flops"]
    assert inc["cost_total/image_passes"][-1][1] == pytest.approx(cost["total"]["image_passes"])
    assert info["status"] == "complete"


def test_resume_appends_without_repeating_a_step(logged_run, tiny_scenario, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    cfg = resolve_config("finetune", str(tiny_scenario), output_dir=str(tmp_path), seed=3, log="tensorboard")
    run = execute_run(cfg, stop_after=1)
    done = json.loads((run / "cost.json").read_text())["total"]["optimizer_steps"]
    # a process killed later would have written past the checkpoint the run continues from
    with SummaryWriter(str(run / "tensorboard" / "train")) as stale:
        for step in range(done + 1, done + 4):
            stale.add_scalar("loss", 999.0, step)
    with SummaryWriter(str(run / "tensorboard" / "increments")) as stale:
        stale.add_scalar("derived/avg_incremental", 999.0, 2)
    resume_run(run)
    train = _scalars(run / "tensorboard" / "train")["loss"]
    reference = _scalars(logged_run / "tensorboard" / "train")["loss"]
    assert [s for s, _ in train] == [s for s, _ in reference]          # every step once, in order
    assert [v for _, v in train] == pytest.approx([v for _, v in reference], rel=1e-5)   # none of the stale ones
    avg = _scalars(run / "tensorboard" / "increments")["derived/avg_incremental"]
    assert [s for s, _ in avg] == [1, 2] and 999.0 not in [v for _, v in avg]


def test_off_by_default_only_rank_zero_writes_and_bad_values_are_refused(tiny_scenario, tmp_path):
    cfg = resolve_config("finetune", str(tiny_scenario), output_dir=str(tmp_path), seed=4)
    assert cfg.log == "none"
    fake_loop = SimpleNamespace(dist=SimpleNamespace(is_main=False), loss_readback=SimpleNamespace(listener=None))
    run_dir = SimpleNamespace(read_only=False, path=tmp_path)
    cfg.log = "tensorboard"
    assert _tracker(cfg, run_dir, fake_loop, None, 0) is None     # ranks other than 0 write nothing
    assert not (tmp_path / "tensorboard").exists()
    with pytest.raises(ConfigError, match="--log"):
        resolve_config("finetune", str(tiny_scenario), output_dir=str(tmp_path), seed=4, log="wandb")


def test_sweep_passes_log_to_its_cells(monkeypatch, tmp_path):
    import cl_fir.sweep
    from cl_fir.errors import CLFirError

    seen = {}

    def plan(strategies, scenarios, seeds, output_dir, extra_args=None):
        seen["extra"] = list(extra_args or [])
        raise CLFirError("planned")

    monkeypatch.setattr(cl_fir.sweep, "plan", plan)
    result = CliRunner().invoke(app, ["sweep", "--strategies", "finetune", "--scenarios", "synth-2inc",
                                      "--output-dir", str(tmp_path), "--log", "tensorboard"])
    assert "planned" in result.output
    assert seen["extra"][-2:] == ["--log", "tensorboard"]


def test_tracking_switched_on_when_resuming_starts_at_the_checkpoint(tiny_scenario, tmp_path):
    cfg = resolve_config("finetune", str(tiny_scenario), output_dir=str(tmp_path), seed=5)
    run = execute_run(cfg, stop_after=1)
    done = json.loads((run / "cost.json").read_text())["total"]["optimizer_steps"]
    assert not (run / "tensorboard").exists()
    with pytest.raises(ConfigError, match="log"):   # a changed setting needs --force, as every other
        resume_run(run, changes={"log": "tensorboard"})
    resume_run(run, changes={"log": "tensorboard"}, force=True)
    total = json.loads((run / "cost.json").read_text())["total"]["optimizer_steps"]
    assert [s for s, _ in _scalars(run / "tensorboard" / "train")["loss"]] == list(range(done + 1, total + 1))
    assert [s for s, _ in _scalars(run / "tensorboard" / "increments")["derived/avg_incremental"]] == [2]
