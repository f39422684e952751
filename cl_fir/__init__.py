"""cl-fir: a continual-learning benchmark harness for fine-grained fashion image retrieval.

Used as a library, :func:`run` trains a strategy on a scenario as ``cl-fir run`` does, without
touching the caller's signal handlers.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def run(strategy: str, scenario: str = "synth-4inc", *, seed: int = 0, output_dir: str | Path = "results",
        options: dict | None = None, overrides: dict | None = None, overwrite: bool = False,
        stop_after: int | None = None, progress: bool = False, **settings) -> Path:
    """Train ``strategy`` (a registered name, or ``"file.py:Class"``) on ``scenario`` (a shipped
    name or a scenario file) and return the run directory (metrics, cost, checkpoints).

    ``options`` are the strategy's options (``--opt``), ``overrides`` ``section.key`` settings
    (``--set``, e.g. ``{"train.epochs": 2}``) and ``settings`` other top-level run settings
    (``device``, ``precision``, ``run_id``, ``data_root``, ...). ``stop_after`` stops after that many
    increments (continue with :func:`cl_fir.runner.resume_run`). ``progress`` prints progress
    lines. SIGINT and SIGTERM keep the caller's handlers: a KeyboardInterrupt ends the run
    (marked interrupted in run.json) at once instead of after a checkpoint.
    """
    from cl_fir.engine.progress import Reporter
    from cl_fir.runner import execute_run, resolve_config

    cfg = resolve_config(strategy, scenario, dict(overrides or {}), dict(options or {}), seed=seed,
                         output_dir=str(output_dir), **settings)
    return execute_run(cfg, overwrite=overwrite, reporter=Reporter(enabled=progress), stop_after=stop_after)


__all__ = ["run"]
