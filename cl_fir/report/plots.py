"""Comparison plots (matplotlib, headless), each written as PNG and SVG.

* ``forgetting_curves``: per scenario, the mean primary metric of all seen tasks and of
  the first increment's tasks after each increment; one line per experiment, ±1 std band
  over seeds.
* ``task_curves``: per scenario and experiment, every task's metric after each increment.
* ``matrix_<scenario>``: the increment x task matrix of each experiment (mean over seeds),
  as an annotated heatmap; cells within ``AT_CHANCE`` points of their task's chance level
  are hatched and marked ``~``.
* ``cost_vs_quality``: final metric against training FLOPs, per scenario, with 95% intervals
  over seeds, the Pareto front marked, and joint training's budget curve when measured.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cl_fir.files import atomic_io
from cl_fir.evaluation import matrix_metrics
from cl_fir.report.compare import AT_CHANCE
from cl_fir.report.run_dir import LoadedRun

FORMATS = ("png", "svg")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point dominates (cost as low or lower and quality as high or
    higher, better in one); cost is the first coordinate, quality the second."""
    front = []
    for i, (c, q) in enumerate(points):
        if np.isnan(c) or np.isnan(q):
            continue
        dominated = any((c2 <= c and q2 >= q and (c2 < c or q2 > q))
                        for j, (c2, q2) in enumerate(points) if j != i and not (np.isnan(c2) or np.isnan(q2)))
        if not dominated:
            front.append(i)
    return front


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, dest: Path, name: str) -> list[Path]:
    out = []
    for fmt in FORMATS:
        path = dest / f"{name}.{fmt}"
        with atomic_io.atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight")
        out.append(path)
    _pyplot().close(fig)
    return out


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _members(experiment: dict, by_path: dict[str, LoadedRun]) -> list[LoadedRun]:
    return [by_path[p] for p in experiment["runs"]]


def forgetting_curves(experiments: list[dict], by_path: dict[str, LoadedRun], dest: Path) -> list[Path]:
    plt = _pyplot()
    scenarios = sorted({e["scenario"] for e in experiments})
    fig, axes = plt.subplots(len(scenarios), 2, figsize=(11, 4 * len(scenarios)), squeeze=False)
    for row, scenario in enumerate(scenarios):
        mine = [e for e in experiments if e["scenario"] == scenario]
        metric = mine[0]["metric"]
        for exp in mine:
            members = _members(exp, by_path)
            seen = np.asarray([matrix_metrics.seen_mean_curve(r.matrix, r.task_increment) for r in members])
            first = np.asarray([r.matrix[:, r.task_increment == 0].mean(axis=1) for r in members])
            for ax, curves in ((axes[row][0], seen), (axes[row][1], first)):
                x = np.arange(1, curves.shape[1] + 1)
                mean = curves.mean(axis=0)
                line, = ax.plot(x, mean, marker="o", label=f"{exp['label']} (n={len(members)})")
                if len(members) > 1:
                    std = curves.std(axis=0, ddof=1)
                    ax.fill_between(x, mean - std, mean + std, alpha=0.2, color=line.get_color())
        axes[row][0].set_title(f"{scenario}: {metric} of all seen tasks")
        axes[row][1].set_title(f"{scenario}: {metric} of increment-1 tasks")
        for ax in axes[row]:
            ax.set_xlabel("after increment")
            ax.set_ylabel(f"{metric} (%)")
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, dest, "forgetting_curves")


def _mean_matrix(members: list[LoadedRun]) -> np.ndarray:
    return np.mean(np.stack([r.matrix for r in members]), axis=0)


