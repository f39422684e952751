"""Attribute-specific retrieval scenarios (``family = "attribute"``): ranking (MAP) or triplet
(accuracy) evaluation per attribute, read from ASEN meta data, UT-Zappos50k or a generated
synthetic copy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset

from cl_fir.config import RunConfig, apply_section
from cl_fir.data.asen_meta import AsenMetaDataset, AttributeMeta, SampleTable
from cl_fir.data.combined import CombinedSource
from cl_fir.data.image_check import LEVELS, check_images
from cl_fir.data.image_dataset import SampleImageDataset
from cl_fir.data.label_fraction import hide_values, labelled_mask
from cl_fir.data.problems import ProblemLog
from cl_fir.data.transforms import build_reader, build_transforms
from cl_fir.data.zappos import DEFAULT_KEY as ZAPPOS_KEY
from cl_fir.data.zappos import TripletTable, ZapposDataset
from cl_fir.errors import ConfigError, DataFormatError
from cl_fir.runtime import avalanche
from cl_fir.scenario.spec import ScenarioSpec, cache_dir
from cl_fir.scenario.tasks import EvalTask, Increment, IncrementViews, RankingTask, TripletTask


class Scenario(IncrementViews):
    """A built scenario: increments, the Avalanche benchmark and the evaluation tasks.

    Every image the scenario uses is checked when it is built (``[dataset] image_check``,
    default ``header``); rows with a missing or unreadable image are dropped and counted
    in :attr:`data_report`, or the build fails with ``strict``.
    """

    def __init__(self, spec: ScenarioSpec, cfg: RunConfig, progress_factory=None, strict: bool = False):
        self.spec = spec
        self.name = spec.name
        self.source, check_level = _open_source(spec, cfg, progress_factory)
        self.protocol: str = self.source.protocol
        self.evaluation = EVALUATIONS[self.protocol]
        #: evaluation relevance is by attribute value (class means, prioritised retrieval, label fractions)
        self.has_values: bool = self.evaluation.has_values
        self.meta: AttributeMeta = self.source.meta
        groups = _increment_groups(spec, self.meta)
        attrs_used = [a for g in groups for a in g]
        split = cfg.eval.split

        train_all = self.source.train_samples().for_attributes(attrs_used)
        evaluation, eval_ids = self.evaluation.read(self.source, split, attrs_used)
        train_paths = self.source.image_paths("train")
        eval_paths = self.source.image_paths(split)
        bad_train, bad_eval, self.data_report = _check_images(
            train_paths, np.unique(train_all.image_ids), eval_paths, np.unique(eval_ids), check_level,
            cache_dir(cfg), progress_factory)
        if strict and self.data_report["bad_images"]:
            examples = "; ".join(self.data_report["examples"])
            raise DataFormatError(
                f"{self.data_report['bad_images']} of {self.data_report['checked_images']} images of scenario "
                f"{spec.name} are missing or unreadable ({examples}); without --strict they are skipped and "
                f"counted; `cl-fir data verify` lists them all")
        warnings = self.source.problems.warnings
        self.data_report["file_warnings"] = self.source.problems.counts("warning")
        self.data_report["file_warning_examples"] = [str(w) for w in warnings[:3]]
        n_train = len(train_all)
        train_all = train_all.subset(~np.isin(train_all.image_ids, bad_train))
        self._skipped("train", n_train - len(train_all))

        train_tf, eval_tf = build_transforms(cfg.transforms)
        self.cfg_transforms = cfg.transforms
        self.reader = build_reader(cfg.transforms)
        self.image_datasets: list[SampleImageDataset] = []
        self.increments: list[Increment] = []
        train_sets = []
        self.label_fraction, label_seed = _label_fraction(spec, self.evaluation)
        for i, attrs in enumerate(groups):
            table = train_all.for_attributes(attrs)
            missing = [self.meta.names[a] for a in attrs if not np.any(table.attributes == a)]
            if missing:
                raise ConfigError(f"{spec.path}: increment {i + 1} attribute(s) {', '.join(missing)} have no "
                                  f"training samples")
            unlabelled = None
            if self.label_fraction < 1.0:
                labelled = labelled_mask(table, self.label_fraction, label_seed)
                table, unlabelled = table.subset(labelled), hide_values(table.subset(~labelled))
            self.increments.append(Increment(i, tuple(attrs), table, unlabelled))
            raw = self._dataset(train_paths, table)
            train_sets.append(avalanche.task_aware_dataset(raw, raw.task_labels, train_tf, eval_tf))

        self.eval_tasks: dict[int, EvalTask] = {}
        test_sets = []
        for inc in self.increments:
            images = []
            for a in inc.attributes:
                self.eval_tasks[a], task_images = self.evaluation.task(self, a, evaluation, bad_eval, eval_paths,
                                                                       eval_tf, split)
                images += task_images
            raw = self._dataset(eval_paths, SampleTable.concat(images))
            test_sets.append(avalanche.task_aware_dataset(raw, raw.task_labels, train_tf, eval_tf))
        #: The Avalanche benchmark: ``benchmark.train_stream[i]`` is increment ``i``.
        self.benchmark = avalanche.benchmark(train_sets, test_sets)

    def _skipped(self, key: str, n: int) -> None:
        rows = self.data_report["skipped_rows"]
        rows[key] = rows.get(key, 0) + int(n)

    def _dataset(self, paths, table: SampleTable, transform=None) -> SampleImageDataset:
        ds = SampleImageDataset(paths, table, self.meta.class_offsets, transform, self.reader)
        self.image_datasets.append(ds)
        return ds

    def log_load_failures_to(self, path: Path | None) -> None:
        """Images that fail to load during the run are replaced, and each failure is appended here."""
        for ds in self.image_datasets:
            ds.failure_log = None if path is None else str(path)

    def _build_training_data(self, increment_indices: list[int]) -> tuple[Any, SampleTable]:
        """The train-transformed dataset of the given increments and its aligned sample table."""
        datasets = [self.benchmark.train_stream[i].dataset.train() for i in increment_indices]
        table = SampleTable.concat([self.increments[i].train_table for i in increment_indices])
        return (datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)), table

    def unlabelled_data(self, increment_indices: list[int]) -> tuple[Any, SampleTable]:
        """The train-transformed unlabelled images of the given increments and their table
        (values hidden as -1); for strategies with ``uses_unlabelled``."""
        tables = [self.increments[i].unlabelled_table for i in increment_indices]
        if any(t is None for t in tables):
            raise ConfigError(f"scenario {self.name} has no unlabelled data (set [increments] label_fraction < 1)")
        table = SampleTable.concat(tables)
        train_tf, _ = build_transforms(self.cfg_transforms)
        return self._dataset(self.source.image_paths("train"), table, train_tf), table

    def dataset_of_task(self, attribute: int) -> str:
        """The dataset an attribute comes from (several only in cross-dataset scenarios)."""
        of = getattr(self.source, "dataset_of_attribute", None)
        return of(attribute) if of else self.source.key

    def describe(self) -> dict:
        """For run.json; increments are numbered from 1, as in every output file."""
        return {
            "name": self.name,
            "file": self.spec.path,
            "dataset": self.meta.dataset,
            "protocol": self.protocol,
            "label_fraction": self.label_fraction,
            "data_root": str(self.source.data_root),
            "increments": [[self.meta.names[a] for a in inc.attributes] for inc in self.increments],
            "tasks": [
                {"name": self.meta.names[a], "attribute": a, "increment": int(i) + 1,
                 "dataset": self.dataset_of_task(a),
                 "num_values": self.meta.num_values[a] if self.evaluation.has_values else None,
                 "num_train": int(np.sum(self.increments[i].train_table.attributes == a)),
                 "num_unlabelled": (int(np.sum(self.increments[i].unlabelled_table.attributes == a))
                                    if self.increments[i].unlabelled_table is not None else 0),
                 "num_queries": self.eval_tasks[a].num_queries, "num_candidates": self.eval_tasks[a].num_candidates}
                for a, i in zip(self.tasks, self.task_increment)
            ],
            "data": self.data_report,
        }


class RankingEvaluation:
    """ASEN's protocol: per attribute, queries ranked against candidates; relevant = same value."""

    name = "ranking"
    has_values = True      # attribute values: label fractions, class means, prioritised retrieval

    @staticmethod
    def read(source, split: str, attributes: list[int]):
        """The query and candidate tables of the attributes, and every image id they use."""
        tables = {role: source.eval_samples(split, role).for_attributes(attributes) for role in ("query", "candidate")}
        return tables, np.concatenate([t.image_ids for t in tables.values()])

    @staticmethod
    def task(scenario: Scenario, a: int, tables: dict, bad: np.ndarray, paths, transform, split: str):
        """The attribute's queries and candidates without bad images; and its sample tables."""
        q, c = (tables[r].for_attributes([a]) for r in ("query", "candidate"))
        usable_q, usable_c = (t.subset(~np.isin(t.image_ids, bad)) for t in (q, c))
        scenario._skipped("query", len(q) - len(usable_q))
        scenario._skipped("candidate", len(c) - len(usable_c))
        if len(usable_q) == 0 or len(usable_c) == 0:
            raise ConfigError(
                f"{scenario.source.folder}: attribute {scenario.meta.names[a]} has {len(usable_q)} queries and "
                f"{len(usable_c)} candidates with usable images in split {split!r}; both must be non-empty")
        task = RankingTask(a, scenario.meta.names[a], scenario._dataset(paths, usable_q, transform),
                           scenario._dataset(paths, usable_c, transform))
        return task, [usable_q, usable_c]


