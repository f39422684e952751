"""Seeded doublet batch sampler (anchor and positive share the attribute value).

Each epoch draws fresh doublets, as ASEN and MCL-FIR draw fresh triplets: pick an
attribute uniformly among those being trained, a value uniformly among that attribute's
values with at least two images (value-balanced, as in the reference code), then two
distinct samples with that value. A batch of ``B`` doublets is yielded as one list of
``2B`` dataset indices: ``[a_1..a_B, p_1..p_B]``.
"""

from __future__ import annotations

import copy
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
        self.table = table
        self.rows = np.arange(len(table)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.attributes, self.groups = doublet_groups(table, self.rows)
        if not self.attributes:
            raise ConfigError("no attribute value has two training images in the rows being trained; cannot form "
                              "anchor-positive doublets (a small [increments] label_fraction on a small dataset "
                              "leaves one labelled image per value)")
        self.batch_size = batch_size
        self.num_batches = max(1, num_doublets // batch_size)
        self.seed = seed
        self.row_group = self.batch_groups = None

    def with_groups(self, row_group: np.ndarray, batch_groups: np.ndarray) -> "DoubletBatchSampler":
        """The same sampler with every batch ``b`` drawn from the rows of group ``batch_groups[b]``
        (``row_group`` over dataset indices; data division, see ``cl_fir.engine.data_division``).
        It yields ``(index, tag)`` pairs: the batch's group, or ``-2`` for a row from outside it
        (drawn only when the group has no doublet among this sampler's rows)."""
        grouped = copy.copy(self)
        grouped.row_group, grouped.batch_groups = np.asarray(row_group), np.asarray(batch_groups)
        return grouped

    def can_draw(self, row_group: np.ndarray, group: int) -> bool:
        rows = self.rows[row_group[self.rows] == group]
        return bool(doublet_groups(self.table, rows)[0])

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        if self.batch_groups is not None:
            yield from self._grouped_batches()
            return
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

    def _grouped_batches(self):
        rng = np.random.default_rng(self.seed)
        cache: dict[int, tuple[list[int], list[list[np.ndarray]]]] = {}
        for b in range(self.num_batches):
            g = int(self.batch_groups[b])
            if g not in cache:
                attributes, groups = doublet_groups(self.table, self.rows[self.row_group[self.rows] == g])
                cache[g] = (attributes, groups) if attributes else (self.attributes, self.groups)
            _, groups = cache[g]
            anchors, positives = [], []
            for a in rng.integers(len(groups), size=self.batch_size):
                members = groups[a][rng.integers(len(groups[a]))]
                i, j = rng.choice(len(members), size=2, replace=False)
                anchors.append(int(members[i]))
                positives.append(int(members[j]))
            yield [(i, g if self.row_group[i] == g else -2) for i in anchors + positives]


def doublet_groups(table: SampleTable, rows: np.ndarray) -> tuple[list[int], list[list[np.ndarray]]]:
    """Attributes with a doublet among ``rows``, and per attribute the row arrays of its values
    that have at least two rows."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, a, v in zip(rows.tolist(), table.attributes[rows].tolist(), table.values[rows].tolist()):
        groups[(a, v)].append(i)
    by_attr: dict[int, list[np.ndarray]] = defaultdict(list)
    for (a, _v), idx in sorted(groups.items()):
        if len(idx) >= 2:
            by_attr[a].append(np.asarray(idx, dtype=np.int64))
    attributes = sorted(by_attr)
    return attributes, [by_attr[a] for a in attributes]


class MixedDoubletSampler(Sampler[list[int]]):
    """Zip several doublet samplers: each batch holds every sampler's doublets, anchors first.

    Used by replay to mix buffered doublets into each batch of new ones.
    """

    def __init__(self, samplers: list[DoubletBatchSampler]):
        self.samplers = samplers
        self.table = samplers[0].table
        self.rows = np.unique(np.concatenate([s.rows for s in samplers]))

    def with_groups(self, row_group: np.ndarray, batch_groups: np.ndarray) -> "MixedDoubletSampler":
        return MixedDoubletSampler([s.with_groups(row_group, batch_groups) for s in self.samplers])

    def can_draw(self, row_group: np.ndarray, group: int) -> bool:
        return self.samplers[0].can_draw(row_group, group)

    def __len__(self) -> int:
        return min(len(s) for s in self.samplers)

    def __iter__(self):
        for parts in zip(*self.samplers):
            halves = [(p[: len(p) // 2], p[len(p) // 2:]) for p in parts]
            yield [i for a, _ in halves for i in a] + [i for _, p in halves for i in p]


class ComposedBatchSampler(Sampler[list[int]]):
    """Seeded batches of ``batch_size`` composed training triplets (dataset indices taken from
    ``table.image_ids``), with the task drawn uniformly among the table's tasks, then a
    triplet uniformly within it (as the doublet sampler balances attributes)."""

    def __init__(self, table: SampleTable, batch_size: int, num_triplets: int, seed, min_batch_size: int = 2):
        if batch_size < min_batch_size:
            raise ConfigError(f"batch_size must be >= {min_batch_size} triplets (in-batch negatives), got {batch_size}")
        self.table = table
        self.tasks = sorted(set(table.attributes.tolist()))
        if not self.tasks:
            raise ConfigError("no training triplets in the increments being trained")
        self.by_task = [table.image_ids[table.attributes == a] for a in self.tasks]
        self.batch_size = batch_size
        self.num_batches = max(1, num_triplets // batch_size)
        self.seed = seed

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        for _ in range(self.num_batches):
            picks = rng.integers(len(self.tasks), size=self.batch_size)
            yield [int(self.by_task[t][rng.integers(len(self.by_task[t]))]) for t in picks]


class ViewPairSampler(Sampler[list[int]]):
    """Seeded batches of ``batch_size`` images drawn uniformly from ``rows`` (dataset
    indices), each listed twice, ``[i_1..i_B, i_1..i_B]``: the two random augmentations
    of one image form the pair (self-supervision, pseudo-labelled data). Combine it with
    doublets through :class:`MixedDoubletSampler`."""

    def __init__(self, rows, batch_size: int, num_batches: int, seed):
        self.rows = np.asarray(rows, dtype=np.int64)
        if self.rows.size == 0:
            raise ConfigError("no images to draw view pairs from")
        self.batch_size, self.num_batches, self.seed = batch_size, max(1, num_batches), seed

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        for _ in range(self.num_batches):
            picked = self.rows[rng.integers(self.rows.size, size=self.batch_size)].tolist()
            yield picked + picked


class ChainedBatchSampler(Sampler[list[int]]):
    """The batches of several batch samplers, one sampler after the other (an epoch whose
    batches change composition part-way, e.g. MODC's stages fitted into the epoch's steps)."""

    def __init__(self, samplers: list):
        self.samplers = samplers

    def __len__(self) -> int:
        return sum(len(s) for s in self.samplers)

    def __iter__(self):
        for sampler in self.samplers:
            yield from sampler
