"""Compare runs: one row per (scenario, strategy), seeds aggregated as mean ± std.

Every number is derived from the runs' matrices (``matrix_metrics``) and cost files.
The cost ratio of a run is its training cost divided by that of the ``static`` run of
the same scenario and seed, in image passes (and FLOPs and training seconds).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from cl_fir import atomic_io
from cl_fir.evaluation import matrix_metrics
from cl_fir.evaluation.evaluator import METRIC_LABELS
from cl_fir.report.cost_ratio import REFERENCE_STRATEGY, cost_ratios
from cl_fir.report.run_dir import LoadedRun
from cl_fir.report.summary import human_count, markdown_table

COLUMNS = [
    ("avg_incremental", "avg inc."),
    ("final", "final"),
    ("final_weighted", "final (q-w)"),
    ("forgetting", "forgetting"),
    ("bwt", "BWT"),
    ("parameters", "params"),
    ("stored_images", "stored imgs"),
    ("image_passes", "train image passes"),
    ("train_seconds", "train s"),
    ("cost_ratio", "cost vs static"),
    ("cost_ratio_flops", "FLOPs vs static"),
]


def run_metrics(run: LoadedRun, reference: LoadedRun | None) -> dict[str, float]:
    out = matrix_metrics.summarise(run.matrix, run.task_increment, weights=run.num_queries)
    total = run.cost["total"]
    out["image_passes"] = float(total["image_passes"])
    out["train_seconds"] = float(total["train_seconds"])
    out["train_flops"] = float(total["train_flops"])
    out["parameters"] = float(run.cost.get("model_parameters", math.nan))
    out["stored_images"] = float(total.get("stored_images", 0))
    ratios = cost_ratios(total, reference.cost["total"]) if reference is not None else {}
    out["cost_ratio"] = ratios.get("image_passes", math.nan)
    out["cost_ratio_flops"] = ratios.get("train_flops", math.nan)
    out["cost_ratio_seconds"] = ratios.get("train_seconds", math.nan)
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


#: Settings that identify a run (or where it lives) rather than define the experiment.
RUN_IDENTITY = ("seed", "run_id", "output_dir", "data_root", "cache_dir", "scenario", "strict", "deterministic")
#: Flattened settings that change how a run is kept, not what it computes.
BOOKKEEPING = ("train.checkpoint_every",)


def _flatten(cfg: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and value and key != "backbone_kwargs":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def experiment_settings(run: LoadedRun) -> dict[str, object]:
    """The run's configuration without seed and run identity: runs that share it are seeds of one experiment."""
    flat = _flatten({k: v for k, v in run.config.items() if k not in RUN_IDENTITY})
    return {k: v for k, v in flat.items() if k not in BOOKKEEPING}


def _key(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def _base_key(settings: dict) -> str:
    """Settings that a static reference must share (everything but the strategy and its options)."""
    return _key({k: v for k, v in settings.items() if k != "strategy" and not k.startswith("strategy_options")})


def compare(runs: list[LoadedRun]) -> list[dict]:
    """One row per experiment (scenario, strategy and settings; seeds aggregated), sorted by
    scenario and strategy (static last). Variants of one strategy are labelled by the
    settings in which they differ."""
    settings = {r.path: experiment_settings(r) for r in runs}
    refs: dict[tuple, LoadedRun] = {}
    for r in runs:
        if r.strategy == REFERENCE_STRATEGY:
            refs.setdefault((r.scenario, r.seed, _base_key(settings[r.path])), r)
            refs.setdefault((r.scenario, r.seed, None), r)
    groups: dict[tuple[str, str, str], list[LoadedRun]] = defaultdict(list)
    for r in runs:
        groups[(r.scenario, r.strategy, _key(settings[r.path]))].append(r)
    variants: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for (scenario, strategy, _), members in groups.items():
        variants[(scenario, strategy)].append(settings[members[0].path])
    rows = []
    for (scenario, strategy, _), members in groups.items():
        mine = settings[members[0].path]
        others = variants[(scenario, strategy)]
        differing = sorted(k for k in mine if any(o.get(k) != mine[k] for o in others))
        label = strategy + (" [" + ", ".join(f"{k.split('.')[-1]}={mine[k]}" for k in differing) + "]"
                            if differing else "")
        per_run = [run_metrics(r, refs.get((r.scenario, r.seed, _base_key(settings[r.path])))
                               or refs.get((r.scenario, r.seed, None))) for r in members]
        row = {"scenario": scenario, "strategy": strategy, "label": label,
               "metric": METRIC_LABELS.get(members[0].info.get("primary_metric", "map_all"), "?"),
               "seeds": sorted(r.seed for r in members), "runs": [str(r.path) for r in members]}
        for key in per_run[0]:
            row[key], row[key + "_std"] = _mean_std([m[key] for m in per_run])
        rows.append(row)
    rows.sort(key=lambda r: (r["scenario"], r["strategy"] == REFERENCE_STRATEGY, r["label"]))
    return rows


def _cell(row: dict, key: str) -> str:
    mean, std = row[key], row[key + "_std"]
    if math.isnan(mean):
        return "n/a"
    if key in ("image_passes", "parameters", "stored_images"):
        return human_count(mean)
    if key.startswith("cost_ratio"):
        return f"{mean:.2f}x"
    if key == "train_seconds":
        return f"{mean:.1f}"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if len(row["seeds"]) > 1 else "")


def comparison_markdown(rows: list[dict]) -> str:
    header = ["scenario", "strategy", "seeds", "metric"] + [label for _, label in COLUMNS]
    body = [[r["scenario"], r["label"], ",".join(map(str, r["seeds"])), r["metric"]]
            + [_cell(r, k) for k, _ in COLUMNS]
            for r in rows]
    return markdown_table(header, body)


def comparison_csv(rows: list[dict]) -> str:
    keys = [k for k, _ in COLUMNS] + ["cost_ratio_seconds", "train_flops"]
    lines = ["scenario,strategy,seeds,metric," + ",".join(f"{k},{k}_std" for k in keys)]
    for r in rows:
        vals = ",".join(f"{r[k]:.6g},{r[k + '_std']:.6g}" for k in keys)
        lines.append(f"{r['scenario']},\"{r['label']}\",{' '.join(map(str, r['seeds']))},{r['metric']},{vals}")
    return "\n".join(lines) + "\n"


def plot_forgetting_curves(runs: list[LoadedRun], path: Path) -> None:
    """Per scenario: mean primary metric of seen tasks, and of the first increment's tasks, vs increment;
    one line per experiment (as in :func:`compare`), with a ±1 std band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = sorted({r.scenario for r in runs})
    fig, axes = plt.subplots(len(scenarios), 2, figsize=(11, 4 * len(scenarios)), squeeze=False)
    by_path = {str(r.path): r for r in runs}
    experiments = compare(runs)
    for row, scenario in enumerate(scenarios):
        metric = next(e["metric"] for e in experiments if e["scenario"] == scenario)
        for exp in (e for e in experiments if e["scenario"] == scenario):
            members = [by_path[p] for p in exp["runs"]]
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
            ax.legend()
    fig.tight_layout()
    with atomic_io.atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
