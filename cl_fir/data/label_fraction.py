"""Labelled / unlabelled split of a training table (semi-supervised scenarios, MODC's 1/5/10/50%).

Per (attribute, value) group of ``n`` rows, ``max(1, round(fraction * n))`` rows stay
labelled (stratified by value, as MODC's partitions); the choice is seeded by
``label_seed`` only, so every run seed and every strategy sees the same labelled rows.
The unlabelled rows keep their attribute (the task is known) and lose their value.
"""

from __future__ import annotations

import numpy as np

from cl_fir.data.asen_meta import SampleTable


def labelled_mask(table: SampleTable, fraction: float, seed: int = 0) -> np.ndarray:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction!r}")
    mask = np.zeros(len(table), dtype=bool)
    if fraction >= 1.0:
        mask[:] = True
        return mask
    rng = np.random.default_rng(seed)
    keys = table.attributes.astype(np.int64) * 1_000_003 + table.values.astype(np.int64)
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        keep = max(1, int(round(fraction * len(rows))))
        mask[rng.choice(rows, size=keep, replace=False)] = True
    return mask


def hide_values(table: SampleTable) -> SampleTable:
    """The unlabelled view: same images and attributes, values set to -1."""
    return SampleTable(table.image_ids, table.attributes, np.full(len(table), -1, dtype=table.values.dtype))
