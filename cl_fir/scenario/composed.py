"""Composed image retrieval scenarios (``family = "composed"``): reference image +
modification text -> target image, made class-incremental by category.

A task is a category (FashionIQ: dress, shirt, toptee; synth-cir: a garment type). Each
increment trains on its categories' training triplets; after each increment every seen
category is evaluated on its own queries against its gallery, with Recall@1/10/50
(primary: Recall@10) in the same matrix machinery as the attribute family. The query is
the reference image with the captions joined by " and " (CLIP4Cir's rule for FashionIQ's
two captions); the reference is removed from its own ranking when it is in the gallery.

Readers: ``synth-cir`` (generated, offline), ``fashioniq``, ``shoes``, ``fashion200k``.
``[dataset] gallery = "split" | "val"`` picks FashionIQ's gallery rule and ``shared_images
= "keep" | "drop"`` the handling of the ASINs shared by shirt and toptee (docs/datasets.md,
FashionIQ). Shoes and Fashion200k rank every category's queries against the whole
evaluation gallery (ARTEMIS's and TIRG's rule); on Fashion200k every image with the
target's caption is a correct answer, and training uses the first of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from cl_fir.config import RunConfig
from cl_fir.data.asen_meta import AttributeMeta, SampleTable
from cl_fir.data.composed import (FASHION200K_CATEGORIES, FASHIONIQ_CATEGORIES, SHOES_CATEGORIES, ComposedSplit,
                                  read_fashion200k, read_fashioniq, read_shoes)
from cl_fir.data.image_check import check_images
from cl_fir.data.problems import ProblemLog
from cl_fir.data.transforms import build_reader, build_transforms
from cl_fir.errors import ConfigError
from cl_fir.runtime import avalanche
from cl_fir.scenario.spec import cache_dir
from cl_fir.scenario.tasks import IncrementViews


@dataclass
class ComposedIncrement:
    index: int
    attributes: tuple[int, ...]          # task (category) ids, named as in the attribute family
    train_table: SampleTable             # image_ids = triplet index, attributes = task, values = 0
    unlabelled_table: None = None


class _Images:
    """Lazy images by key: read by ``reader`` (``data/transforms.py``, ``build_reader``), transformed."""

    def __init__(self, paths: dict[str, Path], transform, reader):
        self.paths, self.transform, self.reader = paths, transform, reader

    def __call__(self, key: str):
        return self.transform(self.reader(self.paths[key]))


class ComposedTripletDataset(Dataset):
    """Item i: ``(reference image, text, target image, task)`` of training triplet i."""

    def __init__(self, rows: list[tuple[str, str, str, int]], images: _Images):
        self.rows, self.images = rows, images

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        ref, text, tgt, task = self.rows[i]
        return self.images(ref), text, self.images(tgt), task


class _QueryDataset(Dataset):
    def __init__(self, rows: list[tuple[str, str]], images: _Images):
        self.rows, self.images = rows, images

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        ref, text = self.rows[i]
        return self.images(ref), text


class _GalleryDataset(Dataset):
    def __init__(self, keys: list[str], images: _Images):
        self.keys, self.images = keys, images

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):
        return self.images(self.keys[i]), 0


@dataclass
class ComposedTask:
    attribute: int
    name: str
    queries: _QueryDataset
    gallery: _GalleryDataset
    targets: list[list[int]]                # gallery indices that answer each query
    excluded: list[int | None]              # the reference's gallery index, removed from its ranking

    @property
    def num_queries(self) -> int:
        return len(self.queries)

    @property
    def num_candidates(self) -> int:
        return len(self.gallery)


def query_text(texts: list[str]) -> str:
    return " and ".join(t.strip() for t in texts if t.strip())


class ComposedScenario(IncrementViews):
    protocol = "composed"
    label_fraction = 1.0
    has_values = False       # a query's answers are gallery images, not attribute values

    def __init__(self, spec, cfg: RunConfig, progress_factory=None, strict: bool = False):
        self.spec = spec
        self.name = spec.name
        params = dict(spec.dataset)
        reader = params.pop("reader", None)
        where = f"{spec.path} [dataset]"
        check_level = params.pop("image_check", "header")
        if reader == "synth-cir":
            from cl_fir.data.synth_composed import SynthComposedConfig, ensure_synth_composed
            from cl_fir.data.synth_cache import default_cache_dir

            cache = Path(cfg.cache_dir or os.environ.get("CL_FIR_CACHE") or default_cache_dir())
            gallery = params.pop("gallery", "split")
            try:
                gen = SynthComposedConfig(**params)
            except TypeError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            root, categories = ensure_synth_composed(gen, cache), None
            options = {"extension": "png", "gallery": gallery}
            dataset_name = "synth-cir"
        elif reader in _REAL:
            data_root = cfg.data_root or os.environ.get("CL_FIR_DATA")
            name, folder, allowed, _default = _REAL[reader]
            if not data_root:
                raise ConfigError(f"scenario {spec.name} reads {name}: give --data-root DIR (or set CL_FIR_DATA)")
            root, dataset_name = Path(data_root), name
            categories = params.pop("categories", None)
            options = {k: params.pop(k) for k in allowed if k in params}
            if params:
                raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(params))} for the {reader} reader")
        else:
            raise ConfigError(f"{where}: reader must be one of synth-cir, {', '.join(_REAL)} for the composed "
                              f"family, got {reader!r}")
        from cl_fir.data.synth_composed import CATEGORIES

        all_categories = tuple(categories or (CATEGORIES if reader == "synth-cir" else _REAL[reader][3]))
        self.data_root = root
        self.problems = ProblemLog()
        try:
            train, test = _read_splits(reader, root, all_categories, cfg.eval.split, self.problems, options)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        groups = _composed_groups(spec, all_categories)
        self.meta = AttributeMeta(dataset_name, tuple(all_categories), (1,) * len(all_categories))
        self.data_report = self._check(train, test, check_level, cfg, progress_factory, strict)
        train_tf, eval_tf = build_transforms(cfg.transforms)
        reader = build_reader(cfg.transforms)
        self._train_images = _Images(train.image_path, train_tf, reader)
        eval_images = _Images(test.image_path, eval_tf, reader)
        self._rows, self._row_ranges, self.increments = [], [], []
        bad = self._bad
        for i, group in enumerate(groups):
            start = len(self._rows)
            for q in train.queries:
                task = all_categories.index(q.category)
                if task in group and q.targets and q.reference not in bad and q.targets[0] not in bad:
                    self._rows.append((q.reference, query_text(q.texts), q.targets[0], task))
            ids = np.arange(start, len(self._rows))
            tasks = np.asarray([r[3] for r in self._rows[start:]], dtype=np.int64)
            missing = [all_categories[a] for a in group if not np.any(tasks == a)]
            if missing:
                raise ConfigError(f"{spec.path}: increment {i + 1} category(ies) {', '.join(missing)} have no usable "
                                  f"training triplets")
            self.increments.append(ComposedIncrement(i, tuple(group), SampleTable(ids, tasks, np.zeros_like(ids))))
            self._row_ranges.append((start, len(self._rows)))
        self._test_rows: dict[int, list] = {}
        self.eval_tasks = {a: self._task(a, test, eval_images) for inc in self.increments for a in inc.attributes}
        #: The Avalanche benchmark: one experience per increment; items are ``(reference image, text, target
        #: image, category)``, classes and task labels are the categories. The test stream holds each
        #: query with its first target; retrieval is scored against the galleries of ``eval_tasks``.
        self.benchmark = avalanche.benchmark(
            [self._tagged(self._rows[lo:hi], self._train_images) for lo, hi in self._row_ranges],
            [self._tagged([r for a in inc.attributes for r in self._test_rows[a]], eval_images)
             for inc in self.increments])

    @staticmethod
    def _tagged(rows: list, images: "_Images"):
        tasks = [r[3] for r in rows]
        return avalanche.tagged_dataset(ComposedTripletDataset(rows, images), tasks, tasks)

    # ------------------------------------------------------------------ building

    def _check(self, train: ComposedSplit, test: ComposedSplit, level, cfg, progress_factory, strict) -> dict:
        paths = {**train.image_path, **test.image_path}
        keys = sorted(paths)
        check = check_images([paths[k] for k in keys], level, cache_dir(cfg), progress_factory)
        self._bad = {keys[i] for i in check.bad}
        if strict and self._bad:
            raise ConfigError(f"{len(self._bad)} of {len(keys)} images of scenario {self.name} are missing or "
                              f"unreadable; without --strict they are skipped and counted")
        return {"checked_images": len(keys), "bad_images": len(self._bad), "bad_by_reason": check.reasons(),
                "other_extension": check.other_extension, "examples": [], "skipped_rows": {},
                "file_warnings": self.problems.counts("warning"), "file_warning_examples": [],
                "shared_images": train.counts.get("shared_images", 0)}

    def _task(self, a: int, test: ComposedSplit, images: _Images) -> ComposedTask:
        name = self.meta.names[a]
        shared = test.galleries.get(name, test.galleries.get("*", []))   # Shoes, Fashion200k: one gallery
        gallery = [k for k in shared if k not in self._bad]
        index = {k: i for i, k in enumerate(gallery)}
        queries, targets, excluded = [], [], []
        skipped = 0
        for q in test.queries:
            if q.category != name:
                continue
            if q.reference in self._bad or not q.targets or not all(t in index for t in q.targets):
                skipped += 1
                continue
            queries.append((q.reference, query_text(q.texts)))
            self._test_rows.setdefault(a, []).append((q.reference, query_text(q.texts), q.targets[0], a))
            targets.append([index[t] for t in q.targets])
            excluded.append(index.get(q.reference))
        rows = self.data_report["skipped_rows"]
        rows["query"] = rows.get("query", 0) + skipped
        if not queries or not gallery:
            raise ConfigError(f"{self.data_root}: category {name} has {len(queries)} usable queries and "
                              f"{len(gallery)} gallery images; both must be non-empty")
        return ComposedTask(a, name, _QueryDataset(queries, images), _GalleryDataset(gallery, images), targets,
                            excluded)

    # ------------------------------------------------------------------ data

    def _build_training_data(self, increment_indices: list[int]) -> tuple[Any, SampleTable]:
        """The benchmark's training datasets of these increments, concatenated; the table's
        image_ids index the concatenation (the increments' triplet ids shifted to it)."""
        datasets, tables, offset = [], [], 0
        for i in increment_indices:
            start, stop = self._row_ranges[i]
            t = self.increments[i].train_table
            tables.append(SampleTable(t.image_ids - start + offset, t.attributes, t.values))
            datasets.append(self.benchmark.train_stream[i].dataset)
            offset += stop - start
        return (datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)), SampleTable.concat(tables)

    def training_texts(self) -> list[str]:
        """Every training query text of every increment (the vocabulary's source)."""
        return [r[1] for r in self._rows]

    def dataset_of_task(self, attribute: int) -> str:
        return self.meta.dataset

    def log_load_failures_to(self, path) -> None:
        pass

    def describe(self) -> dict:
        return {
            "name": self.name, "file": self.spec.path, "dataset": self.meta.dataset, "protocol": self.protocol,
            "label_fraction": 1.0, "data_root": str(self.data_root),
            "increments": [[self.meta.names[a] for a in inc.attributes] for inc in self.increments],
            "tasks": [{"name": self.meta.names[a], "attribute": a, "increment": int(i) + 1,
                       "dataset": self.meta.dataset, "num_values": None,
                       "num_train": int(np.sum(self.increments[i].train_table.attributes == a)), "num_unlabelled": 0,
                       "num_queries": self.eval_tasks[a].num_queries,
                       "num_candidates": self.eval_tasks[a].num_candidates}
                      for a, i in zip(self.tasks, self.task_increment)],
            "data": self.data_report,
        }


