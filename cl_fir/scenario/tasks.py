"""What every scenario family builds: increments, evaluation tasks and the views of the task
order that the training loop and the results use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cl_fir.data.asen_meta import SampleTable
from cl_fir.data.image_dataset import SampleImageDataset


@dataclass
class Increment:
    index: int
    attributes: tuple[int, ...]
    train_table: SampleTable
    #: training rows whose value is hidden (``[increments] label_fraction`` < 1); values are -1
    unlabelled_table: SampleTable | None = None


@dataclass
class RankingTask:
    """Query and candidate sets of one attribute (ASEN protocol: same attribute, disjoint images)."""

    attribute: int
    name: str
    queries: SampleImageDataset
    candidates: SampleImageDataset

    @property
    def num_queries(self) -> int:
        return len(self.queries)

    @property
    def num_candidates(self) -> int:
        return len(self.candidates)


@dataclass
class TripletTask:
    """Test triplets of one condition (CSN protocol): ``images`` plus index triplets into it."""

    attribute: int
    name: str
    images: SampleImageDataset
    anchors: np.ndarray
    far: np.ndarray
    close: np.ndarray

    @property
    def num_queries(self) -> int:
        return int(self.anchors.shape[0])

    @property
    def num_candidates(self) -> int:
        return len(self.images)


EvalTask = RankingTask | TripletTask


class IncrementViews:
    """Task order views shared by every scenario family (needs ``increments`` and ``meta``)."""

    @property
    def tasks(self) -> list[int]:
        """Task ids (attributes, or categories) in the order they are learned (the matrix columns)."""
        return [a for inc in self.increments for a in inc.attributes]

    @property
    def task_names(self) -> list[str]:
        return [self.meta.names[a] for a in self.tasks]

    @property
    def task_increment(self) -> np.ndarray:
        """For each matrix column, the increment in which that task is learned."""
        return np.asarray([inc.index for inc in self.increments for _ in inc.attributes], dtype=np.int64)

    def seen_tasks(self, increment: int) -> list[int]:
        return [a for inc in self.increments[: increment + 1] for a in inc.attributes]

    def training_data(self, increment_indices: list[int]) -> tuple[Any, SampleTable]:
        """The train-transformed dataset of the given increments and its aligned sample table
        (``_build_training_data``). The last answer is kept: every epoch of an increment gets
        the same dataset object, so the epoch loader keeps its worker processes
        (``train.persistent_workers``). Neither is changed by its users."""
        key = tuple(int(i) for i in increment_indices)
        kept = getattr(self, "_kept_training_data", None)
        if kept is None or kept[0] != key:
            kept = (key, self._build_training_data(list(key)))
            self._kept_training_data = kept
        return kept[1]

