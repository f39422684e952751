"""Run directories: ``<output-dir>/<scenario>/<strategy>/<run-id>/``.

Files (each written atomically, rewritten after every increment):

``config.json``   the fully resolved configuration
``run.json``      status (running, complete, failed), progress, tasks, versions, device
``matrix.csv``    the primary metric (%) after each increment (rows) for each task (columns):
                  MAP@all, or triplet accuracy on triplet-protocol scenarios (``primary_metric`` in run.json)
``matrix_<metric>.csv``  the same for every other metric
``metrics.csv``   long format: increment, task, metric, value
``cost.json``     per-increment and total training cost
``summary.md``    derived metrics, the matrix, per-task results, cost
``checkpoints/``  the latest two increment-boundary checkpoints (one once the run is complete) and
                  ``step.pt``, the latest mid-increment one
``.cl-fir.lock``  held while a process writes the run (:mod:`cl_fir.report.run_lock`)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cl_fir.files import atomic_io, readback
from cl_fir.errors import CLFirError, ConfigError, DamagedFileError
from cl_fir.report.run_lock import LOCK_NAME, RunLock
from cl_fir.report.results import RunResults, matrix_csv, metrics_csv
from cl_fir.report.summary import run_summary

MARKERS = ("config.json", "run.json")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _contents(path: Path) -> list[Path]:
    """What the folder holds besides the run lock (nothing if it does not exist)."""
    return [p for p in path.iterdir() if p.name != LOCK_NAME] if path.is_dir() else []


def _produced_nothing(path: Path) -> bool:
    """A run that failed or was interrupted before any checkpoint: replacing it loses nothing."""
    try:
        info = readback.read_json(path / "run.json")
    except CLFirError:
        return False
    has_checkpoint = (path / "checkpoints").is_dir() and any((path / "checkpoints").glob("*.pt"))
    return info.get("status") in ("failed", "interrupted") and not info.get("increments_done") and not has_checkpoint


class RunDirectory:
    def __init__(self, path: Path, read_only: bool = False):
        self.path = Path(path)
        #: data-parallel ranks other than 0 read the run directory but never write to it
        self.read_only = read_only
        #: held by the process that writes the run (see :mod:`cl_fir.report.run_lock`)
        self.lock: RunLock | None = None

    @staticmethod
    def path_for(root: str | Path, scenario: str, strategy: str, run_id: str) -> Path:
        return Path(root) / scenario / strategy / run_id

    @classmethod
    def prepare(cls, root: str | Path, scenario: str, strategy: str, run_id: str, overwrite: bool) -> "RunDirectory":
        """The run folder, empty but for this process's run lock (:attr:`lock`), ready to write."""
        path = cls.path_for(root, scenario, strategy, run_id)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--output-dir: {path} exists and is not a folder")
        if _contents(path) and not any((path / m).exists() for m in MARKERS):
            raise ConfigError(f"{path} exists and is not a cl-fir run directory; refusing to overwrite it")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--output-dir: cannot write to {path} ({exc.strerror or exc})") from None
        lock = RunLock.acquire(path)   # before anything is replaced: the folder may be another run's
        try:
            if _contents(path):
                if not overwrite and not _produced_nothing(path):
                    raise ConfigError(f"{path} already holds a run; pass --overwrite to replace it, "
                                      f"--run-id to keep both, or `cl-fir run --resume {path}` to continue it")
                for entry in _contents(path):
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            probe = path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            lock.release()
            raise ConfigError(f"--output-dir: cannot write to {path} ({exc.strerror or exc})") from None
        except BaseException:
            lock.release()
            raise
        run_dir = cls(path)
        run_dir.lock = lock
        return run_dir

    def lock_for_resume(self) -> RunLock:
        """Take the run lock before continuing the run (refused while another process runs it)."""
        self.lock = RunLock.acquire(self.path)
        return self.lock

    def release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def remove_temporaries(self) -> None:
        """Temporary files a killed writer left behind (never a result file: those are renamed into place)."""
        if self.read_only:
            return
        for tmp in list(self.path.glob(".*.tmp")) + list(self.checkpoint_dir.glob(".*.tmp")):
            tmp.unlink(missing_ok=True)

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def write_config(self, config: dict) -> None:
        if self.read_only:
            return
        atomic_io.write_json(self.path / "config.json", config)

    def write_info(self, info: dict) -> None:
        if self.read_only:
            return
        atomic_io.write_json(self.path / "run.json", info)

    def write_results(self, info: dict, results: RunResults, cost: dict) -> None:
        if self.read_only:
            return
        atomic_io.write_text(self.path / "matrix.csv", matrix_csv(results.matrix(), results.task_names))
        for metric in results.metrics:
            if metric != results.primary:
                safe = metric.replace("@", "_at_")
                atomic_io.write_text(self.path / f"matrix_{safe}.csv",
                                     matrix_csv(results.matrix(metric), results.task_names))
        atomic_io.write_text(self.path / "metrics.csv", metrics_csv(results.long_rows()))
        atomic_io.write_json(self.path / "cost.json", cost)
        title = f"{info['scenario']} / {info['strategy']} / {self.path.name}"
        atomic_io.write_text(self.path / "summary.md", run_summary(title, info, results, cost))


