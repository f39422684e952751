"""A whole run of 2 increments with a tiny model, its files, and `compare` over it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cl_fir.cli import app
from cl_fir.evaluation import matrix_metrics
from cl_fir.report.run_dir import load_run

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tiny_scenario, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    paths = {}
    for strategy in ("finetune", "static"):
        extra = ["--set", "eval.leave_one_out_map_r=true"] if strategy == "static" else []
        res = runner.invoke(app, ["run", "--strategy", strategy, "--scenario", str(tiny_scenario),
                                  "--output-dir", str(out), "--seed", "1", "--quiet", *extra])
        assert res.exit_code == 0, res.output
        paths[strategy] = out / "tiny" / strategy / "seed1"
    return out, paths


def test_run_writes_every_result_file(runs):
    _, paths = runs
    run_dir = paths["finetune"]
    for name in ("config.json", "run.json", "matrix.csv", "metrics.csv", "cost.json", "summary.md",
                 "matrix_map_at_10.csv", "matrix_recall_at_1.csv", "matrix_recall_at_5.csv"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.rglob("*.tmp"))
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "complete" and info["increments_done"] == 2
    assert [t["increment"] for t in info["tasks"]] == [1, 1, 2, 2]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["epochs"] == 1 and config["seed"] == 1 and config["strategy"] == "finetune"


def test_matrix_shape_and_values(runs):
    _, paths = runs
    run = load_run(paths["finetune"])
    assert run.matrix.shape == (2, 4)
    assert np.isnan(run.matrix[0, 2:]).all() and np.isfinite(run.matrix[0, :2]).all()
    assert np.isfinite(run.matrix[1]).all()
    assert ((run.matrix[np.isfinite(run.matrix)] >= 0) & (run.matrix[np.isfinite(run.matrix)] <= 100)).all()
    lines = (paths["finetune"] / "metrics.csv").read_text().splitlines()
    assert lines[0] == "increment,task,metric,value"
    # 2 tasks after increment 1 + 4 after increment 2; map_all, map@10, recall@1, recall@5, MODC's
    # modc_map@10 and modc_recall@10, and the embedding statistics map@r, nmi, esd, rho@1, rho@2
    assert len(lines) - 1 == (2 + 4) * 11
    summary = (paths["finetune"] / "summary.md").read_text()
    d = matrix_metrics.summarise(run.matrix, run.task_increment, weights=run.num_queries)
    assert f"{d['avg_incremental']:.2f}" in summary


def test_leave_one_out_map_at_r_is_recorded_beside_map_at_r(runs):
    _, paths = runs
    rows = [line.split(",") for line in (paths["static"] / "metrics.csv").read_text().splitlines()[1:]]
    values = {(inc, task, metric): float(v) for inc, task, metric, v in rows}
    loo = {k[:2]: v for k, v in values.items() if k[2] == "map@r_loo"}
    at_r = {k[:2]: v for k, v in values.items() if k[2] == "map@r"}
    assert len(loo) == 2 + 4 and loo.keys() == at_r.keys()
    assert all(0.0 <= v <= 100.0 for v in loo.values()) and loo != at_r
    assert (paths["static"] / "matrix_map_at_r_loo.csv").is_file()
    assert "map@r_loo" not in (paths["finetune"] / "metrics.csv").read_text()     # off by default


def test_cost_accounting(runs):
    _, paths = runs
    ft = json.loads((paths["finetune"] / "cost.json").read_text())
    st = json.loads((paths["static"] / "cost.json").read_text())
    # 1 epoch x (16 // 8) steps x 16 images per increment; static trains on 1 then 2 increments' worth
    assert [c["images_backpropagated"] for c in ft["increments"]] == [32, 32]
    assert [c["optimizer_steps"] for c in ft["increments"]] == [2, 2]
    assert [c["images_backpropagated"] for c in st["increments"]] == [32, 64]
    assert ft["total"]["train_flops"] == pytest.approx(3 * ft["forward_flops_per_image"] * 64)
    assert ft["total"]["eval_images"] == (2 + 4) * (8 + 16)
    assert ft["device"] == "cpu" and ft["precision"] == "fp32"


def test_checkpoint_holds_state_to_continue(runs):
    _, paths = runs
    ckpts = sorted((paths["finetune"] / "checkpoints").glob("*.pt"))
    assert [c.name for c in ckpts] == ["increment_2.pt"]
    state = torch.load(ckpts[0], weights_only=False)
    assert state["increment"] == 1 and set(state["results"]["rows"]) == {0, 1}
    assert "model" in state["loop"] and "rng" in state and state["config"]["seed"] == 1


def test_runs_are_deterministic_for_a_seed(tiny_scenario, tmp_path):
    mats = []
    for run_id in ("a", "b"):
        res = runner.invoke(app, ["run", "--strategy", "finetune", "--scenario", str(tiny_scenario),
                                  "--output-dir", str(tmp_path), "--seed", "1", "--run-id", run_id, "--quiet"])
        assert res.exit_code == 0, res.output
        mats.append((tmp_path / "tiny" / "finetune" / run_id / "matrix.csv").read_text())
    assert mats[0] == mats[1]


def test_compare_writes_table_csv_and_plot(runs):
    out, _ = runs
    res = runner.invoke(app, ["compare", "--root", str(out)])
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if line.startswith("| tiny |")]
    assert any(r.startswith("| tiny | finetune | InfoNCE") and "| 1 | MAP@all |" in r for r in rows)
    assert any(r.startswith("| tiny | static | InfoNCE") and "| 1 | MAP@all |" in r for r in rows)
    assert "0.67x" in res.output            # finetune: 2 x 32 images; static: 32 + 64
    assert (out / "comparison.md").is_file() and (out / "comparison.csv").is_file()
    assert (out / "plots" / "forgetting_curves.png").stat().st_size > 1000 and (out / "report.html").is_file()


def test_existing_run_needs_overwrite(runs, tiny_scenario):
    out, _ = runs
    args = ["run", "--strategy", "finetune", "--scenario", str(tiny_scenario), "--output-dir", str(out),
            "--seed", "1", "--quiet"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "already holds a run; pass --overwrite" in res.output


def test_compare_keeps_option_variants_apart(tiny_scenario, tmp_path):
    for run_id, value in (("a", "true"), ("b", "false")):
        res = runner.invoke(app, ["run", "--strategy", "finetune", "--scenario", str(tiny_scenario), "--output-dir",
                                  str(tmp_path), "--seed", "1", "--run-id", run_id, "--opt", f"label_aware={value}",
                                  "--quiet"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compare", "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if line.startswith("| tiny |")]
    # the label-aware variant and the plain InfoNCE one are different objectives, on separate rows
    assert any(r.startswith("| tiny | finetune [label_aware=False] |") and "| 1 | MAP@all |" in r for r in rows)
    assert any(r.startswith("| tiny | finetune [label_aware=True] (other objective) |") and "| 1 | MAP@all |" in r
               for r in rows)


def test_completed_run_records_its_cost_ratio_against_static(runs, tiny_scenario):
    out, paths = runs
    info = json.loads((paths["finetune"] / "run.json").read_text())
    assert info["cost_ratio"] is None            # finetune ran before static existed
    res = runner.invoke(app, ["run", "--strategy", "finetune", "--scenario", str(tiny_scenario), "--output-dir",
                              str(out), "--seed", "1", "--run-id", "again"])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "tiny" / "finetune" / "again" / "run.json").read_text())
    assert info["cost_ratio"]["image_passes"] == pytest.approx(64 / 96)
    assert info["cost_ratio"]["reference"] == str(paths["static"])
    assert "training cost vs static (seed 1): 0.67x image passes" in res.output
    assert "Cost vs static" in (out / "tiny" / "finetune" / "again" / "summary.md").read_text()