class TripletEvaluation:
    """CSN's protocol (UT-Zappos50k): per condition, test triplets scored by accuracy."""

    name = "triplet"
    has_values = False

    @staticmethod
    def read(source, split: str, attributes: list[int]):
        triplets = source.eval_triplets(split).for_attributes(attributes)
        return triplets, triplets.image_ids()

    @staticmethod
    def task(scenario: Scenario, a: int, triplets: TripletTable, bad: np.ndarray, paths, transform, split: str):
        """The condition's test triplets without bad images, as indices into its image set."""
        t = triplets.for_attributes([a])
        keep = ~(np.isin(t.anchors, bad) | np.isin(t.far, bad) | np.isin(t.close, bad))
        scenario._skipped("triplets", (~keep).sum())
        t = t.subset(keep)
        if len(t) == 0:
            raise ConfigError(f"{scenario.source.folder}: condition {scenario.meta.names[a]} has no test triplets "
                              f"with usable images in split {split!r}")
        ids = t.image_ids()                    # sorted and unique
        images = SampleTable(ids, np.full(len(ids), a, np.int64), np.zeros(len(ids), np.int64))
        index = [np.searchsorted(ids, col) for col in (t.anchors, t.far, t.close)]
        return TripletTask(a, scenario.meta.names[a], scenario._dataset(paths, images, transform), *index), [images]


