"""Lazy image datasets over :class:`~cl_fir.data.asen_meta.SampleTable` rows."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from cl_fir.data.asen_meta import SampleTable


def load_rgb(path: str | Path, min_side: int | None = None) -> Image.Image:
    """The image as RGB. With ``min_side``, a JPEG is decoded at the smallest DCT scale
    (1, 1/2, 1/4, 1/8) whose shorter side is still at least ``min_side`` (PIL's draft mode)."""
    with Image.open(path) as img:
        if min_side and img.format == "JPEG":
            img.draft("RGB", (min_side, min_side))
        return img.convert("RGB")


#: Stand-in for an image that passed the check when the dataset was opened but fails to
#: load later (e.g. truncated after its header): mid-grey, replaced at the transform's size.
_SUBSTITUTE_SIZE = (224, 224)


class PilReader:
    """Reads an image file in a loader worker: decoded by PIL (with JPEG draft decoding down
    to ``min_side``, see :func:`load_rgb`). The dataset owns its reader, so the same decoding
    applies whichever transform is attached later (Avalanche applies the transform groups on
    top of the raw dataset)."""

    def __init__(self, min_side: int | None = None):
        self.min_side = min_side

    def __call__(self, path: str | Path) -> Image.Image:
        return load_rgb(path, self.min_side)

    @staticmethod
    def stand_in() -> Image.Image:
        return Image.new("RGB", _SUBSTITUTE_SIZE, (128, 128, 128))


class CachingReader:
    """A reader that keeps the images it decoded, up to ``max_bytes`` of pixels, and hands the
    kept image out again instead of decoding the file anew. For datasets small enough to hold
    (the synthetic ones: an epoch reads each image several times, and decoding a 64 px PNG
    costs about as much as the rest of preparing it). Each process (the main one, or each
    loader worker) keeps its own images; the pixels are the file's either way. The kept images
    are never modified: the transforms copy them into tensors."""

    def __init__(self, reader, max_bytes: int):
        self.reader, self.max_bytes = reader, int(max_bytes)
        self.kept: dict[str, Image.Image] = {}
        self.used = 0

    def __call__(self, path: str | Path) -> Image.Image:
        key = str(path)
        img = self.kept.get(key)
        if img is None:
            img = self.reader(path)
            size = img.width * img.height * len(img.getbands())
            if self.used + size <= self.max_bytes:
                self.kept[key] = img
                self.used += size
        return img

    def stand_in(self):
        return self.reader.stand_in()


def record_load_failure(log_path: str | None, image_path: str | Path, exc: BaseException) -> None:
    """Append one line per failure (safe from several DataLoader workers: one short write each)."""
    message = f"{image_path}\t{type(exc).__name__}: {exc}".replace("\n", " ") + "\n"
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, message.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    print(f"warning: could not load {image_path} ({type(exc).__name__}: {exc}); using a grey stand-in",
          file=sys.stderr)


def count_load_failures(log_path: str | Path | None) -> int:
    try:
        with open(log_path, "rb") as fh:
            return sum(1 for _ in fh)
    except (OSError, TypeError):
        return 0


class SampleImageDataset(Dataset):
    """Item ``i`` is ``(image, class_id)`` for row ``i`` of the table; images load on access.

    ``class_id`` is the global class of the row's (attribute, value) pair. ``targets``
    and ``task_labels`` (the attribute ids) are exposed for Avalanche.
    """

    def __init__(self, image_paths: Sequence[str | Path], table: SampleTable, class_offsets: np.ndarray,
                 transform: Callable | None = None, reader: Callable | None = None):
        self.image_paths = list(image_paths)
        #: path -> what the transform receives (see ``data/transforms.py``, ``build_reader``)
        self.reader = reader or PilReader()
        self.table = table
        self.class_ids = (np.asarray(class_offsets)[table.attributes] + table.values).astype(np.int64)
        self.transform = transform
        #: where load failures are appended (set by the run); a failure never stops the run
        self.failure_log: str | None = None

    @property
    def targets(self) -> list[int]:
        return self.class_ids.tolist()

    @property
    def task_labels(self) -> list[int]:
        return self.table.attributes.tolist()

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int):
        path = self.image_paths[int(self.table.image_ids[index])]
        try:
            img = self.reader(path)
            if hasattr(img, "failure_log"):   # decoded later, on the device: failures are logged there
                img.failure_log = self.failure_log
        except Exception as exc:   # PIL raises OSError, SyntaxError, ValueError... on bad files
            record_load_failure(self.failure_log, path, exc)
            img = self.reader.stand_in()
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.class_ids[index])
