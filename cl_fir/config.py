"""Run configuration: typed sections, filled from a scenario's TOML and then the CLI.

Precedence (later wins): dataclass defaults < scenario file sections < CLI options.
Every value goes through :func:`coerce`, so a wrong key or type gets one message that
names where it came from (the scenario file and section, or the CLI option).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from cl_fir.data.transforms import TransformConfig
from cl_fir.errors import ConfigError


@dataclass
class ModelConfig:
    backbone: str = "resnet50"              # any timm architecture; never downloaded
    feature_index: int = 3                  # timm features_only stage (3 = ResNet layer3, as ASEN)
    backbone_kwargs: dict = field(default_factory=dict)
    embed_dim: int = 128                    # head output (MCL-FIR's ASENet_V2 variant uses 128)
    attr_dim: int = 512                     # learned attribute embedding (ASEN_v2: 512)
    weights: str | None = None              # local checkpoint for the backbone (timm/torchvision keys)
    head: str = "asen"                      # embedding head: asen (ASEN_v2 attention) | crt (coded residual)
    head_kwargs: dict = field(default_factory=dict)   # e.g. crt: num_prototypes, second_prototypes, residual
    text_encoder: str = "gru"               # composed family: gru (from scratch) | sentence-transformer
    text_checkpoint: str | None = None      # local sentence-transformers folder (never downloaded)
    text_lr_multiplier: float = 0.01        # learning rate of the sentence-transformer x this (MGUR: 0.01)
    arch: str = "single"                    # single (one backbone + heads) | asenpp (ASEN++: global + local branch)
    local_backbone: str = "resnet34"        # asenpp: timm architecture of the local branch
    local_feature_index: int = 3            # asenpp: its features_only stage (3 = layer3, as the code)
    local_backbone_kwargs: dict = field(default_factory=dict)
    local_size: int = 112                   # asenpp: side of the local crop, px
    crop_threshold: float = 0.1             # asenpp: attention threshold of the crop (code's stage 2)
    fusion_weight: float = 0.6              # asenpp: retrieval score = w cos_global + (1 - w) cos_local
    local_loss_weight: float = 0.1          # asenpp: weight of the local branch's metric loss
    align_weight: float = 0.1               # asenpp: weight of mean(1 - cos(global, local))
    global_only_epochs: int = 0             # asenpp: first epochs of each increment train the global branch alone


#: ``model`` fields read only by one ``model.arch``; irrelevant (and left out of comparisons) for the others.
ARCH_ONLY_MODEL_FIELDS = {
    "asenpp": ("local_backbone", "local_feature_index", "local_backbone_kwargs", "local_size", "crop_threshold",
               "fusion_weight", "local_loss_weight", "align_weight", "global_only_epochs"),
}


@dataclass
class TrainConfig:
    epochs: int = 10                        # per increment (MCL-FIR reference code)
    samples_per_epoch: int = 20000          # doublets per epoch and increment (MCL-FIR: 20k triplets)
    batch_size: int = 16                    # doublets per step (2x images)
    lr: float = 1e-4                        # Adam
    lr_step: int = 3                        # StepLR step, in epochs
    lr_gamma: float = 0.9
    weight_decay: float = 0.0
    num_workers: int = -1                   # -1: 0 on CPU, 4 on CUDA
    persistent_workers: bool = True         # workers outlive the epoch (all epochs of an increment on one dataset)
    prefetch_factor: int = 2                # batches each worker prepares ahead (with num_workers > 0)
    checkpoint_every: int = 0               # also checkpoint every N optimizer steps (0: increment ends only)
    compile: bool = False                   # torch.compile the backbone(s) in place (first steps are slow)
    sync_batchnorm: bool = False            # torchrun: BatchNorm uses the whole batch's statistics across ranks


@dataclass
class EvalConfig:
    split: str = "test"                     # "valid" or "test"
    batch_size: int = 256
    map_k: int = 100                        # MAP@k besides MAP@all (ASEN convention: divide by all relevant)
    recall_ks: list[int] = field(default_factory=lambda: [1, 10, 100])
    embedding_stats: bool = True            # also MAP@R, NMI, embedding space density, spectral decay
    leave_one_out_map_r: bool = False       # also map@r_loo: queries and candidates as one set, each vs the rest
    modc_metrics: bool = True               # also MODC's MAP@k (divided by hits in the top k) and recall@k (share of R)
    mode: str = "plain"                     # plain | prioritized (MODC's ranking, also recorded beside plain)
    query_labels: str = "pseudo"            # prioritized: known (test-time labels!) | pseudo (nearest centroid)
    prio_topk: int = 1                      # prioritized: a candidate is first when the query's class is in its top-k


@dataclass
class LossConfig:
    """The metric loss of each task family, named here and built by ``cl_fir.losses`` (a registry:
    a new loss is one file). Fields below ``composed`` are the shipped losses' options; another
    loss's options go in ``options``."""

    temperature: float = 0.3                # InfoNCE temperature (MCL-FIR: 0.3)
    metric: str = "infonce"                 # attribute family's metric loss: infonce | multi_similarity | ...
    ms_alpha: float = 2.0                   # multi-similarity: positive scale (paper: 2)
    ms_beta: float = 50.0                   # negative scale (paper: 50)
    ms_base: float = 1.0                    # similarity margin lambda (paper: 1; PML default 0.5)
    ms_epsilon: float = 0.1                 # pair-mining margin (paper: 0.1)
    # composed retrieval (family = "composed"; MGUR, Chen et al., ICLR 2024; docs/strategies.md)
    composed: str = "infonce"               # composed family's metric loss: infonce (batch classification) | uncertainty
    norm_scale: float = 4.0                 # embeddings x this before the raw-dot-product logits (MGUR: 4)
    uncertainty_gamma0: float = 1.0         # gamma = exp(-gamma0 * epoch / epochs), per increment
    uncertainty_form: str = "code"          # code (std of the augmented targets as log-variance) | paper
    options: dict = field(default_factory=dict)   # options of a loss registered beyond the shipped ones


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "loss": LossConfig,
    "eval": EvalConfig,
    "transforms": TransformConfig,
}


