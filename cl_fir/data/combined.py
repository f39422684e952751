"""Several ASEN-format datasets read as one, for cross-dataset sequences.

The MCL-FIR reference code learns FashionAI's 8 attributes, then DeepFashion's 5, then
DARN's 9 (22 tasks; ``docs/scenarios.md``). Here the datasets' attributes are
concatenated in that order under names ``<Dataset>/<attribute>``, and image ids of each
split are offset so that one id space covers all datasets' images of that split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cl_fir.data.asen_meta import AsenMetaDataset, AttributeMeta, SampleTable


class CombinedSource:
    protocol = "ranking"

    def __init__(self, sources: list[AsenMetaDataset]):
        if not sources:
            raise ValueError("CombinedSource needs at least one dataset")
        self.sources = sources
        self.data_root = sources[0].data_root
        self.folder = self.data_root
        self.key = "+".join(s.key for s in sources)
        self.problems = sources[0].problems
        self.meta = AttributeMeta(
            self.key,
            tuple(f"{s.key}/{n}" for s in sources for n in s.meta.names),
            tuple(v for s in sources for v in s.meta.num_values),
        )
        self._attr_offsets = np.cumsum([0] + [s.meta.num_attributes for s in sources[:-1]])

    def dataset_of_attribute(self, attribute: int) -> str:
        k = int(np.searchsorted(self._attr_offsets, attribute, side="right")) - 1
        return self.sources[k].key

    def filenames(self, split: str) -> list[str]:
        return [f"{s.key}/{n}" for s in self.sources for n in s.filenames(split)]

    def image_paths(self, split: str) -> list[Path]:
        return [p for s in self.sources for p in s.image_paths(split)]

    def train_samples(self) -> SampleTable:
        return self._combine("train", lambda s: s.train_samples())

    def eval_samples(self, split: str, role: str) -> SampleTable:
        return self._combine(split, lambda s: s.eval_samples(split, role))

    def _combine(self, split: str, read) -> SampleTable:
        tables, image_offset = [], 0
        for s, attr_offset in zip(self.sources, self._attr_offsets):
            t = read(s)
            tables.append(SampleTable(t.image_ids + image_offset, t.attributes + attr_offset, t.values))
            image_offset += len(s.filenames(split))
        return SampleTable.concat(tables)