#: a source's ``protocol`` -> how its evaluation tasks are read and built
EVALUATIONS = {e.name: e for e in (RankingEvaluation(), TripletEvaluation())}


READERS = ("synthfashion", "synthfashion-flat", "asen-meta", "zappos")


def _generated_source(reader: str, params: dict, where: str, cfg: RunConfig, progress_factory) -> AsenMetaDataset:
    """A generated synthetic copy (made on first use, then cached), read as ASEN meta data."""
    if reader == "synthfashion":
        from cl_fir.data import synthfashion as generator
        ensure = generator.ensure_synthfashion
    else:
        from cl_fir.data import synthfashion_flat as generator
        ensure = generator.ensure_synthfashion_flat
    synth = generator.SynthFashionConfig()
    apply_section(synth, params, where)
    root = ensure(synth, cache_dir(cfg), progress_factory=progress_factory)
    return AsenMetaDataset(root, generator.DATASET_KEY)


def _open_source(spec: ScenarioSpec, cfg: RunConfig, progress_factory):
    """The dataset reader named by ``[dataset] reader``, and the image check level."""
    params = dict(spec.dataset)
    reader = params.pop("reader", None)
    where = f"{spec.path} [dataset]"
    level = params.pop("image_check", "header")
    if level not in LEVELS:
        raise ConfigError(f"{where}: image_check must be one of {', '.join(LEVELS)}, got {level!r}")
    if reader in ("synthfashion", "synthfashion-flat"):
        return _generated_source(reader, params, where, cfg, progress_factory), level
    if reader not in READERS:
        raise ConfigError(f"{where}: reader must be one of {', '.join(READERS)}, got {reader!r}")
    data_root = cfg.data_root or os.environ.get("CL_FIR_DATA")
    if not data_root:
        raise ConfigError(f"scenario {spec.name} reads real data: give --data-root DIR or set CL_FIR_DATA "
                          f"(the folder holding meta.json and the dataset folders; see `cl-fir data verify`)")
    if reader == "zappos":
        key = params.pop("key", ZAPPOS_KEY)
        if params:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(params))} for reader 'zappos'")
        return ZapposDataset(data_root, key), level
    keys = params.pop("keys", None)
    key = params.pop("key", None)
    if params:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(params))} for reader 'asen-meta'")
    if (key is None) == (keys is None):
        raise ConfigError(f"{where}: reader 'asen-meta' needs key = \"<dataset name in meta.json>\" or "
                          f"keys = [\"<first>\", \"<second>\", ...] (a cross-dataset sequence)")
    if keys is not None:
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise ConfigError(f"{where}: keys must be a non-empty list of dataset names, got {keys!r}")
        problems = ProblemLog()
        return CombinedSource([AsenMetaDataset(data_root, k, problems) for k in keys]), level
    return AsenMetaDataset(data_root, key), level


