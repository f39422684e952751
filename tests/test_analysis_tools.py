"""Learning curves, input-shift measurement and tuning on the tiny scenario."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cl_fir.analysis.input_shift import domain_accuracy, increment_features, shift_markdown, shift_matrix
from cl_fir.analysis.learning_curves import increment_budget, plateau_report, task_curve, write_curves
from cl_fir.tuning import parse_grid


def test_a_learning_curve_evaluates_at_each_requested_step(tiny_scenario, tmp_path):
    points = task_curve(str(tiny_scenario), "sleeve_length", [0, 1, 3], seed=0)
    assert [p.steps for p in points] == [0, 1, 3] and all(p.task == "sleeve_length" for p in points)
    assert all(0 <= p.value <= 100 and 10 < p.chance < 40 for p in points)
    assert points[0].value != points[-1].value                      # training moved the model
    written = write_curves(points, 3, tmp_path, "MAP@all")
    assert all(p.is_file() for p in written) and "(budget)" in (tmp_path / "curves.md").read_text()
    report = plateau_report(points, 3)["sleeve_length"]
    assert report["budget"] == points[-1].value and math.isclose(report["over_chance_at_budget"],
                                                                 points[-1].value - points[0].chance)
    assert "on the valid split" in (tmp_path / "curves.md").read_text()


def test_learning_curves_stay_on_the_valid_split_unless_asked(tiny_scenario):
    """The curves inform the benchmark's design, so by default they never look at the test
    split, whatever the scenario evaluates on."""
    start = {split: task_curve(str(tiny_scenario), "sleeve_length", [0], seed=0, split=split)[0].value
             for split in ("valid", "test")}
    assert start["valid"] != start["test"]
    assert task_curve(str(tiny_scenario), "sleeve_length", [0], seed=0)[0].value == start["valid"]


def test_increment_budget_counts_optimizer_steps():
    from types import SimpleNamespace

    cfg = SimpleNamespace(train=SimpleNamespace(epochs=2, samples_per_epoch=640, batch_size=32))
    assert increment_budget(cfg) == 40


def test_domain_accuracy_is_chance_for_one_distribution_and_high_for_two():
    rng = np.random.default_rng(0)
    same = domain_accuracy(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)))
    apart = domain_accuracy(rng.normal(size=(200, 8)), rng.normal(loc=1.5, size=(200, 8)))
    assert 0.35 < same < 0.65 and apart > 0.95


def test_input_shift_between_the_increments_of_a_scenario(tiny_scenario):
    names, features = increment_features(str(tiny_scenario), per_increment=24)
    assert names == ["skirt_length+sleeve_length", "coat_length+pant_length"]
    assert [f.shape[0] for f in features] == [24, 24]
    matrix = shift_matrix(features)
    assert np.isnan(matrix[0, 0]) and matrix[0, 1] == matrix[1, 0] and 0 <= matrix[0, 1] <= 100
    assert "Domain-classifier accuracy" in shift_markdown(names, matrix)


def test_grid_parsing():
    grid = parse_grid(["kd_weight=1,3", "train.lr=1e-3"])
    assert [c.values for c in grid] == [{"kd_weight": "1", "train.lr": "1e-3"}, {"kd_weight": "3", "train.lr": "1e-3"}]
    assert grid[0].arguments() == ["--opt", "kd_weight=1", "--set", "train.lr=1e-3"]
    assert grid[1].label == "kd_weight=3_lr=1e-3"
    from cl_fir.errors import ConfigError

    with pytest.raises(ConfigError, match="KEY=V1,V2"):
        parse_grid(["kd_weight"])


def test_tune_runs_every_configuration_on_the_valid_split_and_picks_the_best(tiny_scenario, tmp_path):
    from typer.testing import CliRunner

    from cl_fir.cli import app

    result = CliRunner().invoke(app, ["tune", "--strategy", "lwf", "--scenario", str(tiny_scenario),
                                      "--grid", "kd_weight=0,10", "--seeds", "100", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "tiny" / "lwf" / "tuning.json").read_text())
    assert record["split"] == "valid" and record["seeds"] == [100] and len(record["configurations"]) == 2
    finals = [c["final"] for c in record["configurations"]]
    assert finals == sorted(finals, reverse=True) and record["chosen"] == record["configurations"][0]["values"]
    config = json.loads((tmp_path / "tiny" / "lwf" / "kd_weight=0_seed100" / "config.json").read_text())
    assert config["eval"]["split"] == "valid" and config["strategy_options"]["kd_weight"] == 0
    assert "2 configurations x 1 tuning seeds" in result.output


def test_curves_command_names_its_split(tiny_scenario, tmp_path):
    from typer.testing import CliRunner

    from cl_fir.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["curves", "--scenario", str(tiny_scenario), "--steps", "0,1", "--seeds", "0",
                              "--tasks", "sleeve_length", "--output-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "on the valid split" in (tmp_path / "curves.md").read_text()