def task_curves(experiments: list[dict], by_path: dict[str, LoadedRun], dest: Path) -> list[Path]:
    plt = _pyplot()
    n = len(experiments)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for k, exp in enumerate(experiments):
        ax = axes[k // cols][k % cols]
        members = _members(exp, by_path)
        A = _mean_matrix(members)
        x = np.arange(1, A.shape[0] + 1)
        for j, name in enumerate(members[0].task_names):
            ax.plot(x, A[:, j], marker=".", label=name)
        ax.set_title(f"{exp['scenario']}: {exp['label']}", fontsize=9)
        ax.set_xlabel("after increment")
        ax.set_ylabel(f"{exp['metric']} (%)")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if len(members[0].task_names) <= 10:
            ax.legend(fontsize=7)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout()
    return _save(fig, dest, "task_curves")


def matrix_heatmaps(experiments: list[dict], by_path: dict[str, LoadedRun], dest: Path) -> list[Path]:
    plt = _pyplot()
    out = []
    for scenario in sorted({e["scenario"] for e in experiments}):
        mine = [e for e in experiments if e["scenario"] == scenario]
        first = _members(mine[0], by_path)[0]
        n_inc, n_task = first.matrix.shape
        fig, axes = plt.subplots(len(mine), 1, figsize=(max(6, 0.9 * n_task + 2), (0.45 * n_inc + 1.4) * len(mine)),
                                 squeeze=False)
        for ax, exp in zip(axes[:, 0], mine):
            members = _members(exp, by_path)
            A = _mean_matrix(members)
            chance = np.nanmean(np.stack([r.chance for r in members]), axis=0) \
                if np.isfinite(np.stack([r.chance for r in members])).any() else np.full(A.shape[1], np.nan)
            im = ax.imshow(np.ma.masked_invalid(A), cmap="viridis", vmin=0, vmax=max(1.0, np.nanmax(A)), aspect="auto")
            for i in range(A.shape[0]):
                for j in range(A.shape[1]):
                    if np.isfinite(A[i, j]):
                        at_chance = A[i, j] - chance[j] <= AT_CHANCE   # False where chance is unknown (NaN)
                        ax.text(j, i, f"{A[i, j]:.1f}" + ("~" if at_chance else ""), ha="center", va="center",
                                fontsize=7, color="white" if A[i, j] < 0.6 * np.nanmax(A) else "black")
                        if at_chance:
                            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                                       edgecolor="lightgrey", linewidth=0))
            ax.set_xticks(range(A.shape[1]), first.task_names, rotation=40, ha="right", fontsize=7)
            ax.set_yticks(range(A.shape[0]), [str(i + 1) for i in range(A.shape[0])])
            ax.set_ylabel("after increment")
            ax.set_title(f"{scenario}: {exp['label']} ({exp['metric']}, %; hatched ~: within {AT_CHANCE:g} points "
                         f"of chance)", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.03)
        fig.tight_layout()
        out += _save(fig, dest, f"matrix_{safe_name(scenario)}")
    return out


def cost_vs_quality(experiments: list[dict], dest: Path) -> list[Path]:
    """Per scenario: final metric against training FLOPs (log scale). Every experiment is a
    point with its 95% intervals over seeds on both axes (Pareto front marked); joint
    training's budget curve, when measured, is a line through its budgets with its band."""
    plt = _pyplot()
    scenarios = sorted({e["scenario"] for e in experiments})
    fig, axes = plt.subplots(1, len(scenarios), figsize=(9.5 * len(scenarios), 5), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        everything = [e for e in experiments if e["scenario"] == scenario]
        curve = sorted((e for e in everything if e.get("budget_reference")), key=lambda e: e["train_flops"])
        mine = [e for e in everything if not e.get("budget_reference")]
        if len(curve) >= 2:
            x = [e["train_flops"] for e in curve]
            y = np.asarray([e["final"] for e in curve])
            band = np.nan_to_num(np.asarray([e.get("final_ci", np.nan) for e in curve]))
            ax.plot(x, y, "-", color="black", marker=".", label="joint training (budget curve)", zorder=2)
            ax.fill_between(x, y - band, y + band, color="grey", alpha=0.25, zorder=1)
        points = [(e["train_flops"], e["final"]) for e in mine]
        front = set(pareto_front(points))
        for k, (exp, (c, q)) in enumerate(zip(mine, points)):
            if np.isnan(c) or np.isnan(q):
                continue
            xerr = exp.get("train_flops_ci", np.nan)
            yerr = exp.get("final_ci", np.nan)
            ax.errorbar([c], [q], xerr=None if np.isnan(xerr) else [[xerr], [xerr]],
                        yerr=None if np.isnan(yerr) else [[yerr], [yerr]], fmt="*" if k in front else "o",
                        markersize=9 if k in front else 6, capsize=3, zorder=3, label=exp["label"])
        ordered = sorted((points[k] for k in front), key=lambda p: p[0])
        if len(ordered) > 1:
            ax.plot([p[0] for p in ordered], [p[1] for p in ordered], "--", color="grey", linewidth=0.8,
                    label="Pareto front of the experiments")
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs (estimated)")
        ax.set_ylabel(f"final {everything[0]['metric']} (%)")
        ax.set_title(f"{scenario}: quality against cost (bars: 95% intervals over seeds)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # names beside, not over, the points
    fig.tight_layout()
    return _save(fig, dest, "cost_vs_quality")


def write_all(experiments: list[dict], runs: list[LoadedRun], dest: Path) -> dict[str, list[Path]]:
    """Every plot for these experiments; returns name -> files (PNG first)."""
    by_path = {str(r.path): r for r in runs}
    dest.mkdir(parents=True, exist_ok=True)
    # joint runs train only at the last increment: their earlier rows are not results
    compared = [e for e in experiments if not e.get("budget_reference")]
    plots = {"forgetting_curves": forgetting_curves(compared, by_path, dest),
             "task_curves": task_curves(compared, by_path, dest),
             "cost_vs_quality": cost_vs_quality(experiments, dest)}
    heat = matrix_heatmaps(compared, by_path, dest)
    for png, svg in zip(heat[0::2], heat[1::2]):
        plots[png.stem] = [png, svg]
    return plots
