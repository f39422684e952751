"""Lazy image datasets over :class:`~cl_fir.data.asen_meta.SampleTable` rows."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from cl_fir.data.asen_meta import SampleTable


def load_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


class SampleImageDataset(Dataset):
    """Item ``i`` is ``(image, class_id)`` for row ``i`` of the table; images load on access.

    ``class_id`` is the global class of the row's (attribute, value) pair. ``targets``
    and ``task_labels`` (the attribute ids) are exposed for Avalanche.
    """

    def __init__(self, image_paths: Sequence[str | Path], table: SampleTable, class_offsets: np.ndarray,
                 transform: Callable | None = None):
        self.image_paths = list(image_paths)
        self.table = table
        self.class_ids = (np.asarray(class_offsets)[table.attributes] + table.values).astype(np.int64)
        self.transform = transform

    @property
    def targets(self) -> list[int]:
        return self.class_ids.tolist()

    @property
    def task_labels(self) -> list[int]:
        return self.table.attributes.tolist()

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int):
        img = load_rgb(self.image_paths[int(self.table.image_ids[index])])
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.class_ids[index])
