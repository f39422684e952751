"""Scenarios: a dataset, a task family and an ordered split of its tasks into increments.

A scenario is one TOML file (shipped ones live in ``scenarios/``; ``--scenario`` also
takes a path). Its sections:

``name``, ``description``, ``family``
    identification; ``family`` is ``"attribute"`` (attribute-specific retrieval).
``[dataset]``
    ``reader`` = ``"synthfashion"`` (generated on first use; the other keys are the
    generator's :class:`~cl_fir.data.synthfashion.SynthFashionConfig`; ``"synthfashion-flat"``
    is the earlier generator, kept to reproduce numbers measured on it), ``"asen-meta"``
    (FashionAI, DARN, DeepFashion; read from ``--data-root``/``CL_FIR_DATA``; ``key``
    names the dataset in meta.json, or ``keys = [...]`` chains several datasets into one
    cross-dataset sequence) or ``"zappos"`` (UT-Zappos50k, CSN split; evaluated by
    triplet accuracy). ``image_check`` = ``"exists"``, ``"header"`` (default) or
    ``"decode"``: how every used image is checked before training (see
    :mod:`cl_fir.data.image_check`).
``[increments]``
    ``groups = N`` (contiguous equal groups in meta order, docs/scenarios.md) or
    ``attributes = [["a", "b"], ["c"], ...]`` (explicit, by attribute name).
``[model]``, ``[train]``, ``[loss]``, ``[eval]``, ``[transforms]``
    defaults for the run configuration (see :mod:`cl_fir.config`).
``[strategies.<name>]``
    defaults for one strategy's options on this scenario (``--opt`` still wins), e.g. a
    shorter EMA horizon where increments have few steps.

Building a scenario yields a real Avalanche benchmark (one experience per increment,
task label = attribute id, class = (attribute, value)) plus, for every task, the
evaluation set: query and candidate sets (ranking protocol, MAP) or test triplets
(triplet protocol, accuracy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset

from cl_fir import avalanche_compat, readback
from cl_fir.config import SECTIONS, RunConfig, apply_section
from cl_fir.data.asen_meta import AsenMetaDataset, AttributeMeta, SampleTable
from cl_fir.data.combined import CombinedSource
from cl_fir.data.image_check import LEVELS, check_images
from cl_fir.data.image_dataset import SampleImageDataset
from cl_fir.data.problems import ProblemLog
from cl_fir.data.synth_cache import default_cache_dir
from cl_fir.data.transforms import build_reader, build_transforms
from cl_fir.data.zappos import DEFAULT_KEY as ZAPPOS_KEY
from cl_fir.data.label_fraction import hide_values, labelled_mask
from cl_fir.data.zappos import TripletTable, ZapposDataset
from cl_fir.errors import ConfigError, DataFormatError

FAMILIES = ("attribute", "composed")
_TOP_KEYS = {"name", "description", "family", "dataset", "increments", "strategies", *SECTIONS}


@dataclass
class ScenarioSpec:
    """The parsed TOML file, before any data is touched."""

    name: str
    path: str
    description: str
    family: str
    dataset: dict
    increments: dict
    sections: dict[str, dict] = field(default_factory=dict)
    strategy_defaults: dict[str, dict] = field(default_factory=dict)


def available_scenarios() -> dict[str, Path]:
    folder = resources.files("cl_fir.scenarios")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def _scenario_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    path = Path(name_or_path)
    if relative_to is not None and not path.is_absolute() and (relative_to.parent / path).is_file():
        return relative_to.parent / path
    if not (name_or_path.endswith(".toml") or path.is_file()):
        shipped = available_scenarios()
        if name_or_path not in shipped:
            raise ConfigError(
                f"unknown scenario {name_or_path!r}; available: {', '.join(sorted(shipped))} "
                f"(or give a path to a scenario .toml file)"
            )
        path = shipped[name_or_path]
    if not path.is_file():
        raise ConfigError(f"{path}: scenario file does not exist")
    return path


def _read_scenario_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The file's tables; with ``extends = "<scenario or path>"``, merged over that scenario's
    (tables merged key by key, this file winning; a ``groups`` or ``attributes`` split in
    ``[increments]`` replaces the base's split)."""
    raw = readback.read_toml(path)
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str):
        raise ConfigError(f"{path}: extends must be a scenario name or a path, got {base_name!r}")
    base_path = _scenario_path(base_name, path)
    if base_path.resolve() in seen:
        raise ConfigError(f"{path}: extends {base_name!r} makes a cycle")
    merged = _read_scenario_toml(base_path, (*seen, path.resolve()))
    merged.pop("description", None)
    if isinstance(raw.get("increments"), dict) and {"groups", "attributes"} & set(raw["increments"]) \
            and isinstance(merged.get("increments"), dict):   # a new split replaces the base's, not merges with it
        merged["increments"] = {k: v for k, v in merged["increments"].items() if k not in ("groups", "attributes")}
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_tables(merged[key], value)
        else:
            merged[key] = value
    return merged


