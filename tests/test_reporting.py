"""Comparison outputs: LaTeX and per-task tables, the Pareto front against brute force, every
plot file, and the self-contained HTML report (rendered in headless Chromium when installed)."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess

import numpy as np
import pytest

from cl_fir.report.compare import comparison_latex, compare, latex_escape, task_table_csv
from cl_fir.report.outputs import write_comparison
from cl_fir.report.plots import pareto_front
from cl_fir.report.run_dir import load_run
from cl_fir.runner import execute_run, resolve_config


def _dominated_brute_force(points):
    out = set()
    for i, j in itertools.permutations(range(len(points)), 2):
        (ci, qi), (cj, qj) = points[i], points[j]
        if cj <= ci and qj >= qi and (cj, qj) != (ci, qi):
            out.add(i)
    return out


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(50):
        pts = [tuple(map(float, p)) for p in rng.integers(0, 6, size=(int(rng.integers(1, 9)), 2))]
        assert pareto_front(pts) == [i for i in range(len(pts)) if i not in _dominated_brute_force(pts)]
    assert pareto_front([(float("nan"), 1.0), (0.5, 2.0)]) == [1]


def test_latex_escaping():
    assert latex_escape("mcl_fir [kd=10%]") == r"mcl\_fir [kd=10\%]"
    assert latex_escape("a&b#c$d") == r"a\&b\#c\$d"


@pytest.fixture(scope="module")
def compared(tiny_scenario, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    runs = [execute_run(resolve_config(s, str(tiny_scenario), output_dir=str(out), seed=seed))
            for s in ("finetune", "static") for seed in (0, 1)]
    loaded = [load_run(p) for p in runs]
    rows, markdown, written = write_comparison(loaded, out)
    return out, rows, markdown, written


def test_every_output_is_written(compared):
    out, rows, markdown, written = compared
    names = {p.relative_to(out).as_posix() for p in written}
    for stem in ("forgetting_curves", "task_curves", "cost_vs_quality", "matrix_tiny"):
        assert {f"plots/{stem}.png", f"plots/{stem}.svg"} <= names
    assert {"comparison.md", "comparison.csv", "comparison.tex", "comparison_tasks.csv", "report.html"} <= names
    assert all(p.stat().st_size > 200 for p in written)
    assert "final MAP@all per task" in markdown and "±" in markdown


def test_tables_hold_per_task_finals_and_seed_spread(compared):
    _, rows, _, _ = compared
    finetune = next(r for r in rows if r["strategy"] == "finetune")
    assert finetune["seeds"] == [0, 1] and set(finetune["tasks"]) == {"skirt_length", "sleeve_length", "coat_length", "pant_length"}
    csv = task_table_csv(rows).splitlines()
    assert csv[0] == "scenario,strategy,metric,task,final,final_ci95,chance" and len(csv) == 1 + 2 * 4
    tex = comparison_latex(rows)
    assert tex.count(r"\begin{tabular}") == 1 and r"$\pm$" in tex and "finetune &" in tex


def test_chance_levels_and_paired_tests_reach_the_tables(compared):
    out, rows, markdown, _ = compared
    finetune = next(r for r in rows if r["strategy"] == "finetune")
    static = next(r for r in rows if r["strategy"] == "static")
    # chance comes from run.json: every task of the tiny scenario has 4-6 values, so chance is 15-40%
    assert all(15 < c < 40 for c in finetune["chance"].values())
    assert finetune["over_chance"] == pytest.approx(
        np.mean([finetune["tasks"][t][0] - finetune["chance"][t] for t in finetune["tasks"]]))
    # paired tests over the two common seeds: finetune against static, static against finetune
    assert finetune["vs"]["static"].pairs == 2 and static["vs"]["finetune"].pairs == 2
    assert finetune["vs"]["static"].difference == pytest.approx(-static["vs"]["finetune"].difference)
    assert "paired t-test" in markdown and "| chance |" in markdown and "tasks at chance" in markdown
    assert finetune["objective"] == "InfoNCE (tau 0.3), label-aware" and not finetune["objective_differs"]
    assert "InfoNCE (tau 0.3), label-aware" in (out / "comparison.csv").read_text()


def test_an_experiment_with_another_objective_is_flagged(compared, tiny_scenario, tmp_path):
    _, rows, _, _ = compared
    other = execute_run(resolve_config("finetune", str(tiny_scenario), strategy_options={"label_aware": "false"},
                                       output_dir=str(tmp_path)))
    runs = [load_run(p) for r in rows for p in r["runs"]] + [load_run(other)]
    flagged = [r for r in compare(runs) if r["objective_differs"]]
    assert [r["objective"] for r in flagged] == ["InfoNCE (tau 0.3), same-value negatives"]


def test_html_report_is_self_contained(compared):
    out, _, _, _ = compared
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4
    assert not re.search(r"""(src|href)=["'](?!data:)""", page), "the report must not load anything from outside"
    assert "<table>" in page and "finetune" in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_html_report_renders_in_headless_chromium(compared, tmp_path):
    out, _, _, _ = compared
    shot = tmp_path / "report.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600", f"--screenshot={shot}",
           (out / "report.html").as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    from PIL import Image

    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float64)
    assert img.size == (1200, 1600)
    assert pixels.std() > 10          # not a blank page: tables and plots were drawn


def test_compare_rows_of_one_run_still_work(compared):
    out, rows, _, _ = compared
    single = compare([load_run(rows[0]["runs"][0])])
    assert single[0]["seeds"] == [rows[0]["seeds"][0]]


def test_settings_leave_out_model_fields_of_another_arch():
    from types import SimpleNamespace

    from cl_fir.report.compare import experiment_settings

    model = {"backbone": "test_resnet", "local_backbone": "resnet34", "local_size": 112, "fusion_weight": 0.6,
             "local_backbone_kwargs": {"drop_rate": 0.1}}
    single = experiment_settings(SimpleNamespace(config={"strategy": "finetune", "model": {**model, "arch": "single"}}))
    assert single == {"strategy": "finetune", "model.backbone": "test_resnet", "model.arch": "single"}
    asenpp = experiment_settings(SimpleNamespace(config={"strategy": "finetune", "model": {**model, "arch": "asenpp"}}))
    assert asenpp["model.local_size"] == 112 and asenpp["model.local_backbone_kwargs.drop_rate"] == 0.1
