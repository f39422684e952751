"""Attribute-conditioned embedding head in the style of ASEN_v2.

Following ASEN_v2 (Ma et al., AAAI 2020, released code) and MCL-FIR's variant of it, for a
feature map ``X`` (B, C, H, W) and an attribute ``a``:

* a learned attribute embedding ``e = E[a]`` (ASEN_v2: one table shared by both attentions);
* ``P = Conv1x1(C -> D)(X)``: the projection of MCL-FIR's variant (ASEN_v2 pools the raw
  C-channel map instead; the projection keeps the embedding small, D = 128 by default);
* spatial attention: ``s_p = <tanh(W_s e), tanh(BN(P))_p> / sqrt(D)``, softmax over the
  H*W positions, ``v = sum_p alpha_p P_p``;
* channel attention: ``m = sigmoid(FC(ReLU(FC([v ; ReLU(W_c e)]))))``;
* output ``L2normalise(v * m)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class AttributeAttentionHead(nn.Module):
    def __init__(self, in_channels: int, num_attributes: int, embed_dim: int = 128, attr_dim: int = 512):
        super().__init__()
        self.embed_dim = embed_dim
        self.attribute_embedding = nn.Embedding(num_attributes, attr_dim)
        self.project = nn.Conv2d(in_channels, embed_dim, kernel_size=1)
        self.norm = nn.BatchNorm2d(embed_dim)
        self.attr_spatial = nn.Linear(attr_dim, embed_dim)
        self.attr_channel = nn.Linear(attr_dim, embed_dim)
        self.gate_hidden = nn.Linear(2 * embed_dim, embed_dim)
        self.gate_out = nn.Linear(embed_dim, embed_dim)

    def forward(self, fmap: torch.Tensor, attributes: torch.Tensor, return_attention: bool = False):
        e = self.attribute_embedding(attributes)
        proj = self.project(fmap)                                    # B, D, H, W
        keys = torch.tanh(self.norm(proj)).flatten(2)                # B, D, HW
        query = torch.tanh(self.attr_spatial(e))                     # B, D
        scores = torch.einsum("bdn,bd->bn", keys, query) / math.sqrt(self.embed_dim)
        alpha = scores.softmax(dim=1)                                # B, HW
        pooled = torch.einsum("bdn,bn->bd", proj.flatten(2), alpha)  # B, D
        cond = F.relu(self.attr_channel(e))
        gate = torch.sigmoid(self.gate_out(F.relu(self.gate_hidden(torch.cat([pooled, cond], dim=1)))))
        out = F.normalize((pooled * gate).float(), dim=1)
        if return_attention:
            return out, alpha.view(fmap.shape[0], *fmap.shape[2:])
        return out
