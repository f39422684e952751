"""`cl-fir sweep`: one process per cell, failures isolated, complete cells skipped,
interrupted ones resumed, a comparison at the end; the Ray backend when ray is installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cl_fir.cli import app
from cl_fir.runner import execute_run, resolve_config
from cl_fir.sweep import plan

runner = CliRunner()

BROKEN = '''
from cl_fir.registry import register_strategy
from cl_fir.strategy import Strategy


@register_strategy("broken_for_sweep")
class Broken(Strategy):
    def before_training_exp(self, ctx):
        raise RuntimeError("this strategy always fails")
'''


def test_plan_decides_per_cell(tiny_scenario, tmp_path):
    done = execute_run(resolve_config("finetune", str(tiny_scenario), output_dir=str(tmp_path), seed=0))
    execute_run(resolve_config("finetune", str(tiny_scenario), output_dir=str(tmp_path), seed=1), stop_after=1)
    cells = plan(["finetune"], [str(tiny_scenario)], [0, 1, 2], tmp_path).cells
    assert [c.action for c in cells] == ["skip", "resume", "run"]
    assert cells[0].run_dir == done


def test_sweep_isolates_failures_resumes_and_skips(tiny_scenario, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text(BROKEN)
    out = tmp_path / "results"
    stopped = execute_run(resolve_config("finetune", str(tiny_scenario), output_dir=str(out), seed=1), stop_after=1)
    args = ["sweep", "--strategies", f"finetune,{broken}:Broken", "--scenarios", str(tiny_scenario),
            "--seeds", "0,1", "--output-dir", str(out), "--jobs", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    assert "| tiny | finetune | 0 | run | complete |" in res.output
    assert "| tiny | finetune | 1 | resume | complete |" in res.output
    assert "| tiny | broken_for_sweep | 0 | run | failed |" in res.output and "always fails" in res.output
    assert json.loads((stopped / "run.json").read_text())["status"] == "complete"
    for name in ("report.html", "comparison.md", "comparison.csv", "comparison.tex", "comparison_tasks.csv"):
        assert (out / name).is_file(), name
    assert (out / "sweep_logs" / "tiny__broken_for_sweep__seed0.log").is_file()
    again = runner.invoke(app, args[:2] + ["finetune"] + args[3:])   # finetune only: everything is complete
    assert again.exit_code == 0, again.output
    assert again.output.count("| skip | complete |") == 2


def test_sweep_bad_arguments(tiny_scenario, tmp_path):
    res = runner.invoke(app, ["sweep", "--strategies", "finetune", "--scenarios", str(tiny_scenario),
                              "--seeds", "a-b", "--output-dir", str(tmp_path)])
    assert res.exit_code == 2 and "--seeds: expected integers" in res.output
    res = runner.invoke(app, ["sweep", "--strategies", "nope", "--scenarios", str(tiny_scenario)])
    assert res.exit_code == 2 and "unknown strategy 'nope'" in res.output
    res = runner.invoke(app, ["sweep", "--strategies", "finetune", "--scenarios", str(tiny_scenario),
                              "--backend", "slurm", "--output-dir", str(tmp_path)])
    assert res.exit_code == 2 and "--backend: expected one of local, ray" in res.output


def test_ray_backend_runs_the_same_cells(tiny_scenario, tmp_path):
    pytest.importorskip("ray", reason="the optional extra cl-fir[ray] is not installed")
    res = runner.invoke(app, ["sweep", "--strategies", "finetune", "--scenarios", str(tiny_scenario), "--seeds", "0,1",
                              "--output-dir", str(tmp_path), "--jobs", "2", "--backend", "ray", "--no-compare"])
    assert res.exit_code == 0, res.output
    for seed in (0, 1):
        info = json.loads((Path(tmp_path) / "tiny" / "finetune" / f"seed{seed}" / "run.json").read_text())
        assert info["status"] == "complete"
