"""TIRG compositor (Vo et al., CVPR'19), the baseline of composed image retrieval.

For an image feature ``x`` (B, D) and a text feature ``t`` (B, T), with ``z = [x; t]``:
``gate = sigmoid(Linear(ReLU(BN(z))))``, ``residual = Linear(ReLU(Linear(ReLU(BN(z)))))``,
output ``w_gate * gate * x + w_res * residual`` with the learnable weights initialised to
TIRG's (1, 10). Chosen as the baseline because it is the reference every composed
retrieval paper reports, it is small, and it composes any image and text features
(CoSMo's transformer compositor, Lee et al. CVPR 2021, works on the layer-4 map and needs the
2048-channel ResNet-50 map; it is left for later).
"""

from __future__ import annotations

import torch
from torch import nn


class TIRGCompositor(nn.Module):
    def __init__(self, image_dim: int, text_dim: int):
        super().__init__()
        joint = image_dim + text_dim
        self.gate = nn.Sequential(nn.BatchNorm1d(joint), nn.ReLU(), nn.Linear(joint, image_dim))
        self.residual = nn.Sequential(nn.BatchNorm1d(joint), nn.ReLU(), nn.Linear(joint, joint), nn.ReLU(),
                                      nn.Linear(joint, image_dim))
        self.weights = nn.Parameter(torch.tensor([1.0, 10.0]))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        z = torch.cat([image, text], dim=1)
        return self.weights[0] * torch.sigmoid(self.gate(z)) * image + self.weights[1] * self.residual(z)
