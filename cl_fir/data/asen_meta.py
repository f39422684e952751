"""Reader for the ASEN meta format shared by FashionAI, DARN, DeepFashion and synthfashion.

Layout (``docs/datasets.md``)::

    <data_root>/meta.json                      {"<Key>": {"ATTRIBUTES": [...], "ATTRIBUTES_NUM": {...}}}
    <data_root>/<Key>/filenames_{train,valid,test}.txt   one image path per line; line number = image id
    <data_root>/<Key>/label_train.txt          "img_id a v [a v ...]"
    <data_root>/<Key>/query_{valid,test}.txt   "img_id a v"
    <data_root>/<Key>/candidate_{valid,test}.txt

All ids and indices are 0-based. Nothing here opens an image: files are parsed into
:class:`SampleTable` rows (one per annotated image-attribute pair), and images are
loaded lazily by :mod:`cl_fir.data.image_dataset`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np

from cl_fir.data.problems import ProblemLog
from cl_fir.errors import ConfigError, DataFormatError

EVAL_SPLITS = ("valid", "test")
SPLITS = ("train",) + EVAL_SPLITS
ROLES = ("query", "candidate")


@dataclass(frozen=True)
class AttributeMeta:
    """Attribute types of one dataset, in meta order (the index is the attribute id)."""

    dataset: str
    names: tuple[str, ...]
    num_values: tuple[int, ...]
    value_names: tuple[tuple[str, ...], ...] | None = None

    @property
    def num_attributes(self) -> int:
        return len(self.names)

    @cached_property
    def class_offsets(self) -> np.ndarray:
        """Global class id of (attribute a, value v) is ``class_offsets[a] + v``."""
        return np.concatenate([[0], np.cumsum(self.num_values)[:-1]]).astype(np.int64)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ConfigError(
                f"unknown attribute {name!r} for dataset {self.dataset}; expected one of: {', '.join(self.names)}"
            ) from None


@dataclass(frozen=True)
class SampleTable:
    """Rows of (image id, attribute id, value index); one row per annotated pair."""

    image_ids: np.ndarray
    attributes: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])

    def subset(self, mask_or_index: np.ndarray) -> "SampleTable":
        return SampleTable(self.image_ids[mask_or_index], self.attributes[mask_or_index], self.values[mask_or_index])

    def for_attributes(self, attribute_ids) -> "SampleTable":
        return self.subset(np.isin(self.attributes, np.asarray(list(attribute_ids))))

    @staticmethod
    def concat(tables: list["SampleTable"]) -> "SampleTable":
        return SampleTable(*(np.concatenate([getattr(t, f) for t in tables]) for f in ("image_ids", "attributes", "values")))


def read_meta(data_root: Path, key: str) -> AttributeMeta:
    """Read ``meta.json`` at the data root (ASEN) or inside ``<root>/<key>/``."""
    candidates = [data_root / "meta.json", data_root / key / "meta.json"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DataFormatError(
            f"{candidates[0]}: missing (also looked for {candidates[1]}); an ASEN-format data root holds "
            f"meta.json and a {key}/ folder with filenames_*.txt, label_train.txt, query_*.txt, candidate_*.txt"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or key not in meta:
        keys = ", ".join(meta) if isinstance(meta, dict) else "none"
        raise DataFormatError(f"{path}: no entry {key!r} (entries: {keys})")
    entry = meta[key]
    try:
        names = tuple(entry["ATTRIBUTES"])
        nums = entry["ATTRIBUTES_NUM"]
        num_values = tuple(int(nums[n]) for n in names)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataFormatError(
            f"{path}: entry {key!r} must hold ATTRIBUTES (a list of names) and ATTRIBUTES_NUM "
            f"(name -> number of values); problem: {exc!r}"
        ) from None
    if not names:
        raise DataFormatError(f"{path}: entry {key!r} lists no ATTRIBUTES")
    for n, v in zip(names, num_values):
        if v < 1:
            raise DataFormatError(f"{path}: ATTRIBUTES_NUM[{n!r}] must be >= 1, got {v}")
    value_names = None
    if isinstance(entry.get("ATTRIBUTES_VALUES"), dict):
        vals = entry["ATTRIBUTES_VALUES"]
        if all(n in vals and len(vals[n]) == k for n, k in zip(names, num_values)):
            value_names = tuple(tuple(str(x) for x in vals[n]) for n in names)
    return AttributeMeta(key, names, num_values, value_names)


def _read_lines(path: Path, problems: ProblemLog | None = None) -> list[str]:
    """Lines of a text file; a missing final newline is fine (DARN's filenames files have none).

    With a collecting problem log, a missing or undecodable file is recorded and read as empty.
    """
    problems = problems or ProblemLog()
    if not path.is_file():
        problems.error("missing-file", path, None, "missing")
        return []
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        problems.error("not-text", path, None, f"not UTF-8 text ({exc})")
        return []


def integer_lines(path: Path, problems: ProblemLog, expected: str) -> Iterator[tuple[int, list[int], str]]:
    """``(line number, integers, line)`` for every non-empty line of a whitespace-separated
    integer file; a line with a non-integer field is reported (``expected`` says what a line
    should be) and skipped. Used by every label and triplet file reader."""
    for lineno, line in enumerate(_read_lines(path, problems), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            numbers = [int(f) for f in fields]
        except ValueError:
            problems.error("malformed", path, lineno, f"expected {expected} as integers, got {line.strip()!r}")
            continue
        yield lineno, numbers, line


class AsenMetaDataset:
    """One dataset in the ASEN meta format, parsed lazily and validated on read.

    ``problems`` receives everything found while reading (see :mod:`cl_fir.data.problems`);
    by default errors raise at once and warnings are kept in ``self.problems``.
    """

    protocol = "ranking"

    def __init__(self, data_root: str | Path, key: str, problems: ProblemLog | None = None):
        self.data_root = Path(data_root)
        self.key = key
        self.folder = self.data_root / key
        self.problems = problems if problems is not None else ProblemLog()
        if not self.data_root.is_dir():
            raise DataFormatError(f"{self.data_root}: data root does not exist or is not a folder")
        self.meta = read_meta(self.data_root, key)
        if not self.folder.is_dir():
            raise DataFormatError(f"{self.folder}: missing dataset folder (meta.json names {key!r})")
        self._filenames: dict[str, list[str]] = {}

    def filenames(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if split not in self._filenames:
            path = self.folder / f"filenames_{split}.txt"
            names = [ln.strip() for ln in _read_lines(path, self.problems)]
            for i, name in enumerate(names):
                if not name:
                    self.problems.error("malformed", path, i + 1, "empty line; expected one image path per line")
            self._filenames[split] = names
        return self._filenames[split]

    def image_paths(self, split: str) -> list[Path]:
        return [self.folder / name for name in self.filenames(split)]

    def train_samples(self) -> SampleTable:
        """Rows of ``label_train.txt`` (``img_id a v [a v ...]``), one per pair."""
        return self._parse(self.folder / "label_train.txt", "train", multi=True)

    def eval_samples(self, split: str, role: str) -> SampleTable:
        """Rows of ``{query,candidate}_{split}.txt`` (``img_id a v``)."""
        if split not in EVAL_SPLITS:
            raise ConfigError(f"evaluation split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
        if role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        return self._parse(self.folder / f"{role}_{split}.txt", split, multi=False)

    def _parse(self, path: Path, split: str, multi: bool) -> SampleTable:
        """Parse, normalise and validate one label file.

        Training files may carry 1-based type codes (an early ASEN DeepFashion script):
        when no pair uses type 0 and some pair uses type N, all types are shifted down by
        one and a warning says so. Repeated (image, attribute) rows are kept once, with a
        warning. Lines may be padded with extra whitespace or tabs.
        """
        log = self.problems
        n_images = len(self.filenames(split))
        expected = "'img_id attr value [attr value ...]'" if multi else "'img_id attr value'"
        parsed: list[tuple[int, int, list[int]]] = []
        for lineno, numbers, line in integer_lines(path, log, expected):
            pairs = numbers[1:]
            if len(numbers) < 3 or len(pairs) % 2 or (not multi and len(numbers) != 3):
                log.error("malformed", path, lineno, f"expected {expected}, got {line.strip()!r}")
                continue
            if not 0 <= numbers[0] < n_images:
                log.error("out-of-range", path, lineno, f"image id {numbers[0]} out of range; "
                          f"filenames_{split}.txt has {n_images} lines")
                continue
            parsed.append((lineno, numbers[0], pairs))
        shift = 0
        n_attr = self.meta.num_attributes
        if multi and parsed:
            types = {a for _, _, pairs in parsed for a in pairs[0::2]}
            if 0 not in types and n_attr in types:
                shift = 1
                log.warning("one-based-types", path, None, f"attribute type codes run 1..{n_attr}; "
                            f"read as 0-based indices (code - 1), as the early ASEN DeepFashion files")
        ids, attrs, vals = [], [], []
        seen: dict[tuple[int, int, int] | tuple[int, int], int] = {}
        for lineno, image_id, pairs in parsed:
            for a, v in zip(pairs[0::2], pairs[1::2]):
                a -= shift
                if not 0 <= a < n_attr:
                    log.error("out-of-range", path, lineno, f"attribute {a + shift} out of range "
                              f"({shift}..{n_attr - 1 + shift})")
                    continue
                if not 0 <= v < self.meta.num_values[a]:
                    log.error("out-of-range", path, lineno, f"value {v} out of range for attribute "
                              f"{self.meta.names[a]} (0..{self.meta.num_values[a] - 1})")
                    continue
                key = (image_id, a, v) if multi else (image_id, a)
                if key in seen:
                    log.warning("duplicate", path, lineno, f"repeats line {seen[key]} (image {image_id}, attribute "
                                f"{self.meta.names[a]}); kept once")
                    continue
                seen[key] = lineno
                ids.append(image_id)
                attrs.append(a)
                vals.append(v)
        if not ids and path.is_file():
            log.error("empty", path, None, f"no samples; expected lines of {expected}")
        return SampleTable(np.asarray(ids, np.int64), np.asarray(attrs, np.int64), np.asarray(vals, np.int64))
