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
``checkpoints/``  the latest increment-boundary checkpoint
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cl_fir import atomic_io
from cl_fir.errors import ConfigError
from cl_fir.report.results import RunResults, matrix_csv, metrics_csv
from cl_fir.report.summary import run_summary

MARKERS = ("config.json", "run.json")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    import timm
    import torch
    import torchvision

    import cl_fir

    try:
        avalanche = importlib.metadata.version("avalanche-lib")
    except importlib.metadata.PackageNotFoundError:
        avalanche = None
    return {"cl_fir": cl_fir.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__, "avalanche": avalanche,
            "numpy": np.__version__}


def _produced_nothing(path: Path) -> bool:
    """A run that failed or was interrupted before any checkpoint: replacing it loses nothing."""
    try:
        info = json.loads((path / "run.json").read_text())
    except (OSError, ValueError):
        return False
    has_checkpoint = (path / "checkpoints").is_dir() and any((path / "checkpoints").glob("*.pt"))
    return info.get("status") in ("failed", "interrupted") and not info.get("increments_done") and not has_checkpoint


class RunDirectory:
    def __init__(self, path: Path, read_only: bool = False):
        self.path = Path(path)
        #: data-parallel ranks other than 0 read the run directory but never write to it
        self.read_only = read_only

    @staticmethod
    def path_for(root: str | Path, scenario: str, strategy: str, run_id: str) -> Path:
        return Path(root) / scenario / strategy / run_id

    @classmethod
    def prepare(cls, root: str | Path, scenario: str, strategy: str, run_id: str, overwrite: bool) -> "RunDirectory":
        path = cls.path_for(root, scenario, strategy, run_id)
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"--output-dir: {path} exists and is not a folder")
            if any(path.iterdir()):
                if not any((path / m).exists() for m in MARKERS):
                    raise ConfigError(f"{path} exists and is not a cl-fir run directory; refusing to overwrite it")
                if not overwrite and not _produced_nothing(path):
                    raise ConfigError(f"{path} already holds a run; pass --overwrite to replace it, "
                                      f"--run-id to keep both, or `cl-fir run --resume {path}` to continue it")
                shutil.rmtree(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"--output-dir: cannot write to {path} ({exc.strerror or exc})") from None
        return cls(path)

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
    path = Path(path)
    for name in ("config.json", "run.json", "matrix.csv", "cost.json"):
        if not (path / name).is_file():
            raise ConfigError(f"{path}: not a cl-fir run directory (missing {name})")
    try:
        config = json.loads((path / "config.json").read_text())
        info = json.loads((path / "run.json").read_text())
        cost = json.loads((path / "cost.json").read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: unreadable JSON ({exc})") from None
    lines = (path / "matrix.csv").read_text().splitlines()
    names = lines[0].split(",")[1:]
    rows = [[float(v) if v else np.nan for v in ln.split(",")[1:]] for ln in lines[1:]]
    tasks = info["tasks"]
    if [t["name"] for t in tasks] != names:
        raise ConfigError(f"{path}/matrix.csv: columns do not match the tasks in run.json")
    return LoadedRun(
        path=path, config=config, info=info, cost=cost,
        matrix=np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names)),
        task_names=names,
        task_increment=np.asarray([t["increment"] - 1 for t in tasks], dtype=np.int64),  # files count from 1
        num_queries=np.asarray([t["num_queries"] for t in tasks], dtype=np.int64),
        chance=np.asarray([t.get("chance", {}).get(info.get("primary_metric", "map_all"), np.nan) for t in tasks],
                          dtype=np.float64),
    )


def find_runs(root: str | Path) -> list[Path]:
    root = Path(root)
    return sorted(p.parent for p in root.rglob("run.json") if (p.parent / "matrix.csv").is_file())
