"""``cl-fir sweep``: every (strategy, scenario, seed) cell as its own ``cl-fir run`` process.

One process per cell, so a crash or a bad option in one cell never stops the others; on
Linux each is forked from a server that has imported torch and the other large
libraries once (:mod:`cl_fir.runtime.fork_server`), so a cell starts without their import time.
Before a cell starts its folder is looked at: a complete run is skipped, a run with a
checkpoint is resumed (``--resume``), anything else starts afresh. Logs go to
``<output-dir>/sweep_logs/``; the sweep ends with ``compare`` over its cells, skipping
(and listing) any whose files read back damaged. A cell whose folder another process is
running (the run lock) fails with one line saying so.

Two things are done once for all cells: each scenario's data is prepared (a generated
dataset rendered, every image checked) before the first cell starts, so cells running at
the same time do not each generate it; and on this machine's CPU the cores are shared
out, ``cores // jobs`` torch threads per cell (``OMP_NUM_THREADS``, unless already set):
more threads than cores make every thread wait at each parallel step (measured here: a
2-thread run next to 2 others trained 10x slower than with 1 thread).

Backends: ``local`` (``--jobs`` cell processes at a time on this machine) and ``ray`` (each
cell is a Ray task that runs the same command on a worker; install the extra
``cl-fir[ray]`` and point ``--ray-address`` or ``RAY_ADDRESS`` at a cluster whose workers
have cl-fir installed and see the same output folder, e.g. a shared file system).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from cl_fir.files import readback
from cl_fir.errors import CLFirError, ConfigError
from cl_fir.runtime.fork_server import WarmStarter, run_subprocess

BACKENDS = ("local", "ray")
#: a cell's command line in a fresh interpreter (the Ray backend, or where there is no fork)
COLD_COMMAND = [sys.executable, "-m", "cl_fir"]


def warm_starter() -> WarmStarter:
    """The fork server for local cells: torch, torchvision, timm, avalanche-lib and the
    runner imported once; each cell runs the command line as ``cl-fir`` would."""
    return WarmStarter(preload=["cl_fir.runtime.warm_imports", "cl_fir.runner"], entry="cl_fir.cli:run_in_fork",
                       cold=COLD_COMMAND)


@dataclass
class Cell:
    strategy: str           # as given (a name or path.py:Class)
    scenario: str           # as given (a name or a .toml path)
    seed: int
    run_dir: Path
    action: str = ""        # skip | resume | run
    status: str = "pending"  # pending | running | complete | failed
    seconds: float = 0.0
    log: Path | None = None
    message: str = ""
    #: settings of this cell alone (``--set``/``--opt`` arguments), after the sweep's own
    extra_args: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.run_dir.parent.name} on {self.run_dir.parent.parent.name}, seed {self.seed}"


@dataclass
class SweepPlan:
    cells: list[Cell]
    output_dir: Path
    extra_args: list[str] = field(default_factory=list)


def plan(strategies: list[str], scenarios: list[str], seeds: list[int], output_dir: Path,
         extra_args: list[str] | None = None) -> SweepPlan:
    """Resolve names (so that run folders are known) and decide what each cell needs."""
    from cl_fir.registry import get_strategy_class
    from cl_fir.scenario import load_spec

    if not strategies or not scenarios or not seeds:
        raise ConfigError("sweep: give at least one of each: --strategies, --scenarios, --seeds")
    cells = []
    for scenario in scenarios:
        scenario_name = load_spec(scenario).name
        for strategy in strategies:
            strategy_name = get_strategy_class(strategy).name
            for seed in seeds:
                run_dir = output_dir / scenario_name / strategy_name / f"seed{seed}"
                cells.append(Cell(strategy, scenario, seed, run_dir, action=_action(run_dir)))
    return SweepPlan(cells, output_dir, list(extra_args or []))


def _action(run_dir: Path) -> str:
    """skip (complete), resume (has a checkpoint) or run. A folder whose run.json is damaged
    but holds checkpoints is resumed, not overwritten: the resume says what is damaged."""
    has_checkpoint = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("*.pt"))
    try:
        info = readback.read_json(run_dir / "run.json")
    except CLFirError:
        return "resume" if has_checkpoint else "run"
    if info.get("status") == "complete":
        return "skip"
    return "resume" if has_checkpoint else "run"


def command(cell: Cell, sweep: SweepPlan) -> list[str]:
    """The cell's ``cl-fir`` arguments."""
    base = ["run", "--quiet"]
    if cell.action == "resume":
        return base + ["--resume", str(cell.run_dir)]
    return base + ["--strategy", cell.strategy, "--scenario", cell.scenario, "--seed", str(cell.seed),
                   "--output-dir", str(sweep.output_dir), "--run-id", cell.run_dir.name, "--overwrite",
                   *sweep.extra_args, *cell.extra_args]


