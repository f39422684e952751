"""Everything ``cl-fir compare`` writes for a set of runs, in one place (also used by sweeps)."""

from __future__ import annotations

from pathlib import Path

from cl_fir.files import atomic_io
from cl_fir.report import plots as plot_module
from cl_fir.report.compare import (budget_markdown, comparison_csv, comparison_latex, comparison_markdown, compare,
                                   prioritized_markdown, significance_markdown, task_table_csv, task_table_markdown)
from cl_fir.report.html import html_report
from cl_fir.report.run_dir import LoadedRun, now


def write_comparison(runs: list[LoadedRun], dest: Path) -> tuple[list[dict], str, list[Path]]:
    """Tables (Markdown, CSV, LaTeX; per task too), plots (PNG and SVG) and report.html under ``dest``.

    Returns the experiment rows, the Markdown shown on the terminal and the files written.
    """
    rows = compare(runs)
    markdown = comparison_markdown(rows) + "\n\n" + task_table_markdown(rows)
    for extra in (significance_markdown(rows), budget_markdown(rows)):
        if extra:
            markdown += "\n\n" + extra
    prioritized = prioritized_markdown(rows)
    if prioritized:
        markdown += "\n\n" + prioritized
    files = {
        dest / "comparison.md": markdown + "\n",
        dest / "comparison.csv": comparison_csv(rows),
        dest / "comparison_tasks.csv": task_table_csv(rows),
        dest / "comparison.tex": comparison_latex(rows),
    }
    for path, text in files.items():
        atomic_io.write_text(path, text)
    complete = [r for r in runs if r.complete]    # partial runs have shorter matrices: tables only
    plots = plot_module.write_all(compare(complete), complete, dest / "plots") if complete else {}
    report = dest / "report.html"
    atomic_io.write_text(report, html_report(rows, plots, generated=now()))
    written = list(files) + [p for ps in plots.values() for p in ps] + [report]
    return rows, markdown, written
