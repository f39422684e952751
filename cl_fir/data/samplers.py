"""Seeded doublet batch sampler (anchor and positive share the attribute value).

Each epoch draws fresh doublets, as ASEN and MCL-FIR draw fresh triplets: pick an
attribute uniformly among those being trained, a value uniformly among that attribute's
values with at least two images (value-balanced, as in the reference code), then two
distinct samples with that value. A batch of ``B`` doublets is yielded as one list of
``2B`` dataset indices: ``[a_1..a_B, p_1..p_B]``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from torch.utils.data import Sampler

from cl_fir.data.asen_meta import SampleTable
from cl_fir.errors import ConfigError


class DoubletBatchSampler(Sampler[list[int]]):
    """``rows`` restricts sampling to those table rows (indices stay dataset indices)."""

    def __init__(self, table: SampleTable, batch_size: int, num_doublets: int, seed, rows=None,
                 min_batch_size: int = 2):
        if batch_size < min_batch_size:
            raise ConfigError(f"batch_size must be >= {min_batch_size} doublets (in-batch negatives), got {batch_size}")
        rows = np.arange(len(table)) if rows is None else np.asarray(rows, dtype=np.int64)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, a, v in zip(rows.tolist(), table.attributes[rows].tolist(), table.values[rows].tolist()):
            groups[(a, v)].append(i)
        by_attr: dict[int, list[np.ndarray]] = defaultdict(list)
        for (a, _v), idx in sorted(groups.items()):
            if len(idx) >= 2:
                by_attr[a].append(np.asarray(idx, dtype=np.int64))
        if not by_attr:
            raise ConfigError("no attribute value has two training images; cannot form anchor-positive doublets")
        self.attributes = sorted(by_attr)
        self.groups = [by_attr[a] for a in self.attributes]
        self.batch_size = batch_size
        self.num_batches = max(1, num_doublets // batch_size)
        self.seed = seed

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        n = self.num_batches * self.batch_size
        attr_pick = rng.integers(len(self.attributes), size=n)
        anchors = np.empty(n, dtype=np.int64)
        positives = np.empty(n, dtype=np.int64)
        for k in range(n):
            values = self.groups[attr_pick[k]]
            members = values[rng.integers(len(values))]
            i, j = rng.choice(len(members), size=2, replace=False)
            anchors[k], positives[k] = members[i], members[j]
        B = self.batch_size
        for b in range(self.num_batches):
            yield anchors[b * B:(b + 1) * B].tolist() + positives[b * B:(b + 1) * B].tolist()


class MixedDoubletSampler(Sampler[list[int]]):
    """Zip several doublet samplers: each batch holds every sampler's doublets, anchors first.

    Used by replay to mix buffered doublets into each batch of new ones.
    """

    def __init__(self, samplers: list[DoubletBatchSampler]):
        self.samplers = samplers

    def __len__(self) -> int:
        return min(len(s) for s in self.samplers)

    def __iter__(self):
        for parts in zip(*self.samplers):
            halves = [(p[: len(p) // 2], p[len(p) // 2:]) for p in parts]
            yield [i for a, _ in halves for i in a] + [i for _, p in halves for i in p]