def _merge_tables(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge_tables(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def load_spec(name_or_path: str) -> ScenarioSpec:
    """Load a shipped scenario by name, or any scenario TOML file by path."""
    path = _scenario_path(name_or_path)
    raw = _read_scenario_toml(path)
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(_TOP_KEYS))}")
    for key in ("name", "dataset", "increments"):
        if key not in raw:
            raise ConfigError(f"{path}: missing required key {key!r}")
    family = raw.get("family", "attribute")
    if family not in FAMILIES:
        raise ConfigError(f"{path}: family {family!r} is not supported yet; expected one of {', '.join(FAMILIES)}")
    for key in ("dataset", "increments", "strategies", *SECTIONS):
        if key in raw and not isinstance(raw[key], dict):
            raise ConfigError(f"{path}: [{key}] must be a table")
    strategies = raw.get("strategies", {})
    for name, values in strategies.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [strategies.{name}] must be a table of option = value")
    return ScenarioSpec(
        name=str(raw["name"]), path=str(path), description=str(raw.get("description", "")), family=family,
        dataset=dict(raw["dataset"]), increments=dict(raw["increments"]),
        sections={s: dict(raw[s]) for s in SECTIONS if s in raw},
        strategy_defaults={name: dict(values) for name, values in strategies.items()},
    )


def build_scenario(spec: ScenarioSpec, cfg: RunConfig, progress_factory=None, strict: bool = False):
    """The built scenario of the spec's family."""
    if spec.family == "composed":
        from cl_fir.composed_scenario import ComposedScenario

        return ComposedScenario(spec, cfg, progress_factory, strict)
    return Scenario(spec, cfg, progress_factory, strict)


def apply_spec_defaults(spec: ScenarioSpec, cfg: RunConfig) -> None:
    """Fill the run configuration's sections from the scenario file."""
    for section, values in spec.sections.items():
        apply_section(getattr(cfg, section), values, f"{spec.path} [{section}]")


@dataclass
class Increment:
    index: int
    attributes: tuple[int, ...]
    train_table: SampleTable
    #: training rows whose value is hidden (``[increments] label_fraction`` < 1); values are -1
    unlabelled_table: SampleTable | None = None


@dataclass
class RankingTask:
    """Query and candidate sets of one attribute (ASEN protocol: same attribute, disjoint images)."""

    attribute: int
    name: str
    queries: SampleImageDataset
    candidates: SampleImageDataset

    @property
    def num_queries(self) -> int:
        return len(self.queries)

    @property
    def num_candidates(self) -> int:
        return len(self.candidates)


@dataclass
class TripletTask:
    """Test triplets of one condition (CSN protocol): ``images`` plus index triplets into it."""

    attribute: int
    name: str
    images: SampleImageDataset
    anchors: np.ndarray
    far: np.ndarray
    close: np.ndarray

    @property
    def num_queries(self) -> int:
        return int(self.anchors.shape[0])

    @property
    def num_candidates(self) -> int:
        return len(self.images)


EvalTask = RankingTask | TripletTask


