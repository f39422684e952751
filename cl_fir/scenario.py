"""Scenarios: a dataset, a task family and an ordered split of its tasks into increments.

A scenario is one TOML file (shipped ones live in ``scenarios/``; ``--scenario`` also
takes a path). Its sections:

``name``, ``description``, ``family``
    identification; ``family`` is ``"attribute"`` (attribute-specific retrieval).
``[dataset]``
    ``reader`` = ``"synthfashion"`` (generated on first use; the other keys are the
    generator's :class:`~cl_fir.data.synthfashion.SynthFashionConfig`) or ``"asen-meta"``
    (read from ``--data-root``/``CL_FIR_DATA``; ``key`` names the dataset in meta.json).
``[increments]``
    ``groups = N`` (contiguous equal groups in meta order, reference/mclfir.md 1.1) or
    ``attributes = [["a", "b"], ["c"], ...]`` (explicit, by attribute name).
``[model]``, ``[train]``, ``[loss]``, ``[eval]``, ``[transforms]``
    defaults for the run configuration (see :mod:`cl_fir.config`).
``[strategies.<name>]``
    defaults for one strategy's options on this scenario (``--opt`` still wins), e.g. a
    shorter EMA horizon where increments have few steps.

Building a scenario yields a real Avalanche benchmark (one experience per increment,
task label = attribute id, class = (attribute, value)) plus, for every task, the
query and candidate sets used by the evaluator.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset

from cl_fir import avalanche_compat
from cl_fir.config import SECTIONS, RunConfig, apply_section
from cl_fir.data.asen_meta import AsenMetaDataset, AttributeMeta, SampleTable
from cl_fir.data.image_dataset import SampleImageDataset
from cl_fir.data.synthfashion import DATASET_KEY as SYNTH_KEY
from cl_fir.data.synthfashion import SynthFashionConfig, ensure_synthfashion
from cl_fir.data.transforms import build_transforms
from cl_fir.errors import ConfigError

FAMILIES = ("attribute",)
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


def load_spec(name_or_path: str) -> ScenarioSpec:
    """Load a shipped scenario by name, or any scenario TOML file by path."""
    path = Path(name_or_path)
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
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
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


def apply_spec_defaults(spec: ScenarioSpec, cfg: RunConfig) -> None:
    """Fill the run configuration's sections from the scenario file."""
    for section, values in spec.sections.items():
        apply_section(getattr(cfg, section), values, f"{spec.path} [{section}]")


@dataclass
class Increment:
    index: int
    attributes: tuple[int, ...]
    train_table: SampleTable


@dataclass
class EvalTask:
    """Query and candidate sets of one attribute (ASEN protocol: same attribute, disjoint images)."""

    attribute: int
    name: str
    queries: SampleImageDataset
    candidates: SampleImageDataset

    @property
    def num_queries(self) -> int:
        return len(self.queries)


