"""Joint training's budget curve and where a strategy sits on it."""

from __future__ import annotations

import json
import math

import pytest

from cl_fir.report.budget_curve import BudgetPoint, flops_to_reach, interpolate, place, plateau_flops


def test_interpolation_is_linear_in_log_flops_and_never_extrapolates():
    xs, ys = [1e9, 1e10, 1e11], [40.0, 60.0, 70.0]
    assert interpolate(xs, ys, 1e10) == 60.0
    assert interpolate(xs, ys, 10 ** 9.5) == pytest.approx(50.0)           # halfway in log FLOPs
    assert interpolate(xs, ys, 9.9e8) is None and interpolate(xs, ys, 1.01e11) is None


def test_flops_to_reach_finds_the_first_crossing_or_says_where_it_is():
    xs, ys = [1e9, 1e10, 1e11], [40.0, 60.0, 70.0]
    assert flops_to_reach(xs, ys, 50.0) == (pytest.approx(10 ** 9.5), "on the curve")
    assert flops_to_reach(xs, ys, 75.0) == (None, "above the curve")
    assert flops_to_reach(xs, ys, 30.0) == (1e9, "below the curve")


def _curve(offset=0.0):
    return [BudgetPoint(d, {0: v + offset, 1: v + 2 + offset}, {0: f, 1: f}) for d, v, f in
            ((100, 40.0, 1e9), (1000, 60.0, 1e10), (10000, 70.0, 1e11), (20000, 70.5, 2e11))]


def test_placement_pairs_each_seed_with_its_own_curve():
    p = place(_curve(), {0: 55.0, 1: 58.0}, {0: 10 ** 9.5, 1: 10 ** 9.5})
    # joint at 10^9.5 FLOPs: seed 0 50, seed 1 52 -> differences 5 and 6
    assert p.joint_at_flops[0] == pytest.approx(51.0)
    assert p.difference.difference == pytest.approx(5.5) and p.difference.pairs == 2
    assert p.reach == "on the curve" and math.log10(p.flops_to_reach) == pytest.approx(9.5 + 0.5 * 5.5 / 20, abs=0.2)
    assert plateau_flops(_curve()) == 1e11                   # 70 is within a point of the best, 70.5
    assert p.ratio_joint_plateau == pytest.approx(10 ** 9.5 / 1e11)


def test_placement_refuses_to_extrapolate_past_the_curve():
    p = place(_curve(), {0: 72.0, 1: 73.0}, {0: 5e11, 1: 5e11})
    assert p.joint_at_flops is None and p.difference is None and p.seeds_outside == [0, 1]
    assert p.reach == "above the curve"


def test_twice_the_epochs_puts_a_strategy_at_twice_the_flops(tiny_scenario, tmp_path):
    """End to end: joint at three budgets, finetune with 1 and 2 epochs; compare places the
    2-epoch run at twice the FLOPs of the 1-epoch run."""
    from cl_fir.report.compare import budget_markdown, compare
    from cl_fir.report.run_dir import load_run
    from cl_fir.runner import execute_run, resolve_config

    runs = []
    for doublets in (8, 32, 128):
        runs.append(execute_run(resolve_config("joint", str(tiny_scenario), strategy_options={"doublets": str(doublets)},
                                               output_dir=str(tmp_path), run_id=f"d{doublets}")))
    for epochs in (1, 2):
        runs.append(execute_run(resolve_config("finetune", str(tiny_scenario), {"train.epochs": str(epochs)},
                                               output_dir=str(tmp_path), run_id=f"e{epochs}")))
    joint_steps = [sum(i["optimizer_steps"] for i in json.loads((r / "cost.json").read_text())["increments"])
                   for r in runs[:3]]
    assert joint_steps == [1, 4, 16]                       # batch 8: one training, at the last increment
    rows = compare([load_run(r) for r in runs])
    finetune = sorted((r for r in rows if r["strategy"] == "finetune"), key=lambda r: r["train_flops"])
    assert len(finetune) == 2 and all(r["placement"] is not None for r in finetune)
    assert finetune[1]["placement"].flops == pytest.approx(2 * finetune[0]["placement"].flops)
    assert all(r["placement"] is None for r in rows if r["strategy"] == "joint")
    assert "joint training's budget curve" in budget_markdown(rows)


def test_a_joint_run_on_the_command_line_prints_its_budget_point(tiny_scenario, tmp_path):
    """A joint run alone is not a compared strategy: its summary line names its budget,
    final metric and FLOPs instead of an empty comparison table."""
    from typer.testing import CliRunner

    from cl_fir.cli import app

    res = CliRunner().invoke(app, ["run", "--strategy", "joint", "--scenario", str(tiny_scenario), "--opt",
                                   "doublets=8", "--output-dir", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "joint at 8 doublets: final MAP@all" in res.output and "training FLOPs" in res.output
