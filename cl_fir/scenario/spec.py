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

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cl_fir.files import readback
from cl_fir.config import SECTIONS, RunConfig, apply_section
from cl_fir.data.synth_cache import default_cache_dir
from cl_fir.errors import ConfigError

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



def apply_spec_defaults(spec: ScenarioSpec, cfg: RunConfig) -> None:
    """Fill the run configuration's sections from the scenario file."""
    for section, values in spec.sections.items():
        apply_section(getattr(cfg, section), values, f"{spec.path} [{section}]")


def cache_dir(cfg: RunConfig) -> Path:
    """Where generated datasets and image-check results are kept (``cache_dir``, else the default)."""
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
