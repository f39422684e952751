"""Learning curves: each task trained alone, its metric against optimizer steps.

A continual benchmark can only compare strategies on tasks that its per-increment budget
lets a model learn. ``cl-fir curves`` checks that: for every task of a scenario it trains
a fresh model (the scenario's starting weights, ``finetune``, the scenario's settings) on
that task alone for up to ``max(steps)`` steps, at a constant learning rate, and evaluates
it at each requested step count (step 0 is the starting point) on the **valid** split by
default: the curves are a design check of the benchmark (its budget, its learning rate),
so, like tuning, they stay off the test split unless asked for. The budget of one increment, ``epochs x samples_per_epoch / batch_size``
steps shared by the increment's tasks, is marked, so one reads off whether each task
reaches its plateau within it.

Results: ``curves.csv`` (task, seed, steps, metric, chance), ``curves.md`` (mean over seeds
per task and step, and the budget) and ``curves.png``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

import numpy as np

from cl_fir.files import atomic_io
from cl_fir.report.summary import markdown_table


@dataclasses.dataclass
class CurvePoint:
    task: str
    seed: int
    steps: int
    value: float
    chance: float


def increment_budget(cfg) -> int:
    """Optimizer steps of one increment (shared by its tasks) under ``cfg``."""
    t = cfg.train
    return t.epochs * (t.samples_per_epoch // t.batch_size)


def task_curve(scenario: str, task: str, steps: list[int], seed: int, overrides: dict | None = None,
               log: Callable[[str], None] = lambda _m: None, split: str = "valid") -> list[CurvePoint]:
    """One task alone: the primary metric on ``split`` after each of ``steps`` optimizer steps."""
    from cl_fir.evaluation.evaluator import chance_levels, evaluate_tasks, metric_names
    from cl_fir.runner import build_loop, resolve_config
    from cl_fir.scenario import load_spec

    spec = load_spec(scenario)
    most = max(steps)
    cfg = resolve_config("finetune", scenario, dict(overrides or {}), seed=seed)
    batch = cfg.train.batch_size
    cfg.train.epochs = 1
    cfg.train.samples_per_epoch = most * batch
    cfg.train.lr_step = most + 1            # constant learning rate over the curve
    cfg.eval.embedding_stats = cfg.eval.modc_metrics = False
    cfg.eval.split = split
    cfg.train.checkpoint_every = 0
    path = _single_task_scenario(spec, task)
    cfg.scenario = str(path)
    loop = build_loop(cfg)
    scenario_obj = loop.scenario
    attribute = scenario_obj.meta.index(task)
    eval_task = scenario_obj.eval_tasks[attribute]
    primary = metric_names(cfg.eval, scenario_obj.protocol)[0]
    chance = chance_levels(eval_task, cfg.eval)[primary]
    points: list[CurvePoint] = []

    def probe() -> None:
        results, _ = evaluate_tasks(loop.model, [eval_task], loop.setup, cfg.eval, loop.num_workers)
        value = results[attribute][primary]
        points.append(CurvePoint(task, seed, loop.iteration, value, chance))
        log(f"  {task} seed {seed}: {loop.iteration} steps -> {value:.2f} (chance {chance:.2f})")

    strategy = loop.strategy
    original = strategy.after_training_iteration

    def after_training_iteration(ctx) -> None:
        original(ctx)
        if loop.iteration in steps:
            probe()

    strategy.after_training_iteration = after_training_iteration
    if 0 in steps:
        probe()
    loop.run(0, 1)
    path.unlink(missing_ok=True)
    return points


def _single_task_scenario(spec, task: str) -> Path:
    """A scenario file that extends ``spec`` with one increment holding ``task`` alone."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix=f"curve-{task}-", suffix=".toml")
    import os

    os.close(fd)
    path = Path(name)
    increments = {k: v for k, v in spec.increments.items() if k in ("label_fraction", "label_seed")}
    extra = "".join(f"{k} = {v!r}\n" for k, v in increments.items())
    path.write_text(f'extends = "{spec.path}"\nname = "{spec.name}"\n[increments]\nattributes = [["{task}"]]\n'
                    + extra.replace("'", '"'))
    return path


def curves_table(points: list[CurvePoint], budget: int) -> str:
    """Mean metric over seeds per task (rows) and step count (columns); chance and budget noted."""
    tasks = list(dict.fromkeys(p.task for p in points))
    steps = sorted({p.steps for p in points})
    header = ["task", "chance"] + [f"{s} steps" + (" (budget)" if s == budget else "") for s in steps]
    body = []
    for task in tasks:
        mine = [p for p in points if p.task == task]
        cells = []
        for s in steps:
            values = [p.value for p in mine if p.steps == s]
            cells.append(f"{np.mean(values):.2f}" + (f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else "")
                         if values else "")
        body.append([task, f"{mine[0].chance:.2f}"] + cells)
    return markdown_table(header, body)


def write_curves(points: list[CurvePoint], budget: int, dest: Path, metric: str, split: str = "valid") -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    csv = "task,seed,steps,value,chance\n" + "".join(
        f"{p.task},{p.seed},{p.steps},{p.value:.4f},{p.chance:.4f}\n" for p in points)
    atomic_io.write_text(dest / "curves.csv", csv)
    atomic_io.write_text(dest / "curves.md", f"{metric} (%) on the {split} split of each task trained alone, mean ± std "
                         f"over seeds; one increment's budget: {budget} steps\n\n" + curves_table(points, budget) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for task in dict.fromkeys(p.task for p in points):
        mine = [p for p in points if p.task == task]
        steps = sorted({p.steps for p in mine})
        mean = [np.mean([p.value for p in mine if p.steps == s]) for s in steps]
        x = [max(s, 0.5) for s in steps]      # step 0 drawn at 0.5 on the log axis
        line, = ax.plot(x, mean, marker="o", label=task)
        ax.axhline(mine[0].chance, color=line.get_color(), linestyle=":", linewidth=0.8)
    ax.axvline(budget, color="grey", linestyle="--", label="one increment's budget")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("optimizer steps (step 0 at the left edge)")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title("each task trained alone (dotted: its chance level)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths = []
    for fmt in ("png", "svg"):
        with atomic_io.atomic_path(dest / f"curves.{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=110)
        paths.append(dest / f"curves.{fmt}")
    plt.close(fig)
    return [dest / "curves.csv", dest / "curves.md", *paths]


def plateau_report(points: list[CurvePoint], budget: int) -> dict[str, dict[str, float]]:
    """Per task: mean metric at the budget, at the largest step count, and at step 0, and the
    margin over chance at the budget (NaN where a step count was not measured)."""
    out = {}
    most = max(p.steps for p in points)
    for task in dict.fromkeys(p.task for p in points):
        mine = [p for p in points if p.task == task]

        def at(s: int) -> float:
            values = [p.value for p in mine if p.steps == s]
            return float(np.mean(values)) if values else math.nan

        out[task] = {"start": at(0), "budget": at(budget), "longest": at(most), "chance": mine[0].chance,
                     "over_chance_at_budget": at(budget) - mine[0].chance}
    return out