class Scenario:
    """A built scenario: increments, the Avalanche benchmark and the evaluation tasks."""

    def __init__(self, spec: ScenarioSpec, cfg: RunConfig, progress_factory=None):
        self.spec = spec
        self.name = spec.name
        self.source = _open_source(spec, cfg, progress_factory)
        self.meta: AttributeMeta = self.source.meta
        groups = _increment_groups(spec, self.meta)

        train_tf, eval_tf = build_transforms(cfg.transforms)
        train_all = self.source.train_samples()
        train_paths = [self.source.folder / f for f in self.source.filenames("train")]
        self.increments: list[Increment] = []
        train_sets = []
        for i, attrs in enumerate(groups):
            table = train_all.for_attributes(attrs)
            missing = [self.meta.names[a] for a in attrs if not np.any(table.attributes == a)]
            if missing:
                raise ConfigError(f"{spec.path}: increment {i} attribute(s) {', '.join(missing)} have no training samples")
            self.increments.append(Increment(i, tuple(attrs), table))
            raw = SampleImageDataset(train_paths, table, self.meta.class_offsets)
            train_sets.append(avalanche_compat.task_aware_dataset(raw, raw.task_labels, train_tf, eval_tf))

        split = cfg.eval.split
        eval_paths = [self.source.folder / f for f in self.source.filenames(split)]
        queries = self.source.eval_samples(split, "query")
        candidates = self.source.eval_samples(split, "candidate")
        self.eval_tasks: dict[int, EvalTask] = {}
        test_sets = []
        for inc in self.increments:
            tables = []
            for a in inc.attributes:
                q, c = queries.for_attributes([a]), candidates.for_attributes([a])
                tables += [q, c]
                if len(q) == 0 or len(c) == 0:
                    raise ConfigError(
                        f"{self.source.folder}: attribute {self.meta.names[a]} has {len(q)} queries and "
                        f"{len(c)} candidates in split {split!r}; both must be non-empty"
                    )
                self.eval_tasks[a] = EvalTask(
                    a, self.meta.names[a],
                    SampleImageDataset(eval_paths, q, self.meta.class_offsets, eval_tf),
                    SampleImageDataset(eval_paths, c, self.meta.class_offsets, eval_tf),
                )
            raw = SampleImageDataset(eval_paths, SampleTable.concat(tables), self.meta.class_offsets)
            test_sets.append(avalanche_compat.task_aware_dataset(raw, raw.task_labels, train_tf, eval_tf))
        #: The Avalanche benchmark: ``benchmark.train_stream[i]`` is increment ``i``.
        self.benchmark = avalanche_compat.benchmark(train_sets, test_sets)

    # ------------------------------------------------------------------ views

    @property
    def tasks(self) -> list[int]:
        """Attribute ids in the order they are learned (the matrix columns)."""
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
        """The train-transformed dataset of the given increments and its aligned sample table."""
        datasets = [self.benchmark.train_stream[i].dataset.train() for i in increment_indices]
        table = SampleTable.concat([self.increments[i].train_table for i in increment_indices])
        return (datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)), table

    def describe(self) -> dict:
        """For run.json; increments are numbered from 1, as in every output file."""
        return {
            "name": self.name,
            "file": self.spec.path,
            "dataset": self.meta.dataset,
            "data_root": str(self.source.data_root),
            "increments": [[self.meta.names[a] for a in inc.attributes] for inc in self.increments],
            "tasks": [
                {"name": self.meta.names[a], "attribute": a, "increment": int(i) + 1,
                 "num_values": self.meta.num_values[a], "num_train": int(np.sum(self.increments[i].train_table.attributes == a)),
                 "num_queries": self.eval_tasks[a].num_queries, "num_candidates": len(self.eval_tasks[a].candidates)}
                for a, i in zip(self.tasks, self.task_increment)
            ],
        }


def _open_source(spec: ScenarioSpec, cfg: RunConfig, progress_factory) -> AsenMetaDataset:
    params = dict(spec.dataset)
    reader = params.pop("reader", None)
    where = f"{spec.path} [dataset]"
    if reader == "synthfashion":
        synth = SynthFashionConfig()
        apply_section(synth, params, where)
        root = ensure_synthfashion(synth, Path(cfg.cache_dir) if cfg.cache_dir else None,
                                   progress_factory=progress_factory)
        return AsenMetaDataset(root, SYNTH_KEY)
    if reader == "asen-meta":
        key = params.pop("key", None)
        if not key:
            raise ConfigError(f"{where}: reader 'asen-meta' needs key = \"<dataset name in meta.json>\"")
        if params:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(params))} for reader 'asen-meta'")
        data_root = cfg.data_root or os.environ.get("CL_FIR_DATA")
        if not data_root:
            raise ConfigError(f"scenario {spec.name} reads real data: give --data-root DIR or set CL_FIR_DATA")
        return AsenMetaDataset(data_root, key)
    raise ConfigError(f"{where}: reader must be 'synthfashion' or 'asen-meta', got {reader!r}")


def _increment_groups(spec: ScenarioSpec, meta: AttributeMeta) -> list[list[int]]:
    inc = spec.increments
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
