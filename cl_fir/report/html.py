"""``report.html``: one self-contained page (plots embedded) that compares the experiments."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from cl_fir.report.compare import (LEGEND, COLUMNS, _cell, budget_points, budget_tables, by_scenario, compared_rows,
                                   significance_table, strategy_label, task_table)
from cl_fir.report.plots import safe_name

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.55rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
tr.reference td { color: #666; } img { max-width: 100%; margin: 0.6rem 0; border: 1px solid #eee; }
p.note { color: #555; font-size: 0.85rem; } code { background: #f6f6f6; padding: 0 0.2rem; }
"""


def _table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{classes[k]}"' if classes and classes[k] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_report(rows: list[dict], plots: dict[str, list[Path]], title: str = "cl-fir comparison",
                generated: str = "") -> str:
    """The page: the comparison table per scenario, final metric per task, every plot, the runs."""
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    if generated:
        parts.append(f"<p class='note'>Generated {html.escape(generated)} by <code>cl-fir compare</code>. "
                     f"{html.escape(LEGEND)} Cost relative to the static run of the same scenario and seed.</p>")
    for scenario, everything in by_scenario(rows).items():
        mine = compared_rows(everything)
        metric = mine[0]["metric"]
        parts.append(f"<h2>{html.escape(scenario)} ({html.escape(metric)}, %)</h2>")
        header = ["strategy", "objective", "seeds"] + [label for _, label in COLUMNS]
        body = [[strategy_label(r), r["objective"], ",".join(map(str, r["seeds"]))] + [_cell(r, k) for k, _ in COLUMNS]
                for r in mine]
        parts.append(_table(header, body, ["reference" if r["strategy"] == "static" else "" for r in mine]))
        if max(len(r["seeds"]) for r in mine) > 1:
            parts.append(f"<p class='note'>Paired differences of final {html.escape(metric)} (points, 95% interval, "
                         f"paired t-test over common seeds; n.s. = no significant difference):</p>")
            parts.append(_table(*significance_table(mine)))
        parts.append(f"<p class='note'>Final {html.escape(metric)} per task (~ = within 2 points of chance; the "
                     f"last row is each task's chance level):</p>")
        parts.append(_table(*task_table(mine)))
        if len(budget_points(everything)) >= 2:
            curve, placed = budget_tables(everything)
            parts.append(f"<p class='note'>Joint training's budget curve (final {html.escape(metric)}) and every "
                         f"experiment at its training FLOPs against joint training at the same FLOPs "
                         f"(interpolated, never extrapolated):</p>")
            parts.append(_table(*curve))
            parts.append(_table(*placed))
        heat = plots.get(f"matrix_{safe_name(scenario)}")
        if heat:
            parts.append(_image(heat[0], f"{scenario} increment x task matrix"))
    parts.append("<h2>Plots</h2>")
    for name in ("forgetting_curves", "task_curves", "cost_vs_quality"):
        if name in plots:
            parts.append(_image(plots[name][0], name.replace("_", " ")))
    parts.append("<h2>Runs</h2>")
    parts.append(_table(["scenario", "strategy", "run folder"],
                        [[r["scenario"], r["label"], path] for r in rows for path in r["runs"]]))
    parts.append("</body></html>")
    return "\n".join(parts)
