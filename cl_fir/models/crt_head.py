"""Coded Residual Transform head (Kan et al., NeurIPS 2022).

For a feature map ``X`` (B, C, H, W) and an attribute ``a``:

* ``P = Conv1x1(C -> L)(X)``; local features ``x_j`` (j over the H*W positions) are gated
  by the attribute, ``x_j <- x_j * sigmoid(W_g e_a)`` with ``e_a`` a learned attribute
  embedding; this conditions the head on the attribute as the ASEN head's channel
  attention does (CRT itself is unconditional);
* learned prototypes ``c_k`` (K rows of L);
* coded residuals ``r_k = sum_j softplus(x_j . c_k) (x_j - c_k)`` (``residual = "sum"``, the
  paper; ``"mean"`` divides by H*W);
* one embedding network per prototype, ``Gamma_k = Linear(L -> D) -> GELU -> Linear(D -> D)``
  (the paper says "fully connected layers and one GELU" without widths; D is ours), and
  the output ``f = L2normalise(mean_k Gamma_k(r_k))``;
* diversity loss ``mean_{k != j} |cos(c_k, c_j)|`` on the prototypes;
* optionally a second branch (another K and D on the same map) and the consistency loss
  ``mean |S1 - S2|`` between the two branches' in-batch cosine-similarity matrices (the
  paper's L1 norm, averaged over the N*N entries); the first branch is the embedding.

Auxiliary losses are recorded during training forwards and collected by
:func:`~cl_fir.models.routing.auxiliary_loss`; the loop adds those of the student's
forward of the batch to the loss, once (strategies' further passes through the head, e.g.
distillation under old attributes, record them again and those copies are dropped).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CodedResidualBranch(nn.Module):
    def __init__(self, dim: int, num_prototypes: int, out_dim: int, residual: str = "sum"):
        super().__init__()
        if residual not in ("sum", "mean"):
            raise ValueError(f"residual must be 'sum' or 'mean', got {residual!r}")
        self.residual = residual
        self.prototypes = nn.Parameter(torch.randn(num_prototypes, dim) / dim ** 0.5)
        self.w1 = nn.Parameter(torch.randn(num_prototypes, dim, out_dim) / dim ** 0.5)
        self.b1 = nn.Parameter(torch.zeros(num_prototypes, out_dim))
        self.w2 = nn.Parameter(torch.randn(num_prototypes, out_dim, out_dim) / out_dim ** 0.5)
        self.b2 = nn.Parameter(torch.zeros(num_prototypes, out_dim))

    def coded_residuals(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, N, L) local features -> (B, K, L) coded residuals, without a B*K*N*L tensor."""
        codes = F.softplus(torch.einsum("bnl,kl->bnk", x, self.prototypes))          # B, N, K
        r = torch.einsum("bnk,bnl->bkl", codes, x) - codes.sum(dim=1)[..., None] * self.prototypes[None]
        return r / x.shape[1] if self.residual == "mean" else r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.coded_residuals(x)
        h = F.gelu(torch.einsum("bkl,kld->bkd", r, self.w1) + self.b1)
        out = torch.einsum("bkd,kde->bke", h, self.w2) + self.b2
        return F.normalize(out.mean(dim=1).float(), dim=1)

    def diversity_loss(self) -> torch.Tensor:
        c = F.normalize(self.prototypes, dim=1)
        k = c.shape[0]
        if k < 2:
            return c.sum() * 0
        cos = (c @ c.t()).abs()
        return (cos.sum() - cos.diagonal().sum()) / (k * (k - 1))


def similarity_consistency(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the two in-batch cosine-similarity matrices."""
    s1 = F.normalize(f1, dim=1) @ F.normalize(f1, dim=1).t()
    s2 = F.normalize(f2, dim=1) @ F.normalize(f2, dim=1).t()
    return (s1 - s2).abs().mean()


class CodedResidualHead(nn.Module):
    def __init__(self, in_channels: int, num_attributes: int, embed_dim: int = 128, attr_dim: int = 512,
                 num_prototypes: int = 16, feature_dim: int | None = None, residual: str = "sum",
                 second_prototypes: int = 0, second_dim: int = 256, diversity_weight: float = 1.0,
                 consistency_weight: float = 0.9):
        super().__init__()
        dim = feature_dim or embed_dim
        self.attribute_embedding = nn.Embedding(num_attributes, attr_dim)
        self.project = nn.Conv2d(in_channels, dim, kernel_size=1)
        self.attr_gate = nn.Linear(attr_dim, dim)
        self.branch = CodedResidualBranch(dim, num_prototypes, embed_dim, residual)
        self.second = CodedResidualBranch(dim, second_prototypes, second_dim, residual) if second_prototypes else None
        self.diversity_weight = diversity_weight
        self.consistency_weight = consistency_weight
        self.aux_losses: list[torch.Tensor] = []

    def local_features(self, fmap: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        x = self.project(fmap).flatten(2).transpose(1, 2)                               # B, HW, L
        gate = torch.sigmoid(self.attr_gate(self.attribute_embedding(attributes)))      # B, L
        return x * gate[:, None, :]

    def forward(self, fmap: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        x = self.local_features(fmap, attributes)
        out = self.branch(x)
        if self.training and torch.is_grad_enabled():
            aux = self.diversity_weight * self.branch.diversity_loss()
            if self.second is not None:
                aux = aux + self.diversity_weight * self.second.diversity_loss()
                aux = aux + self.consistency_weight * similarity_consistency(out, self.second(x))
            self.aux_losses.append(aux)
        return out
