"""The training DataLoader of each epoch, with worker processes that outlive the epoch.

Each epoch draws its own batches (a new seeded batch sampler), and PyTorch fixes a
DataLoader's batch sampler when it is built: without help every epoch builds a loader and
starts its worker processes again (each a fork of the training process, then its first
batches decoded before the accelerator gets any work).

:class:`EpochLoader` keeps one loader, with ``persistent_workers``, for as long as the
epochs train on the same dataset object (a scenario hands the same object to every epoch
of an increment), and points its batch sampler at each epoch's batches
(:class:`EpochBatches`). Batches are drawn in the main process, and each sample's
augmentation comes from the seed its key carries, so the workers hold no state that
depends on the epoch: results equal those of one loader per epoch (tested). A different
dataset object (a strategy that builds its dataset per epoch) gets a new loader; the old
one's workers are shut down, as they are at the end of the increment (:meth:`close`).
"""

from __future__ import annotations

from typing import Callable

from torch.utils.data import DataLoader, Sampler


class EpochBatches(Sampler):
    """A batch sampler that iterates whichever epoch's batches it was last given."""

    def __init__(self, batches: Sampler):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class EpochLoader:
    """``for_epoch(dataset, batches)`` gives a DataLoader of ``batches`` (a batch sampler)
    over ``dataset``: the same loader and workers as the previous epoch when ``dataset`` is
    the same object and ``persistent``; else a new one from ``make(dataset, batches,
    persistent)``."""

    def __init__(self, make: Callable[[object, Sampler, bool], DataLoader], persistent: bool):
        self.make, self.persistent = make, persistent
        self._dataset = self._batches = self._loader = None
        #: loaders built so far (each starts its workers once)
        self.built = 0

    def for_epoch(self, dataset, batches: Sampler) -> DataLoader:
        if not self.persistent:
            self.built += 1
            return self.make(dataset, batches, False)
        if self._loader is not None and self._dataset is dataset:
            self._batches.batches = batches
            return self._loader
        self.close()
        self._batches = EpochBatches(batches)
        self._loader, self._dataset = self.make(dataset, self._batches, True), dataset
        self.built += 1
        return self._loader

    def close(self) -> None:
        """Shut the workers down now (they would be, later, when the loader is collected)."""
        iterator = getattr(self._loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._dataset = self._batches = self._loader = None
