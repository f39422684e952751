"""``cl-fir budget``: joint training at several budgets, the reference curve of cost claims.

Each budget is a number of doublets for the one training ``joint`` does at the last
increment, given as factors of static's last training (all ``n`` increments,
``n x epochs x samples_per_epoch`` doublets): log-spaced factors from well below to past
the plateau (1/16 to 4 by default: on ``synth-4inc`` joint still gains 6 points from 1x to 2x
and reaches its plateau near 4x). Every (budget, seed) is an ordinary ``cl-fir run``
process in ``<output-dir>/<scenario>/joint/doublets=<D>_seed<N>``, so ``cl-fir compare``
over the same folder finds the curve beside the strategies' runs and places each of them
on it (:mod:`cl_fir.report.budget_curve`).
"""

from __future__ import annotations

from pathlib import Path

from cl_fir.errors import ConfigError
from cl_fir.sweep import Cell, SweepPlan, _action


def static_final_doublets(scenario: str, overrides: dict | None = None, data_root: str | None = None) -> int:
    """Doublets of static's training at the last increment: every increment's budget at once."""
    from cl_fir.runner import resolve_config
    from cl_fir.scenario import build_scenario, load_spec

    cfg = resolve_config("joint", scenario, dict(overrides or {}), data_root=data_root)
    built = build_scenario(load_spec(scenario), cfg)
    return len(built.increments) * cfg.train.epochs * cfg.train.samples_per_epoch


def budgets(factors: list[float], base: int, batch_size: int) -> list[int]:
    """Doublets per budget: ``factor x base``, at least one batch, each budget once, increasing."""
    if not factors or any(f <= 0 for f in factors):
        raise ConfigError(f"--factors: expected positive numbers, got {factors}")
    return sorted({max(batch_size, int(round(f * base))) for f in factors})


def plan_budgets(scenario: str, doublets: list[int], seeds: list[int], output_dir: Path,
                 extra_args: list[str] | None = None) -> SweepPlan:
    """Cells of joint training at every budget and seed."""
    from cl_fir.scenario import load_spec

    if not doublets or not seeds:
        raise ConfigError("budget: give at least one budget and one seed")
    base = output_dir / load_spec(scenario).name / "joint"
    cells = [Cell("joint", scenario, seed, base / f"doublets={d}_seed{seed}", action=_action(base / f"doublets={d}_seed{seed}"),
                  extra_args=["--opt", f"doublets={d}"]) for d in doublets for seed in seeds]
    return SweepPlan(cells, output_dir, list(extra_args or []))
