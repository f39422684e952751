"""Metric losses as small objects in a registry, one file each (as pytorch-metric-learning's).

A metric loss scores a batch of positive pairs: rows ``i`` and ``B + i`` of ``embeddings``
(``2B x D``) are a pair (anchor and positive; query and target), ``labels`` (``2B``, or None)
the class of each row. ``loss(embeddings, labels)`` is the batch's loss and
``loss.terms(embeddings, labels)`` one term per pair, each computed with the whole batch as
its context, whose mean is the loss (per-sample gradients, EWC's Fisher, are taken of these).

A new loss is one file: a :class:`MetricLoss` subclass registered with :func:`register_loss`
under a name and the task family whose batches it scores; ``[loss] metric = "name"``
(attribute family) or ``[loss] composed = "name"`` (composed family) chooses it. Its
parameters are the fields of its ``Options`` dataclass: a field named like a ``[loss]`` key
reads that key (the shipped losses' ``temperature``, ``ms_alpha``, ...); any other field is set
in the ``[loss] options`` table (``--set loss.options='{"margin": 0.2}'``). Options the chosen
loss does not have are refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch

from cl_fir.config import LossConfig, apply_section
from cl_fir.errors import ConfigError

#: (family, name) -> loss class
LOSSES: dict[tuple[str, str], type["MetricLoss"]] = {}
#: the ``[loss]`` key that names each family's metric loss
SELECTING_KEY = {"attribute": "metric", "composed": "composed"}


class MetricLoss:
    name: ClassVar[str] = ""
    family: ClassVar[str] = "attribute"

    @dataclass
    class Options:
        pass

    def __init__(self, options=None):
        self.opts = options if options is not None else self.Options()
        self.check()

    def check(self) -> None:
        """Refuse (ConfigError, via :meth:`require`) option values the loss cannot use."""

    def require(self, ok: bool, key: str, expected: str, got) -> None:
        if not ok:
            raise ConfigError(f"loss.{key}: expected {expected}, got {got!r}")

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None, *, epoch: int = 0,
                 epochs: int = 1) -> torch.Tensor:
        """The loss of the batch; ``epoch`` of ``epochs`` for losses annealed over an increment."""
        raise NotImplementedError

    def terms(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None, *, epoch: int = 0,
              epochs: int = 1) -> torch.Tensor:
        """One term per pair (B,); their mean is :meth:`__call__`."""
        raise NotImplementedError


def register_loss(name: str, family: str = "attribute"):
    """Register a :class:`MetricLoss` subclass under ``name`` for the task ``family``."""
    if family not in SELECTING_KEY:
        raise ValueError(f"register_loss({name!r}): family must be one of {', '.join(SELECTING_KEY)}")

    def decorate(cls: type[MetricLoss]) -> type[MetricLoss]:
        existing = LOSSES.get((family, name))
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"loss {name!r} of the {family} family is already registered by {existing.__module__}")
        cls.name, cls.family = name, family
        LOSSES[(family, name)] = cls
        return cls

    return decorate


def loss_names(family: str) -> list[str]:
    return sorted(n for f, n in LOSSES if f == family)


def build_loss(family: str, cfg: LossConfig) -> MetricLoss:
    """The family's metric loss named in ``cfg``, with its options from ``cfg``."""
    key = SELECTING_KEY[family]
    name = getattr(cfg, key)
    cls = LOSSES.get((family, name))
    if cls is None:
        names = loss_names(family)
        listed = " or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
        raise ConfigError(f"loss.{key}: expected {listed}, got {name!r}")
    opts = cls.Options()
    shared = {f.name for f in dataclasses.fields(cfg)}
    for f in dataclasses.fields(opts):
        if f.name in shared:
            setattr(opts, f.name, getattr(cfg, f.name))
    apply_section(opts, cfg.options, f"loss.options (loss {name!r})")
    return cls(opts)