class IncrementViews:
    """Task order views shared by every scenario family (needs ``increments`` and ``meta``)."""

    @property
    def tasks(self) -> list[int]:
        """Task ids (attributes, or categories) in the order they are learned (the matrix columns)."""
        return [a for inc in self.increments for a in inc.attributes]

    @property
    def task_names(self) -> list[str]:
        return [self.meta.names[a] for a in self.tasks]

    @property
    def task_increment(self) -> np.ndarray:
        """For each matrix column, the increment in which that task is learned."""
        return np.asarray([inc.index for inc in self.increments for _ in inc.attributes], dtype=np.int64)

    def seen_tasks(self, increment: int) -> list[int]:
        return [a for inc in self.increments[: increment + 1] for a in inc.attributes]

    def training_data(self, increment_indices: list[int]) -> tuple[Any, SampleTable]:
        """The train-transformed dataset of the given increments and its aligned sample table
        (``_build_training_data``). The last answer is kept: every epoch of an increment gets
        the same dataset object, so the epoch loader keeps its worker processes
        (``train.persistent_workers``). Neither is changed by its users."""
        key = tuple(int(i) for i in increment_indices)
        kept = getattr(self, "_kept_training_data", None)
        if kept is None or kept[0] != key:
            kept = (key, self._build_training_data(list(key)))
            self._kept_training_data = kept
        return kept[1]


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
        self.meta: AttributeMeta = self.source.meta
        groups = _increment_groups(spec, self.meta)
        attrs_used = [a for g in groups for a in g]
        split = cfg.eval.split

        train_all = self.source.train_samples().for_attributes(attrs_used)
        if self.protocol == "ranking":
            eval_tables = {role: self.source.eval_samples(split, role).for_attributes(attrs_used)
                           for role in ("query", "candidate")}
            eval_ids = np.concatenate([t.image_ids for t in eval_tables.values()])
        else:
            triplets = self.source.eval_triplets(split).for_attributes(attrs_used)
            eval_ids = triplets.image_ids()
        train_paths = self.source.image_paths("train")
        eval_paths = self.source.image_paths(split)
        bad_train, bad_eval, self.data_report = _check_images(
            train_paths, np.unique(train_all.image_ids), eval_paths, np.unique(eval_ids), check_level,
            _cache_dir(cfg), progress_factory)
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
        self.label_fraction, label_seed = _label_fraction(spec, self.protocol)
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
            train_sets.append(avalanche_compat.task_aware_dataset(raw, raw.task_labels, train_tf, eval_tf))

        self.eval_tasks: dict[int, EvalTask] = {}
        test_sets = []
        make_task = self._ranking_task if self.protocol == "ranking" else self._triplet_task
        evaluation = eval_tables if self.protocol == "ranking" else triplets
        for inc in self.increments:
            images = []
            for a in inc.attributes:
                self.eval_tasks[a], task_images = make_task(a, evaluation, bad_eval, eval_paths, eval_tf, split)
                images += task_images
            raw = self._dataset(eval_paths, SampleTable.concat(images))
            test_sets.append(avalanche_compat.task_aware_dataset(raw, raw.task_labels, train_tf, eval_tf))
        #: The Avalanche benchmark: ``benchmark.train_stream[i]`` is increment ``i``.
        self.benchmark = avalanche_compat.benchmark(train_sets, test_sets)

    def _skipped(self, key: str, n: int) -> None:
        rows = self.data_report["skipped_rows"]
        rows[key] = rows.get(key, 0) + int(n)

    def _ranking_task(self, a: int, tables: dict, bad: np.ndarray, paths, transform, split: str):
        """The attribute's queries and candidates without bad images; and its sample tables."""
        q, c = (tables[r].for_attributes([a]) for r in ("query", "candidate"))
        usable_q, usable_c = (t.subset(~np.isin(t.image_ids, bad)) for t in (q, c))
        self._skipped("query", len(q) - len(usable_q))
        self._skipped("candidate", len(c) - len(usable_c))
        if len(usable_q) == 0 or len(usable_c) == 0:
            raise ConfigError(
                f"{self.source.folder}: attribute {self.meta.names[a]} has {len(usable_q)} queries and "
                f"{len(usable_c)} candidates with usable images in split {split!r}; both must be non-empty")
        task = RankingTask(a, self.meta.names[a], self._dataset(paths, usable_q, transform),
                           self._dataset(paths, usable_c, transform))
        return task, [usable_q, usable_c]

    def _triplet_task(self, a: int, triplets: TripletTable, bad: np.ndarray, paths, transform, split: str):
        """The condition's test triplets without bad images, as indices into its image set."""
        t = triplets.for_attributes([a])
        keep = ~(np.isin(t.anchors, bad) | np.isin(t.far, bad) | np.isin(t.close, bad))
        self._skipped("triplets", (~keep).sum())
        t = t.subset(keep)
        if len(t) == 0:
            raise ConfigError(f"{self.source.folder}: condition {self.meta.names[a]} has no test triplets with "
                              f"usable images in split {split!r}")
        ids = t.image_ids()                    # sorted and unique
        images = SampleTable(ids, np.full(len(ids), a, np.int64), np.zeros(len(ids), np.int64))
        index = [np.searchsorted(ids, col) for col in (t.anchors, t.far, t.close)]
        return TripletTask(a, self.meta.names[a], self._dataset(paths, images, transform), *index), [images]

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
                 "num_values": self.meta.num_values[a] if self.protocol == "ranking" else None,
                 "num_train": int(np.sum(self.increments[i].train_table.attributes == a)),
                 "num_unlabelled": (int(np.sum(self.increments[i].unlabelled_table.attributes == a))
                                    if self.increments[i].unlabelled_table is not None else 0),
                 "num_queries": self.eval_tasks[a].num_queries, "num_candidates": self.eval_tasks[a].num_candidates}
                for a, i in zip(self.tasks, self.task_increment)
            ],
            "data": self.data_report,
        }


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
    root = ensure(synth, _cache_dir(cfg), progress_factory=progress_factory)
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


def _cache_dir(cfg: RunConfig) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


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


def _label_fraction(spec: ScenarioSpec, protocol: str) -> tuple[float, int]:
    where = f"{spec.path} [increments]"
    fraction = spec.increments.get("label_fraction", 1.0)
    seed = spec.increments.get("label_seed", 0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"{where}: label_fraction must be a number in (0, 1] (e.g. 0.1 for 10%), got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{where}: label_seed must be an integer, got {seed!r}")
    if fraction < 1 and protocol != "ranking":
        raise ConfigError(f"{where}: label_fraction applies to attribute values (ranking protocol); the "
                          f"{protocol} protocol has no values to hide")
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