@dataclass
class RunConfig:
    strategy: str
    scenario: str
    strategy_source: str | None = None      # "/abs/path/file.py:Class" for a strategy outside strategies/
    seed: int = 0
    device: str = "auto"                    # "auto", "cpu", "cuda", "cuda:N"
    precision: str = "auto"                 # "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16"
    output_dir: str = "results"
    run_id: str | None = None               # default: seed<N>
    data_root: str | None = None            # real datasets; or CL_FIR_DATA
    cache_dir: str | None = None            # generated datasets and image-check results; or CL_FIR_CACHE
    strict: bool = False                    # refuse to start when a used image is missing or unreadable
    deterministic: bool = False             # torch deterministic algorithms (slower on GPU)
    log: str = "none"                       # experiment tracker: none | tensorboard (<run>/tensorboard/)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    transforms: TransformConfig = field(default_factory=TransformConfig)
    strategy_options: dict = field(default_factory=dict)

    @property
    def resolved_run_id(self) -> str:
        return self.run_id or f"seed{self.seed}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        t, e = self.train, self.eval
        checks = [
            (t.epochs >= 1, "train.epochs (--epochs)", "an integer >= 1", t.epochs),
            (t.batch_size >= 2, "train.batch_size (--batch-size)", "an integer >= 2 (doublets per step)", t.batch_size),
            (t.samples_per_epoch >= t.batch_size, "train.samples_per_epoch (--samples-per-epoch)",
             f"an integer >= batch_size ({t.batch_size})", t.samples_per_epoch),
            (t.lr > 0, "train.lr (--lr)", "a number > 0", t.lr),
            (t.lr_step >= 1, "train.lr_step", "an integer >= 1", t.lr_step),
            (0 < t.lr_gamma <= 1, "train.lr_gamma", "a number in (0, 1]", t.lr_gamma),
            (t.weight_decay >= 0, "train.weight_decay", "a number >= 0", t.weight_decay),
            (self.loss.temperature > 0, "loss.temperature", "a number > 0", self.loss.temperature),
            (t.num_workers >= -1, "train.num_workers", "-1 (auto) or an integer >= 0", t.num_workers),
            (t.prefetch_factor >= 1, "train.prefetch_factor", "an integer >= 1", t.prefetch_factor),
            (t.checkpoint_every >= 0, "train.checkpoint_every (--checkpoint-every)", "an integer >= 0 (steps)",
             t.checkpoint_every),
            (e.split in ("valid", "test"), "eval.split", "'valid' or 'test'", e.split),
            (e.batch_size >= 1, "eval.batch_size", "an integer >= 1", e.batch_size),
            (e.map_k >= 1, "eval.map_k", "an integer >= 1", e.map_k),
            (e.mode in ("plain", "prioritized"), "eval.mode (--eval-mode)", "plain or prioritized", e.mode),
            (e.query_labels in ("known", "pseudo"), "eval.query_labels (--query-labels)", "known or pseudo",
             e.query_labels),
            (e.prio_topk >= 1, "eval.prio_topk (--prio-topk)", "an integer >= 1", e.prio_topk),
            (bool(e.recall_ks) and all(k >= 1 for k in e.recall_ks), "eval.recall_ks", "a list of integers >= 1",
             e.recall_ks),
            (self.model.embed_dim >= 1, "model.embed_dim", "an integer >= 1", self.model.embed_dim),
            (self.model.attr_dim >= 1, "model.attr_dim", "an integer >= 1", self.model.attr_dim),
            (self.transforms.decode in ("workers", "device"), "transforms.decode", "workers or device",
             self.transforms.decode),
            (self.transforms.normalize in ("auto", "workers", "device"), "transforms.normalize",
             "auto, workers or device", self.transforms.normalize),
            (self.transforms.cache_decoded_mb >= 0, "transforms.cache_decoded_mb", "an integer >= 0 (MiB)",
             self.transforms.cache_decoded_mb),
            (self.log in ("none", "tensorboard"), "log (--log)", "none or tensorboard", self.log),
            (self.precision in ("auto", "fp32", "bf16"), "precision (--precision)", "auto, fp32 or bf16",
             self.precision),
        ]
        for ok, name, expected, got in checks:
            if not ok:
                raise ConfigError(f"{name}: expected {expected}, got {got!r}")


