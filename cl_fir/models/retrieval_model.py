"""The retrieval model: one shared backbone and one or more attribute-conditioned heads.

Multi-head strategies keep one head per increment; every head exists from the start
(so the parameter set never changes during a run, which keeps optimisers, checkpoints
and DistributedDataParallel simple) and each attribute is routed to its head.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from cl_fir.config import ModelConfig
from cl_fir.models.backbones import FeatureMapBackbone
from cl_fir.models.heads import AttributeAttentionHead


def route_by_group(groups: torch.Tensor, compute: Callable[[int, torch.Tensor], tuple[torch.Tensor, ...]]):
    """Run ``compute(group, indices)`` once per group present and scatter its outputs back
    into batch order; returns one tensor per output of ``compute``."""
    outs = None
    for g in torch.unique(groups).tolist():
        idx = (groups == g).nonzero(as_tuple=True)[0]
        parts = compute(g, idx)
        if outs is None:
            outs = [p.new_empty((groups.shape[0], *p.shape[1:])) for p in parts]
        for out, part in zip(outs, parts):
            out[idx] = part
    return tuple(outs)


class RetrievalModel(nn.Module):
    def __init__(self, backbone: FeatureMapBackbone, heads: Sequence[nn.Module], head_of_attribute: Sequence[int]):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList(heads)
        routing = torch.as_tensor(list(head_of_attribute), dtype=torch.long)
        if routing.numel() and (routing.min() < 0 or routing.max() >= len(self.heads)):
            raise ValueError("head_of_attribute refers to a head that does not exist")
        self.register_buffer("head_of_attribute", routing, persistent=False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def embed(self, fmap: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """Route each sample to the head of its attribute."""
        if len(self.heads) == 1:
            return self.heads[0](fmap, attributes)
        return route_by_group(self.head_of_attribute[attributes],
                              lambda h, idx: (self.heads[h](fmap[idx], attributes[idx]),))[0]

    def forward(self, images: torch.Tensor, attributes: torch.Tensor, return_features: bool = False):
        """Embeddings; with ``return_features`` also the backbone feature map (for distillation)."""
        fmap = self.features(images)
        emb = self.embed(fmap, attributes)
        return (emb, fmap) if return_features else emb


def build_model(cfg: ModelConfig, num_attributes: int, head_of_attribute: Sequence[int]) -> RetrievalModel:
    backbone = FeatureMapBackbone(cfg.backbone, cfg.feature_index, **cfg.backbone_kwargs)
    num_heads = max(head_of_attribute) + 1 if len(head_of_attribute) else 1
    heads = [AttributeAttentionHead(backbone.out_channels, num_attributes, cfg.embed_dim, cfg.attr_dim)
             for _ in range(num_heads)]
    return RetrievalModel(backbone, heads, head_of_attribute)
