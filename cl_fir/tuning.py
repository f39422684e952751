"""``cl-fir tune``: choose a strategy's hyper-parameters on the validation split.

A fair benchmark tunes every strategy with the same effort, on data and seeds that are
never reported: here every configuration of a grid is run with each **tuning seed** (100,
101, 102 by default; reported tables use other seeds, 0-4 by convention) and evaluated on
the scenario's **valid** split (``eval.split = "valid"`` is forced), and the configuration
with the highest mean of the selection metric over the tuning seeds wins. A strategy's
tuning effort is the number of configurations times the number of seeds, printed with
the result so that it can be written down beside the chosen values.

Grid axes are ``KEY=V1,V2,...``: a strategy option (``kd_weight=1,3,10``) or a setting
(``train.lr=1e-3,3e-3``). Every run is an ordinary ``cl-fir run`` process (one per cell,
as in ``cl-fir sweep``), in ``<output-dir>/<scenario>/<strategy>/<configuration>_seed<N>``;
complete runs are reused when the same tuning is run again.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from cl_fir.files import atomic_io
from cl_fir.errors import ConfigError
from cl_fir.report.statistics import mean_ci
from cl_fir.report.summary import markdown_table
from cl_fir.sweep import Cell, SweepPlan, _action

#: Seeds used for tuning unless told otherwise; reported results use other seeds.
TUNING_SEEDS = (100, 101, 102)
SELECT = ("final", "avg_incremental")


@dataclass
class Configuration:
    """One point of the grid: ``{key: value}`` (options without a dot, settings with one)."""

    values: dict[str, str]

    @property
    def label(self) -> str:
        return "_".join(f"{k.split('.')[-1]}={v}" for k, v in self.values.items()) or "defaults"

    def arguments(self) -> list[str]:
        out = []
        for key, value in self.values.items():
            out += ["--set" if "." in key else "--opt", f"{key}={value}"]
        return out


def parse_grid(items: list[str] | None) -> list[Configuration]:
    """``["kd_weight=1,3", "train.lr=1e-3,3e-3"]`` -> every combination (at least the defaults)."""
    axes: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, values = item.partition("=")
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not choices:
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,... (a strategy option or SECTION.KEY)")
        if key.strip() in axes:
            raise ConfigError(f"--grid {key.strip()} is given twice")
        axes[key.strip()] = choices
    keys = list(axes)
    return [Configuration(dict(zip(keys, combo))) for combo in itertools.product(*(axes[k] for k in keys))]


def plan_tuning(strategy: str, scenario: str, grid: list[Configuration], seeds: list[int], output_dir: Path,
                extra_args: list[str] | None = None) -> SweepPlan:
    """Cells of every configuration and tuning seed, evaluated on the valid split."""
    from cl_fir.registry import get_strategy_class
    from cl_fir.scenario import load_spec

    if not grid or not seeds:
        raise ConfigError("tune: give at least one --grid axis value and one seed")
    base = output_dir / load_spec(scenario).name / get_strategy_class(strategy).name
    cells = []
    for config in grid:
        for seed in seeds:
            run_dir = base / f"{config.label}_seed{seed}"
            cells.append(Cell(strategy, scenario, seed, run_dir, action=_action(run_dir),
                              extra_args=config.arguments()))
    return SweepPlan(cells, output_dir, [*(extra_args or []), "--set", "eval.split=valid"])


def summarise(sweep: SweepPlan, grid: list[Configuration], select: str = "final") -> list[dict]:
    """Per configuration: mean and 95% interval over its complete seeds of the final and average
    incremental metric on the valid split, sorted best first by ``select``."""
    from cl_fir.evaluation import matrix_metrics
    from cl_fir.report.run_dir import load_run

    if select not in SELECT:
        raise ConfigError(f"--select: expected one of {', '.join(SELECT)}, got {select!r}")
    rows = []
    per_config = len(sweep.cells) // len(grid)
    for k, config in enumerate(grid):
        cells = sweep.cells[k * per_config:(k + 1) * per_config]
        values: dict[str, list[float]] = {"final": [], "avg_incremental": []}
        for cell in cells:
            if cell.status != "complete":
                continue
            run = load_run(cell.run_dir)
            derived = matrix_metrics.summarise(run.matrix, run.task_increment, weights=run.num_queries)
            for key in values:
                values[key].append(derived[key])
        row = {"configuration": config.label, "values": config.values, "seeds": len(values["final"])}
        for key, vals in values.items():
            row[key], row[key + "_ci"] = mean_ci(vals)
        rows.append(row)
    rows.sort(key=lambda r: -r[select] if not math.isnan(r[select]) else math.inf)
    return rows


def tuning_markdown(strategy: str, scenario: str, rows: list[dict], seeds: list[int], select: str) -> str:
    def cell(r, key):
        if math.isnan(r[key]):
            return "n/a"
        return f"{r[key]:.2f}" + (f" ± {r[key + '_ci']:.2f}" if not math.isnan(r[key + "_ci"]) else "")

    effort = len(rows) * len(seeds)
    header = ["configuration", "seeds", "final (valid)", "avg inc. (valid)"]
    body = [[r["configuration"] + (" (chosen)" if k == 0 else ""), str(r["seeds"]), cell(r, "final"),
             cell(r, "avg_incremental")] for k, r in enumerate(rows)]
    return (f"Tuning {strategy} on {scenario}: {len(rows)} configurations x {len(seeds)} tuning seeds "
            f"({', '.join(map(str, seeds))}) = {effort} runs on the valid split; chosen by mean {select} "
            f"(± 95% interval over seeds)\n\n" + markdown_table(header, body))


def write_tuning(base: Path, strategy: str, scenario: str, rows: list[dict], seeds: list[int], select: str) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    atomic_io.write_text(base / "tuning.md", tuning_markdown(strategy, scenario, rows, seeds, select) + "\n")
    atomic_io.write_json(base / "tuning.json", {"strategy": strategy, "scenario": scenario, "seeds": seeds,
                                                "select": select, "split": "valid", "configurations": rows,
                                                "chosen": rows[0]["values"] if rows else None})
    return base / "tuning.md"


def chosen_values(path: Path) -> dict:
    """The chosen configuration recorded by :func:`write_tuning`."""
    return json.loads(Path(path).read_text())["chosen"]