# --------------------------------------------------------------------------- coercion


def _is_optional(hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return True, args[0]
    return False, hint


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert ``value`` (a TOML value or a CLI string) to the type ``hint``."""
    optional, inner = _is_optional(hint)
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return coerce(value, inner, where)
    if inner is Any:
        return value
    origin = typing.get_origin(inner)
    try:
        if inner is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
                return value.lower() in ("true", "1", "yes", "on")
            raise ValueError
        if inner is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if inner is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if inner is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if inner is dict or origin is dict:
            if isinstance(value, str):
                import json

                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
        if origin in (list, tuple):
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            if not isinstance(value, (list, tuple)):
                raise ValueError
            args = typing.get_args(inner)
            item = args[0] if args else Any
            items = [coerce(v, item, where) for v in value]
            return tuple(items) if origin is tuple else items
    except (ValueError, TypeError):
        pass
    raise ConfigError(f"{where}: expected {_describe(hint)}, got {value!r}")


def _describe(hint: Any) -> str:
    optional, inner = _is_optional(hint)
    origin = typing.get_origin(inner)
    if origin in (list, tuple):
        args = typing.get_args(inner)
        base = f"a comma-separated list of {_describe(args[0])}" if args else "a list"
    elif inner is dict or origin is dict:
        base = "a table (JSON object on the command line)"
    else:
        base = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(inner, str(inner))
    return base + (" or none" if optional else "")


def apply_section(obj: Any, values: dict, where: str) -> None:
    """Set fields of dataclass ``obj`` from ``values``; unknown keys are errors."""
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}; expected one of: {', '.join(names)}")
        setattr(obj, key, coerce(value, hints[key], f"{where} {key}"))


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any], where: str = "--set") -> None:
    """Apply ``section.key=value`` overrides (e.g. ``train.epochs=3``) to a run config."""
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise ConfigError(
                f"{where} {dotted}: expected SECTION.KEY with SECTION one of {', '.join(SECTIONS)}"
            )
        apply_section(getattr(cfg, section), {key: value}, f"{where} {section}")


def parse_assignments(items: list[str] | None, option: str) -> dict[str, str]:
    """Parse repeated ``KEY=VALUE`` command-line items."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


#: Top-level keys a run file may set (everything else goes in sections or [options]).
RUN_FILE_KEYS = ("strategy", "scenario", "seed", "device", "precision", "output_dir", "run_id", "data_root",
                 "cache_dir", "strict", "deterministic")


def read_run_file(path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A TOML run file: top-level run keys, ``[model]``/``[train]``/... sections, ``[options]``
    (strategy options). Returns (top-level values, ``section.key`` overrides, options)."""
    from pathlib import Path

    from cl_fir.files import readback

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: file does not exist")
    raw = readback.read_toml(path)
    top, overrides, options = {}, {}, {}
    for key, value in raw.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{key}] must be a table")
            overrides.update({f"{key}.{k}": v for k, v in value.items()})
        elif key == "options":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [options] must be a table of strategy option = value")
            options.update(value)
        elif key in RUN_FILE_KEYS:
            top[key] = value
        else:
            raise ConfigError(f"{path}: unknown key {key!r}; expected one of {', '.join(RUN_FILE_KEYS)}, "
                              f"a section ({', '.join(SECTIONS)}) or [options]")
    return top, overrides, options