#: reader -> (dataset name, folder, accepted [dataset] keys, categories in order)
_REAL = {
    "fashioniq": ("FashionIQ", "fashionIQ", ("gallery", "shared_images", "extension"), FASHIONIQ_CATEGORIES),
    "shoes": ("Shoes", "shoes", (), SHOES_CATEGORIES),
    "fashion200k": ("Fashion200k", "fashion200k", (), FASHION200K_CATEGORIES),
}


def _read_splits(reader: str, root: Path, categories, eval_split: str, problems: ProblemLog, options: dict):
    """(train, evaluation) splits: FashionIQ train/val (test targets are withheld), Shoes
    train/eval, Fashion200k train/test; synth-cir is written as FashionIQ."""
    if reader in ("synth-cir", "fashioniq"):
        folder = root / "fashionIQ"
        return (read_fashioniq(folder, "train", categories, problems=problems, **options),
                read_fashioniq(folder, "val", categories, problems=problems, **options))
    if reader == "shoes":
        return read_shoes(root / "shoes", "train", problems), read_shoes(root / "shoes", "eval", problems)
    folder = root / "fashion200k"
    return (read_fashion200k(folder, "train", categories, problems),
            read_fashion200k(folder, "test", categories, problems))


def _composed_groups(spec, categories: tuple[str, ...]) -> list[list[int]]:
    inc = spec.increments
    where = f"{spec.path} [increments]"
    if "groups" in inc:
        n = inc["groups"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or len(categories) % n:
            raise ConfigError(f"{where}: groups must divide the {len(categories)} categories evenly, got {n!r}")
        size = len(categories) // n
        return [list(range(k * size, (k + 1) * size)) for k in range(n)]
    groups = inc.get("categories")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, list) and g for g in groups):
        raise ConfigError(f"{where}: give groups = N or categories = [[\"dress\"], [\"shirt\"], ...]")
    out = []
    for g in groups:
        for name in g:
            if name not in categories:
                raise ConfigError(f"{where}: unknown category {name!r}; expected one of {', '.join(categories)}")
        out.append([categories.index(name) for name in g])
    flat = [a for g in out for a in g]
    if len(flat) != len(set(flat)):
        raise ConfigError(f"{where}: a category appears in more than one increment")
    return out