@dataclass
class LoadedRun:
    """A finished (or partial) run read back from disk, for comparison."""

    path: Path
    config: dict
    info: dict
    cost: dict
    matrix: np.ndarray
    task_names: list[str]
    task_increment: np.ndarray
    num_queries: np.ndarray
    #: chance level of the primary metric per task (NaN where the run did not record one)
    chance: np.ndarray

    @property
    def scenario(self) -> str:
        return self.info["scenario"]

    @property
    def strategy(self) -> str:
        return self.info["strategy"]

    @property
    def seed(self) -> int:
        return int(self.info["seed"])

    @property
    def complete(self) -> bool:
        return self.info.get("status") == "complete"


def load_run(path: str | Path) -> LoadedRun:
    """Read a run folder back, checking every file that comparisons use: ``config.json``,
    ``run.json`` and ``cost.json`` (JSON objects with the fields used), ``matrix.csv`` and
    every ``matrix_*.csv`` (one column per task in run.json, one row per increment, numbers).
    A damaged file raises :class:`~cl_fir.errors.DamagedFileError` naming it."""
    path = Path(path)
    for name in ("config.json", "run.json", "matrix.csv", "cost.json"):
        if not (path / name).is_file():
            raise ConfigError(f"{path}: not a cl-fir run directory (missing {name})")
    config = readback.read_json(path / "config.json")
    info = readback.read_json(path / "run.json")
    cost = readback.read_json(path / "cost.json")
    _require(path / "run.json", info, {"scenario": str, "strategy": str, "seed": int, "tasks": list})
    tasks = info["tasks"]
    if not tasks or not all(isinstance(t, dict) and isinstance(t.get("name"), str)
                            and isinstance(t.get("increment"), int) and isinstance(t.get("num_queries"), int)
                            for t in tasks):
        raise DamagedFileError(path / "run.json", "tasks: expected a list of {name, increment, num_queries}")
    total = cost.get("total")
    if not isinstance(total, dict):
        raise DamagedFileError(path / "cost.json", "missing the total table")
    _require(path / "cost.json", total, {k: (int, float) for k in ("image_passes", "train_seconds", "train_flops")},
             prefix="total.")
    names = [t["name"] for t in tasks]
    increments = max(t["increment"] for t in tasks)
    matrices = {}
    for csv in [path / "matrix.csv", *sorted(path.glob("matrix_*.csv"))]:
        rows = readback.read_matrix_csv(csv, names)
        if len(rows) > increments or (info.get("status") == "complete" and len(rows) != increments):
            raise DamagedFileError(csv, f"{len(rows)} rows, expected {increments} (one per increment)")
        matrices[csv.name] = rows
    rows = matrices["matrix.csv"]
    return LoadedRun(
        path=path, config=config, info=info, cost=cost,
        matrix=np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names)),
        task_names=names,
        task_increment=np.asarray([t["increment"] - 1 for t in tasks], dtype=np.int64),  # files count from 1
        num_queries=np.asarray([t["num_queries"] for t in tasks], dtype=np.int64),
        chance=np.asarray([t.get("chance", {}).get(info.get("primary_metric", "map_all"), np.nan) for t in tasks],
                          dtype=np.float64),
    )


def _require(path: Path, table: dict, fields: dict, prefix: str = "") -> None:
    for key, kind in fields.items():
        if key not in table:
            raise DamagedFileError(path, f"missing {prefix}{key}")
        if not isinstance(table[key], kind) or isinstance(table[key], bool):
            raise DamagedFileError(path, f"{prefix}{key}: unexpected value {table[key]!r}")


def load_runs(paths: list[Path]) -> tuple[list[LoadedRun], list[tuple[Path, str]]]:
    """Every run that reads back intact, and (folder, what is wrong) for each one that does not:
    ``compare`` and ``sweep`` list those and go on with the rest."""
    runs, damaged = [], []
    for path in paths:
        try:
            runs.append(load_run(path))
        except CLFirError as exc:
            damaged.append((Path(path), str(exc)))
    return runs, damaged


def find_runs(root: str | Path) -> list[Path]:
    root = Path(root)
    return sorted(p.parent for p in root.rglob("run.json") if (p.parent / "matrix.csv").is_file())
