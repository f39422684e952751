"""Experiment tracking in TensorBoard (``cl-fir run --log tensorboard``).

Writes TensorBoard event files under ``<run>/tensorboard/``, in two folders that TensorBoard
shows as two runs, each with its own x-axis:

* ``train/``: ``loss``, the training loss of every optimizer step (x = the run's optimizer
  step, counted from 1 across increments), as the loop reads it back.
* ``increments/`` (x = increment, from 1), after each increment's evaluation:
  ``matrix/<task>`` (the primary metric of every seen task: one cell of the increment x
  task matrix), ``derived/avg_incremental``, ``derived/seen_task_mean``,
  ``derived/seen_task_mean_weighted``, ``derived/forgetting`` and ``derived/bwt`` (from
  the second increment on), and ``cost/...`` (this increment's image passes, estimated
  training FLOPs, optimizer steps and training seconds) with ``cost_total/...`` (the same
  summed over the increments so far).

It only listens: the loop's loss readback calls :meth:`TensorBoardLog.step_loss` for every
step's loss, and the runner calls :meth:`TensorBoardLog.increment_end` where it records an
increment's results. Under torchrun only rank 0 makes one. A resumed run appends to the
same folders: each writer starts with a purge marker at the first step it will write again,
so TensorBoard drops whatever an interrupted process wrote after the checkpoint the run
continues from, and no step appears twice.
"""

from __future__ import annotations

import math
from pathlib import Path

FOLDER = "tensorboard"
TRACKERS = ("none", "tensorboard")
#: per-increment cost fields written as ``cost/<name>`` and ``cost_total/<name>``
COST_FIELDS = ("image_passes", "train_flops", "optimizer_steps", "train_seconds")


class TensorBoardLog:
    """Event files of one run. ``done_steps`` and ``done_increments`` are where the run
    continues from (0 and 0 for a new run)."""

    def __init__(self, run_path: str | Path, done_steps: int = 0, done_increments: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:   # tensorboard is a dependency; a broken install says so in one line
            from cl_fir.errors import ConfigError
            raise ConfigError(f"--log tensorboard needs the tensorboard package ({exc}); "
                              "pip install tensorboard") from None
        self.folder = Path(run_path) / FOLDER
        self.step = done_steps
        self.train = SummaryWriter(str(self.folder / "train"), purge_step=done_steps + 1)
        self.increments = SummaryWriter(str(self.folder / "increments"), purge_step=done_increments + 1)

    def step_loss(self, value: float, where: object = None) -> None:
        """One optimizer step's loss (called once per step, in order)."""
        self.step += 1
        self.train.add_scalar("loss", value, self.step)

    def increment_end(self, increment: int, row: dict[str, float], derived: dict[str, float],
                      cost: dict, cost_total: dict) -> None:
        """After increment ``increment`` (from 1): its matrix row (task name -> primary metric;
        NaN for tasks not seen yet, which are left out), the derived metrics so far, and the
        increment's and the cumulative cost."""
        for name, value in row.items():
            if math.isfinite(value):
                self.increments.add_scalar(f"matrix/{name}", value, increment)
        for tag, key in (("avg_incremental", "avg_incremental"), ("seen_task_mean", "final"),
                         ("seen_task_mean_weighted", "final_weighted"), ("forgetting", "forgetting"),
                         ("bwt", "bwt")):
            value = derived.get(key)
            if value is not None and math.isfinite(value):
                self.increments.add_scalar(f"derived/{tag}", value, increment)
        for name in COST_FIELDS:
            self.increments.add_scalar(f"cost/{name}", float(cost[name]), increment)
            self.increments.add_scalar(f"cost_total/{name}", float(cost_total[name]), increment)
        self.flush()

    def flush(self) -> None:
        self.train.flush()
        self.increments.flush()

    def close(self) -> None:
        self.train.close()
        self.increments.close()
