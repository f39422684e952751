"""``summary.md`` of one run: derived metrics, the matrix, per-task results and cost."""

from __future__ import annotations

import math

import numpy as np

from cl_fir.evaluation.evaluator import METRIC_LABELS
from cl_fir.report.results import RunResults


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def human_count(x: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def data_section(data: dict | None) -> list[str]:
    """What was checked and skipped when the dataset was opened, and images that failed later."""
    if not data:
        return []
    skipped = ", ".join(f"{n} {k}" for k, n in data.get("skipped_rows", {}).items() if n) or "nothing"
    lines = ["", "## Data", "",
             f"- images checked ({data.get('image_check', '?')}): {data.get('checked_images', 0)}, "
             f"missing or unreadable: {data.get('bad_images', 0)}"
             + (f" ({', '.join(f'{n} {k}' for k, n in data.get('bad_by_reason', {}).items())})"
                if data.get("bad_images") else ""),
             f"- skipped rows: {skipped}"]
    if data.get("file_warnings"):
        lines.append("- label-file warnings: " + ", ".join(f"{n} {k}" for k, n in data["file_warnings"].items())
                     + " (e.g. " + "; ".join(data.get("file_warning_examples", [])[:1]) + ")")
    if data.get("other_extension"):
        lines.append(f"- found under another file extension: {data['other_extension']}")
    if data.get("load_failures"):
        lines.append(f"- images that failed to load during the run (grey stand-ins used): {data['load_failures']}")
    return lines


def _chance(info: dict, results: RunResults) -> np.ndarray | None:
    """The primary metric's chance level per task, from run.json; None when not recorded."""
    by_name = {t["name"]: t.get("chance", {}).get(results.primary) for t in info.get("tasks", [])}
    values = [by_name.get(name) for name in results.task_names]
    return None if any(v is None for v in values) else np.asarray(values, dtype=np.float64)


def run_summary(title: str, info: dict, results: RunResults, cost: dict) -> str:
    d = results.derived()
    label = METRIC_LABELS.get(results.primary, results.primary)
    done, total = results.increments_done, int(results.task_increment.max()) + 1
    parts = [f"# {title}", ""]
    parts.append(f"- scenario: `{info['scenario']}`, strategy: `{info['strategy']}`, seed: {info['seed']}")
    parts.append(f"- status: {info['status']} ({done}/{total} increments)")
    parts.append(f"- device: {cost.get('name', '?')}, precision: {cost.get('precision', '?')}")
    parts.append("")
    parts.append(f"## {label} (%)")
    parts.append("")
    parts.append(markdown_table(
        ["avg incremental", "final (unweighted)", "final (query-weighted)", "forgetting", "BWT"],
        [[fmt(d.get("avg_incremental")), fmt(d.get("final")), fmt(d.get("final_weighted")),
          fmt(d.get("forgetting")), fmt(d.get("bwt"))]],
    ))
    parts.append("")
    parts.append("Forgetting: max over earlier rows only, minus the last row, averaged over tasks of earlier "
                 "increments. BWT: last row minus the row where the task was learned.")
    parts.append("")
    datasets = [t.get("dataset") for t in info.get("tasks", [])]
    if done and len(set(datasets)) > 1:
        parts.extend(["", "## Per dataset, after the last increment", ""])
        last = results.matrix()[done - 1]
        rows = []
        for ds in dict.fromkeys(datasets):
            cols = [j for j, d in enumerate(datasets) if d == ds and not np.isnan(last[j])]
            if cols:
                w = results.num_queries[cols].astype(np.float64)
                rows.append([ds, str(len(cols)), fmt(float(last[cols].mean())),
                             fmt(float((last[cols] * w).sum() / w.sum()))])
        parts.append(markdown_table(["dataset", "tasks seen", "mean (unweighted)", "mean (query-weighted)"], rows))
    parts.extend(data_section(info.get("data")))
    parts.append("")
    parts.append(f"## Increment x task matrix, {label} (%)")
    parts.append("")
    A = results.matrix()
    header = ["after increment"] + results.task_names
    rows = [[str(i + 1)] + ["" if np.isnan(v) else f"{v:.2f}" for v in row] for i, row in enumerate(A)]
    chance = _chance(info, results)
    if chance is not None:
        rows.append(["chance"] + [fmt(c) for c in chance])
    parts.append(markdown_table(header, rows))
    if chance is not None and done:
        margin = A[done - 1] - chance
        seen = np.isfinite(margin)
        parts.append("")
        parts.append(f"Chance: the {label} of a uniformly random ranking of the same queries and candidates. After "
                     f"the last increment the seen tasks are {fmt(float(margin[seen].mean()))} points above it on "
                     f"average; {int((margin[seen] <= 2.0).sum())} of {int(seen.sum())} are within 2 points of it "
                     f"(at chance: not a result).")
    if done:
        parts.append("")
        parts.append("## Tasks after the last increment")
        parts.append("")
        last = results.rows[done - 1]
        metric_rows = []
        for a, name, n in zip(results.task_ids, results.task_names, results.num_queries):
            if a in last:
                metric_rows.append([name, str(n)] + [fmt(last[a][m]) for m in results.metrics])
        parts.append(markdown_table(["task", "queries"] + results.metrics, metric_rows))
    tot = cost.get("total", {})
    ratio = info.get("cost_ratio")
    if tot:
        parts.append("")
        parts.append("## Training cost")
        parts.append("")
        parts.append(markdown_table(
            ["image passes", "optimizer steps", "est. FLOPs", "train s", "data wait s", "eval s"],
            [[human_count(tot["image_passes"]), str(tot["optimizer_steps"]), human_count(tot["train_flops"]),
              fmt(tot["train_seconds"], 1), fmt(tot["data_wait_seconds"], 1), fmt(tot["eval_seconds"], 1)]],
        ))
        if ratio:
            parts.append("")
            parts.append(f"Cost vs static (`{ratio['reference']}`): {ratio['image_passes']:.2f}x image passes, "
                         f"{ratio['train_flops']:.2f}x FLOPs, {ratio['train_seconds']:.2f}x training time.")
    return "\n".join(parts) + "\n"
