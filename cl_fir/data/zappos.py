"""Reader for UT-Zappos50k in the Conditional Similarity Networks split (CSN, ASEN, AG-MAN).

Layout (``docs/datasets.md``)::

    <data_root>/Zappos50k/                       (or <data_root> itself when it holds tripletlists/)
        filenames.json                           image paths relative to ut-zap50k-images/; the index is the id
        tripletlists/{class,closure,gender,heel}_tripletlist_{train,val,test}.txt   "anchor far close"
        ut-zap50k-images/<Category>/<SubCategory>/<Brand>/<id>.<id>.jpg

``filenames.json`` is read either as a JSON array of strings or, as the CSN loader reads
it, as one path per line. A triplet line ``a b c`` means *a is closer to c than to b*.

Conditions are the tasks (class, closure, gender, heel, in that order). The CSN files
carry no attribute values, so there is no MAP here: evaluation is **triplet accuracy**
(percentage of test triplets where the anchor is more similar to the close image than to
the far one, in that condition's embedding), as CSN, ASEN and AG-MAN report. MAP would
need the UT-Zappos50k ``meta-data.csv`` labels, a different protocol.

Training uses each triplet's (anchor, close) doublet, as MCL-FIR reduces triplets: in
the training :class:`SampleTable` every doublet is a "value" of its own (two rows), so
the value-balanced doublet sampler draws exactly the listed pairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cl_fir.data.asen_meta import AttributeMeta, SampleTable, integer_lines
from cl_fir.data.problems import ProblemLog
from cl_fir.errors import ConfigError, DataFormatError

CONDITIONS = ("class", "closure", "gender", "heel")
SPLIT_FILES = {"train": "train", "valid": "val", "test": "test"}
DEFAULT_KEY = "Zappos50k"
IMAGE_FOLDER = "ut-zap50k-images"


@dataclass(frozen=True)
class TripletTable:
    """Rows of (anchor, far, close) image ids with the condition (attribute) of each triplet."""

    anchors: np.ndarray
    far: np.ndarray
    close: np.ndarray
    attributes: np.ndarray

    def __len__(self) -> int:
        return int(self.anchors.shape[0])

    def subset(self, mask_or_index) -> "TripletTable":
        return TripletTable(self.anchors[mask_or_index], self.far[mask_or_index], self.close[mask_or_index],
                            self.attributes[mask_or_index])

    def for_attributes(self, attribute_ids) -> "TripletTable":
        return self.subset(np.isin(self.attributes, np.asarray(list(attribute_ids))))

    def image_ids(self) -> np.ndarray:
        return np.unique(np.concatenate([self.anchors, self.far, self.close]))


class ZapposDataset:
    protocol = "triplet"

    def __init__(self, data_root: str | Path, key: str = DEFAULT_KEY, problems: ProblemLog | None = None):
        self.data_root = Path(data_root)
        self.key = key
        self.problems = problems if problems is not None else ProblemLog()
        if not self.data_root.is_dir():
            raise DataFormatError(f"{self.data_root}: data root does not exist or is not a folder")
        folder = self.data_root / key
        if not folder.is_dir() and (self.data_root / "tripletlists").is_dir():
            folder = self.data_root
        if not folder.is_dir():
            raise DataFormatError(f"{folder}: missing dataset folder; a Zappos50k folder holds filenames.json, "
                                  f"tripletlists/ and {IMAGE_FOLDER}/ (CSN layout)")
        self.folder = folder
        images = folder / IMAGE_FOLDER
        self.image_root = images if images.is_dir() else folder
        self._names = self._read_filenames()
        self._triplets: dict[str, TripletTable] = {}
        train = self.triplets("train")
        pairs = [int(np.sum(train.attributes == a)) for a in range(len(CONDITIONS))]
        # one "value" per training doublet; at least 1 so an empty condition still has a valid meta
        self.meta = AttributeMeta(key, CONDITIONS, tuple(max(1, n) for n in pairs))

    # ------------------------------------------------------------------ files

    def _read_filenames(self) -> list[str]:
        path = self.folder / "filenames.json"
        if not path.is_file():
            self.problems.error("missing-file", path, None, "missing; expected the CSN image list")
            return []
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            self.problems.error("not-text", path, None, f"not UTF-8 text ({exc})")
            return []
        if text.lstrip().startswith("["):
            try:
                names = json.loads(text)
            except json.JSONDecodeError as exc:
                self.problems.error("malformed", path, exc.lineno, f"not a valid JSON array ({exc.msg})")
                return []
            bad = next((i for i, n in enumerate(names) if not isinstance(n, str) or not n.strip()), None)
            if bad is not None:
                self.problems.error("malformed", path, None, f"entry {bad} is {names[bad]!r}; expected a non-empty "
                                    f"image path string")
                return []
            return [n.strip() for n in names]
        names = [ln.strip() for ln in text.splitlines()]
        for i, name in enumerate(names):
            if not name:
                self.problems.error("malformed", path, i + 1, "empty line; expected one image path per line")
        return names

    def triplet_file(self, condition: str, split: str) -> Path:
        return self.folder / "tripletlists" / f"{condition}_tripletlist_{SPLIT_FILES[split]}.txt"

    def filenames(self, split: str | None = None) -> list[str]:
        """All images (the CSN split shares one id space across splits)."""
        return self._names

    def image_paths(self, split: str | None = None) -> list[Path]:
        return [self.image_root / n for n in self._names]

    def triplets(self, split: str) -> TripletTable:
        if split not in SPLIT_FILES:
            raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_FILES)}")
        if split not in self._triplets:
            parts = [self._parse(self.triplet_file(c, split), a) for a, c in enumerate(CONDITIONS)]
            self._triplets[split] = TripletTable(*(np.concatenate([p[k] for p in parts]) for k in range(4)))
        return self._triplets[split]

    def _parse(self, path: Path, attribute: int) -> tuple[np.ndarray, ...]:
        log = self.problems
        n = len(self._names)
        rows = []
        seen: dict[tuple[int, int, int], int] = {}
        for lineno, ids, line in integer_lines(path, log, "'anchor far close'"):
            if len(ids) != 3:
                log.error("malformed", path, lineno, f"expected 'anchor far close', got {line.strip()!r}")
                continue
            out = [i for i in ids if not 0 <= i < n]
            if out:
                log.error("out-of-range", path, lineno, f"image id {out[0]} out of range; filenames.json has {n} entries")
                continue
            if len(set(ids)) < 3:
                log.warning("degenerate", path, lineno, f"triplet {ids} repeats an image; skipped")
                continue
            key = tuple(ids)
            if key in seen:
                log.warning("duplicate", path, lineno, f"repeats line {seen[key]}; kept once")
                continue
            seen[key] = lineno
            rows.append(ids)
        arr = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
        return arr[:, 0], arr[:, 1], arr[:, 2], np.full(arr.shape[0], attribute, dtype=np.int64)

    # ------------------------------------------------------------------ views used by scenarios

    def train_samples(self) -> SampleTable:
        """Two rows per training triplet: anchor and close image, sharing a per-doublet value."""
        t = self.triplets("train")
        values = np.zeros(len(t), dtype=np.int64)
        for a in range(len(CONDITIONS)):
            mask = t.attributes == a
            values[mask] = np.arange(int(mask.sum()))
        return SampleTable(np.concatenate([t.anchors, t.close]), np.concatenate([t.attributes, t.attributes]),
                           np.concatenate([values, values]))

    def eval_triplets(self, split: str) -> TripletTable:
        return self.triplets(split)