def _check_images(train_paths, train_ids, eval_paths, eval_ids, level, cache_dir, progress_factory):
    """Check the images behind the used ids; return the bad train ids, bad eval ids and a report.

    Paths found under another extension replace the listed ones in ``train_paths`` /
    ``eval_paths`` (in place).
    """
    wanted = [(train_paths, int(i)) for i in train_ids] + [(eval_paths, int(i)) for i in eval_ids]
    paths = list(dict.fromkeys(listing[i] for listing, i in wanted))
    check = check_images(paths, level, cache_dir, progress_factory)
    index = {p: k for k, p in enumerate(paths)}
    slots = [index[listing[i]] for listing, i in wanted]
    n_train = len(train_ids)
    bad_train = np.asarray([i for (_, i), k in zip(wanted[:n_train], slots) if k in check.bad], dtype=np.int64)
    bad_eval = np.asarray([i for (_, i), k in zip(wanted[n_train:], slots[n_train:]) if k in check.bad], dtype=np.int64)
    for (listing, i), k in zip(wanted, slots):
        listing[i] = check.paths[k]
    report = {
        "image_check": level,
        "checked_images": len(paths),
        "bad_images": check.num_bad,
        "bad_by_reason": check.reasons(),
        "other_extension": check.other_extension,
        "examples": [f"{paths[k]}: {r}" for k, r in list(check.bad.items())[:3]],
        "skipped_rows": {},
    }
    return bad_train, bad_eval, report


_LABEL_KEYS = ("label_fraction", "label_seed")


def _label_fraction(spec: ScenarioSpec, evaluation: "RankingEvaluation | TripletEvaluation") -> tuple[float, int]:
    where = f"{spec.path} [increments]"
    fraction = spec.increments.get("label_fraction", 1.0)
    seed = spec.increments.get("label_seed", 0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"{where}: label_fraction must be a number in (0, 1] (e.g. 0.1 for 10%), got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{where}: label_seed must be an integer, got {seed!r}")
    if fraction < 1 and not evaluation.has_values:
        raise ConfigError(f"{where}: label_fraction applies to attribute values (ranking protocol); the "
                          f"{evaluation.name} protocol has no values to hide")
    return float(fraction), seed


def _increment_groups(spec: ScenarioSpec, meta: AttributeMeta) -> list[list[int]]:
    inc = {k: v for k, v in spec.increments.items() if k not in _LABEL_KEYS}
    where = f"{spec.path} [increments]"
    if set(inc) - {"groups", "attributes"} or len(inc) != 1:
        raise ConfigError(f"{where}: give exactly one of groups = N or attributes = [[...], ...]")
    if "groups" in inc:
        n = inc["groups"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= meta.num_attributes \
                or meta.num_attributes % n:
            raise ConfigError(
                f"{where}: groups must divide the {meta.num_attributes} attributes of {meta.dataset} evenly, got {n!r}"
            )
        size = meta.num_attributes // n
        return [list(range(k * size, (k + 1) * size)) for k in range(n)]
    groups = inc["attributes"]
    if not isinstance(groups, list) or not groups or not all(isinstance(g, list) and g for g in groups):
        raise ConfigError(f"{where}: attributes must be a non-empty list of non-empty lists of attribute names")
    ids = [[meta.index(str(name)) for name in g] for g in groups]
    flat = [a for g in ids for a in g]
    if len(flat) != len(set(flat)):
        raise ConfigError(f"{where}: an attribute appears in more than one increment")
    return ids
