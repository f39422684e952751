"""The retrieval model: one shared backbone and one or more attribute-conditioned heads.

Multi-head strategies keep one head per increment; every head exists from the start
(so the parameter set never changes during a run, which keeps optimisers, checkpoints
and DistributedDataParallel simple) and each attribute is routed to its head.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from cl_fir.config import ModelConfig
from cl_fir.runtime.device import host_to_device
from cl_fir.runtime.host_copies import host_copy
from cl_fir.errors import ConfigError
from cl_fir.models.backbones import FeatureMapBackbone
from cl_fir.models.crt_head import CodedResidualHead
from cl_fir.models.dnc_head import DivideAndConquerHead
from cl_fir.models.heads import AttributeAttentionHead


class GroupRouting:
    """Samples sorted by group (stable) and the group sizes: what routing a batch to its
    groups' modules needs. The sizes are needed on the host, once per routing however many
    groups and however many times it is applied. Read back from the device (:meth:`of`) they
    make the host wait for the GPU (``unique`` plus one ``nonzero`` per group made 1 + k such
    reads; now one); when the host knows the groups (:meth:`through`), order and sizes are
    worked out on the host and nothing is read back."""

    def __init__(self, order: torch.Tensor, sizes: list[int]):
        self.batch_size, self.order, self.sizes = order.shape[0], order, sizes

    @classmethod
    def of(cls, groups: torch.Tensor, num_groups: int) -> "GroupRouting":
        """Routing to ``groups`` (one per sample, in ``[0, num_groups)``), read from the device."""
        sizes = (groups[None, :] == torch.arange(num_groups, device=groups.device)[:, None]).sum(1).tolist()
        return cls(torch.argsort(groups, stable=True), sizes)

    @classmethod
    def through(cls, table: torch.Tensor, host_table: np.ndarray, keys: torch.Tensor,
                num_groups: int) -> "GroupRouting":
        """Routing to the groups ``table[keys]`` (e.g. the head of each sample's attribute);
        ``host_table`` holds ``table``'s values. When the host kept the values of ``keys``
        (sent with ``DeviceSetup.from_host``), the groups are known without reading the device:
        a stable NumPy argsort gives the device's stable order, and only the order is sent."""
        keys_on_host = host_copy(keys)
        if keys_on_host is None:
            return cls.of(table[keys], num_groups)
        groups = host_table[keys_on_host]
        order = host_to_device(torch.from_numpy(np.argsort(groups, kind="stable")), keys.device)
        return cls(order, np.bincount(groups, minlength=num_groups).tolist())

    def __call__(self, compute: Callable[[int, torch.Tensor], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        """Run ``compute(group, indices)`` once per group present (indices ascending) and
        scatter its outputs back into batch order; one tensor per output of ``compute``."""
        outs, start = None, 0
        for g, size in enumerate(self.sizes):
            if not size:
                continue
            idx, start = self.order[start:start + size], start + size
            parts = compute(g, idx)
            if outs is None:
                outs = [p.new_empty((self.batch_size, *p.shape[1:])) for p in parts]
            for out, part in zip(outs, parts):
                out[idx] = part
        return tuple(outs)


def route_by_group(groups: torch.Tensor, compute: Callable[[int, torch.Tensor], tuple[torch.Tensor, ...]],
                   num_groups: int):
    """Run ``compute(group, indices)`` once per group present (``groups`` in ``[0, num_groups)``)
    and scatter its outputs back into batch order (:class:`GroupRouting`, applied once)."""
    return GroupRouting.of(groups, num_groups)(compute)


def route_through(table: torch.Tensor, host_table: np.ndarray, keys: torch.Tensor,
                  compute: Callable[[int, torch.Tensor], tuple[torch.Tensor, ...]], num_groups: int):
    """:func:`route_by_group` on the groups ``table[keys]`` (:meth:`GroupRouting.through`)."""
    return GroupRouting.through(table, host_table, keys, num_groups)(compute)


def auxiliary_loss(model: nn.Module) -> torch.Tensor | None:
    """Sum of the auxiliary losses that modules (heads such as CRT) recorded in their
    training forwards since the last call, or None; clears them. Works for any container."""
    terms = [t for m in model.modules() for t in getattr(m, "aux_losses", [])]
    clear_auxiliary(model)
    return torch.stack([t.float() for t in terms]).sum() if terms else None


def clear_auxiliary(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(getattr(m, "aux_losses", None), list):
            m.aux_losses.clear()


class RetrievalModel(nn.Module):
    def __init__(self, backbone: FeatureMapBackbone, heads: Sequence[nn.Module], head_of_attribute: Sequence[int]):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList(heads)
        routing = torch.as_tensor(list(head_of_attribute), dtype=torch.long)
        if routing.numel() and (routing.min() < 0 or routing.max() >= len(self.heads)):
            raise ValueError("head_of_attribute refers to a head that does not exist")
        self.register_buffer("head_of_attribute", routing, persistent=False)
        self.head_of_attribute_host = routing.numpy().copy()     # for routing without reading the device

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def head_for_attribute(self, attribute: int) -> nn.Module:
        return self.heads[int(self.head_of_attribute_host[attribute])]

    def embed(self, fmap: torch.Tensor, attributes: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Route each sample to the head of its attribute. ``groups`` (one per sample) go to
        heads that divide the data (D&C: the sample's cluster); None means the retrieval embedding."""
        if len(self.heads) == 1:
            return self.heads[0](fmap, attributes) if groups is None else self.heads[0](fmap, attributes, groups=groups)
        if groups is None:
            def compute(h, idx):
                return (self.heads[h](fmap[idx], attributes[idx]),)
        else:
            def compute(h, idx):
                return (self.heads[h](fmap[idx], attributes[idx], groups=groups[idx]),)
        return route_through(self.head_of_attribute, self.head_of_attribute_host, attributes, compute,
                             len(self.heads))[0]

    def forward(self, images: torch.Tensor, attributes: torch.Tensor, return_features: bool = False,
                groups: torch.Tensor | None = None):
        """Embeddings; with ``return_features`` also the backbone feature map (for distillation)."""
        fmap = self.features(images)
        emb = self.embed(fmap, attributes, groups)
        return (emb, fmap) if return_features else emb


#: ``model.head`` -> head class; every head maps (feature map, attribute) to an L2-normalised embedding.
HEADS = {"asen": AttributeAttentionHead, "crt": CodedResidualHead, "dnc": DivideAndConquerHead}


def build_head(cfg: ModelConfig, in_channels: int, num_attributes: int) -> nn.Module:
    if cfg.head not in HEADS:
        raise ConfigError(f"model.head (--head): expected one of {', '.join(HEADS)}, got {cfg.head!r}")
    try:
        return HEADS[cfg.head](in_channels, num_attributes, cfg.embed_dim, cfg.attr_dim, **cfg.head_kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.head_kwargs for head {cfg.head!r}: {exc}") from None


def build_composed_model(cfg: ModelConfig, scenario, head_of_task: Sequence[int]):
    """Image encoder + GRU text encoder (vocabulary of every training caption) + one TIRG
    compositor per head, for ``family = "composed"`` scenarios."""
    from cl_fir.models.composed_model import ComposedRetrievalModel
    from cl_fir.models.text_encoder import Vocabulary

    backbone = FeatureMapBackbone(cfg.backbone, cfg.feature_index, **cfg.backbone_kwargs)
    num_heads = max(head_of_task) + 1 if len(head_of_task) else 1
    vocabulary = Vocabulary.build(scenario.training_texts())
    text = None
    if cfg.text_encoder == "sentence-transformer":
        from cl_fir.models.text_encoder import SentenceTransformerTextEncoder

        if not cfg.text_checkpoint:
            raise ConfigError("model.text_encoder = 'sentence-transformer' needs model.text_checkpoint = FOLDER "
                              "(a sentence-transformers model saved on this machine)")
        text = SentenceTransformerTextEncoder(cfg.text_checkpoint, cfg.embed_dim, cfg.text_lr_multiplier)
    elif cfg.text_encoder != "gru":
        raise ConfigError(f"model.text_encoder: expected gru or sentence-transformer, got {cfg.text_encoder!r}")
    return ComposedRetrievalModel(backbone, vocabulary, cfg.embed_dim, num_heads, head_of_task,
                                  word_dim=cfg.attr_dim, text_hidden=cfg.embed_dim, text_encoder=text)


def build_model(cfg: ModelConfig, num_attributes: int, head_of_attribute: Sequence[int]) -> RetrievalModel:
    backbone = FeatureMapBackbone(cfg.backbone, cfg.feature_index, **cfg.backbone_kwargs)
    num_heads = max(head_of_attribute) + 1 if len(head_of_attribute) else 1
    if cfg.arch == "asenpp":
        return _build_asenpp(cfg, backbone, num_attributes, head_of_attribute, num_heads)
    if cfg.arch != "single":
        raise ConfigError(f"model.arch: expected single or asenpp, got {cfg.arch!r}")
    heads = [build_head(cfg, backbone.out_channels, num_attributes) for _ in range(num_heads)]
    return RetrievalModel(backbone, heads, head_of_attribute)


def _build_asenpp(cfg: ModelConfig, backbone, num_attributes: int, head_of_attribute, num_heads: int):
    from cl_fir.models.asenpp import AsenPlusPlusHead, AsenPlusPlusModel

    if cfg.head != "asen":
        raise ConfigError(f"model.arch = 'asenpp' needs model.head = 'asen' (its attention map gives the local "
                          f"crop), got {cfg.head!r}")
    if not 0.0 < cfg.fusion_weight < 1.0 or not 0.0 <= cfg.crop_threshold <= 1.0 or cfg.local_size < 8:
        raise ConfigError("model.fusion_weight: expected (0, 1); model.crop_threshold: [0, 1]; "
                          "model.local_size: an integer >= 8")
    local = FeatureMapBackbone(cfg.local_backbone, cfg.local_feature_index, **cfg.local_backbone_kwargs)
    heads = [AsenPlusPlusHead(build_head(cfg, backbone.out_channels, num_attributes),
                              build_head(cfg, local.out_channels, num_attributes)) for _ in range(num_heads)]
    return AsenPlusPlusModel(backbone, heads, head_of_attribute, local, cfg.local_size, cfg.crop_threshold,
                             cfg.fusion_weight, cfg.local_loss_weight, cfg.align_weight, cfg.global_only_epochs)
