"""``summary.md`` of one run: derived metrics, the matrix, per-task results and cost."""

from __future__ import annotations

import math

import numpy as np

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


def run_summary(title: str, info: dict, results: RunResults, cost: dict) -> str:
    d = results.derived("map_all")
    done, total = results.increments_done, int(results.task_increment.max()) + 1
    parts = [f"# {title}", ""]
    parts.append(f"- scenario: `{info['scenario']}`, strategy: `{info['strategy']}`, seed: {info['seed']}")
    parts.append(f"- status: {info['status']} ({done}/{total} increments)")
    parts.append(f"- device: {cost.get('name', '?')}, precision: {cost.get('precision', '?')}")
    parts.append("")
    parts.append("## MAP@all (%)")
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
    parts.append("## Increment x task matrix, MAP@all (%)")
    parts.append("")
    A = results.matrix("map_all")
    header = ["after increment"] + results.task_names
    rows = [[str(i + 1)] + ["" if np.isnan(v) else f"{v:.2f}" for v in row] for i, row in enumerate(A)]
    parts.append(markdown_table(header, rows))
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