def threads_per_cell(jobs: int) -> int:
    """Torch threads for each of ``jobs`` cells running at once on this machine's cores."""
    return max(1, (os.cpu_count() or 1) // jobs)


def prepare_scenarios(sweep: SweepPlan, data_root: str | None = None) -> None:
    """Build each scenario of the cells still to run once, in this process: a generated
    dataset is rendered into the cache and every image check is cached, so the cells only
    read them."""
    from cl_fir.runner import resolve_config
    from cl_fir.scenario import build_scenario, load_spec

    for scenario in dict.fromkeys(c.scenario for c in sweep.cells if c.action != "skip"):
        spec = load_spec(scenario)
        if spec.dataset.get("reader") not in ("synthfashion", "synthfashion-flat", "synth-cir"):
            continue   # real data is read in place; its image checks are cached by the first cell
        build_scenario(spec, resolve_config("finetune", scenario, data_root=data_root))


def execute(sweep: SweepPlan, jobs: int = 1, backend: str = "local", ray_address: str | None = None,
            on_update=None) -> list[Cell]:
    """Run every cell that is not complete; ``on_update(cell, cells)`` after each cell changes."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if jobs < 1:
        raise ConfigError(f"--jobs: expected an integer >= 1, got {jobs}")
    logs = sweep.output_dir / "sweep_logs"
    logs.mkdir(parents=True, exist_ok=True)
    todo = [c for c in sweep.cells if c.action != "skip"]
    for c in sweep.cells:
        if c.action == "skip":
            c.status = "complete"
            c.message = "already complete"
        c.log = logs / f"{c.run_dir.parent.parent.name}__{c.run_dir.parent.name}__{c.run_dir.name}.log"
    runner = _ray_runner(ray_address) if backend == "ray" else None
    threads = threads_per_cell(jobs)

    def one(cell: Cell) -> Cell:
        cell.status = "running"
        if on_update:
            on_update(cell, sweep.cells)
        start = time.perf_counter()
        args = command(cell, sweep)
        rc = runner(args, cell.log) if runner else starter.run(args, cell.log, threads)
        cell.seconds = time.perf_counter() - start
        cell.status = "complete" if rc == 0 else "failed"
        if rc != 0:
            cell.message = _last_error(cell.log) or f"exit code {rc}"
        return cell

    with warm_starter() if runner is None and todo else contextlib.nullcontext() as starter, \
            ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in as_completed([pool.submit(one, c) for c in todo]):
            cell = future.result()
            if on_update:
                on_update(cell, sweep.cells)
    return sweep.cells


def _last_error(log: Path | None) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except (OSError, AttributeError):
        return ""
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or [""])[-1][:300]


def _ray_runner(address: str | None):
    """A function that runs one cell's command as a Ray task and returns its exit code."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs the ray package: pip install 'cl-fir[ray]'") from None
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                 **({} if address else {"num_cpus": os.cpu_count()}))

    @ray.remote(num_cpus=1)
    def run_cell(args: list[str], log: str) -> int:
        return run_subprocess(COLD_COMMAND + args, Path(log))

    def run(args: list[str], log: Path) -> int:
        return ray.get(run_cell.remote(args, str(log)))

    return run


def summary_rows(cells: list[Cell]) -> list[list[str]]:
    return [[c.run_dir.parent.parent.name, c.run_dir.parent.name, str(c.seed), c.action, c.status,
             f"{c.seconds:.0f}" if c.seconds else "", c.message] for c in cells]
