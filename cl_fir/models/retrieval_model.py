"""The retrieval model: one shared backbone and one or more attribute-conditioned heads.

Multi-head strategies keep one head per increment; every head exists from the start
(so the parameter set never changes during a run, which keeps optimisers, checkpoints
and DistributedDataParallel simple) and each attribute is routed to its head
(:mod:`cl_fir.models.routing`). Models are built by :mod:`cl_fir.models.factory`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from cl_fir.models.backbones import FeatureMapBackbone
from cl_fir.models.routing import route_through


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
