"""Loaders whose augmentations depend on the seed and each sample's position alone.

Each sample's augmentation seed comes from the epoch's seed and the sample's position (batch,
slot): which process or DataLoader worker loads it does not matter, so the number of workers,
data-parallel ranks (``shard`` reduces each batch to this rank's part, after seeding) and
resuming mid-epoch (the first ``skip`` batches are drawn, not loaded) leave the augmentations
unchanged.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cl_fir.data.device_decoding import collate_images
from cl_fir.engine.seeding import worker_init


class SeededBatches(Sampler):
    """A batch sampler whose items are ``(key, seed)`` (:class:`SeededItems` applies the seed)."""

    def __init__(self, sampler, skip: int, seed: int, shard: Callable[[list], list] | None = None):
        self.sampler, self.skip, self.seed, self.shard = sampler, skip, seed, shard

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)

    def __iter__(self):
        for b, batch in enumerate(self.sampler):
            if b < self.skip:
                continue
            seeds = np.random.SeedSequence([self.seed, b]).generate_state(len(batch), dtype=np.uint64)
            keyed = [(key, int(s)) for key, s in zip(batch, seeds)]
            yield keyed if self.shard is None else self.shard(keyed)


class SeededItems(Dataset):
    """Reads ``(key, seed)``: the wrapped item, drawn with torch's CPU generator seeded with
    ``seed`` (the caller's random state is restored afterwards)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key_seed):
        key, seed = key_seed
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also (lazily) re-seed every CUDA
            # generator, outside what fork_rng restores, and its lazy-call bookkeeping costs
            # about as much as loading a small image
            torch.default_generator.manual_seed(seed)
            return self.dataset[key]


def seeded_loader(dataset, batches: Sampler, workers: int, pin_memory: bool, prefetch_factor: int,
                  persistent: bool = False) -> DataLoader:
    """A DataLoader over ``batches`` (a :class:`SeededBatches`)."""
    return DataLoader(SeededItems(dataset), batch_sampler=batches, num_workers=workers, pin_memory=pin_memory,
                      worker_init_fn=worker_init, collate_fn=collate_images,
                      persistent_workers=persistent and workers > 0,
                      prefetch_factor=prefetch_factor if workers > 0 else None)
