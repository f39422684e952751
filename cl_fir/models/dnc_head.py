"""Divide and Conquer as an embedding head (Sanakoyeu et al., CVPR'19 / TPAMI'21;
docs/strategies.md).

The head wraps a base attribute-conditioned head (``base = "asen"`` or ``"crt"``) whose
output ``e`` is split into learned masked subspaces, one set per attribute:
``z = L2normalise(e * ReLU(m[a, k]))`` for a sample of attribute ``a`` in data cluster
``k``. ``masks`` is one Parameter (attributes, K_max, D), initialised to ones (the code's
``--masking-init ones``), so the parameter set never changes when the data is divided: a
division copies each parent's row into its two children's rows (``2c``, ``2c + 1``).
``num_clusters[a]`` (a buffer) is how many rows of ``masks[a]`` are in use.

The forward takes ``groups`` (one per sample): ``k >= 0`` the mask of cluster k,
``UNMASKED`` the base embedding (what clustering reads), ``EVAL`` or ``groups=None`` the
embedding used for retrieval: the sum of the attribute's masks (the paper's eq. 8; the
code uses no mask, ``eval_embedding = "none"``). While ``conquering`` is set, training
uses that summed embedding too and the masks are frozen.

Training forwards with cluster masks record the decorrelation loss
``lambda * mean_{i != j} cos(ReLU m_i, ReLU m_j)`` over the attribute's masks in use.
Data division itself (k-means, matching, bisection, per-cluster batches) is run by
:class:`cl_fir.engine.data_division.DataDivision`, which reads the schedule from here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cl_fir.losses import mean_over
from cl_fir.models.crt_head import CodedResidualHead
from cl_fir.models.heads import AttributeAttentionHead

#: the heads D&C can divide (its ``base``)
BASE_HEADS = {"asen": AttributeAttentionHead, "crt": CodedResidualHead}

UNMASKED = -1
EVAL = -2


class DivideAndConquerHead(nn.Module):
    #: tells the training loop to divide the data and tag each batch with its cluster
    divides_data = True

    def __init__(self, in_channels: int, num_attributes: int, embed_dim: int = 128, attr_dim: int = 512,
                 base: str = "asen", base_kwargs: dict | None = None, max_clusters: int = 32,
                 division_interval: int = 2, mask_lr_multiplier: float = 100.0, decorrelation_weight: float = 0.01,
                 cluster_features: str = "embedding", relabel: str = "symdiff", eval_embedding: str = "sum",
                 conquer_epoch: int = -1, kmeans_trials: int = 30):
        super().__init__()
        if base not in BASE_HEADS:
            raise ValueError(f"base must be one of {', '.join(BASE_HEADS)}, got {base!r}")
        checks = {"max_clusters": max_clusters >= 1, "division_interval": division_interval >= 1,
                  "cluster_features": cluster_features in ("embedding", "backbone"),
                  "relabel": relabel in ("symdiff", "iou"), "eval_embedding": eval_embedding in ("sum", "none"),
                  "kmeans_trials": kmeans_trials >= 1}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid {', '.join(bad)} (max_clusters, division_interval, kmeans_trials >= 1; "
                             f"cluster_features embedding|backbone; relabel symdiff|iou; eval_embedding sum|none)")
        self.base = BASE_HEADS[base](in_channels, num_attributes, embed_dim, attr_dim, **(base_kwargs or {}))
        self.masks = nn.Parameter(torch.ones(num_attributes, max_clusters, embed_dim))
        self.masks.lr_multiplier = mask_lr_multiplier        # read by Strategy.make_optimizer
        self.register_buffer("num_clusters", torch.zeros(num_attributes, dtype=torch.long))
        feature_dim = embed_dim if cluster_features == "embedding" else in_channels
        self.register_buffer("centroids", torch.zeros(num_attributes, max_clusters, feature_dim))
        self.max_clusters = max_clusters
        self.division_interval = division_interval
        self.decorrelation_weight = decorrelation_weight
        self.cluster_features = cluster_features
        self.relabel = relabel
        self.eval_embedding = eval_embedding
        self.conquer_epoch = conquer_epoch
        self.kmeans_trials = kmeans_trials
        self.conquering = False
        self.aux_losses: list[torch.Tensor] = []

    def summed_masks(self, attributes: torch.Tensor) -> torch.Tensor:
        """(B, D): per sample, the sum of its attribute's masks in use."""
        k = self.num_clusters[attributes].clamp(min=1)                                   # B
        in_use = torch.arange(self.max_clusters, device=k.device)[None, :] < k[:, None]   # B, K_max
        return (F.relu(self.masks[attributes]) * in_use[..., None]).sum(dim=1)

    def forward(self, fmap: torch.Tensor, attributes: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        e = self.base(fmap, attributes)
        if groups is None:
            groups = torch.full_like(attributes, EVAL)
        masks = self.summed_masks(attributes)
        if self.conquering:
            masks = masks.detach()
        if self.eval_embedding == "none":
            masks = torch.where((groups == EVAL)[:, None], torch.ones_like(masks), masks)
        masks = torch.where((groups == UNMASKED)[:, None], torch.ones_like(masks), masks)
        # rows with a cluster take its mask; in fixed shapes (no host read of which rows have one)
        if not self.conquering:
            clustered = groups >= 0
            k = groups.clamp(min=0, max=self.max_clusters - 1)
            masks = torch.where(clustered[:, None], F.relu(self.masks[attributes, k]), masks)
            if self.training and torch.is_grad_enabled() and self.decorrelation_weight:
                self.aux_losses.append(self.decorrelation_weight * self.decorrelation_loss(attributes, clustered))
        return F.normalize((e * masks).float(), dim=1)

    def decorrelation_loss(self, attributes: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Mean, over the attributes of the batch's rows (those in ``rows`` when given) that
        have at least 2 masks in use, of the mean pairwise cosine of those masks (0 when there
        is none). Every attribute's at once, masked to the masks in use: nothing the host must
        read (each read is a GPU wait)."""
        A, K = self.masks.shape[:2]
        m = F.normalize(F.relu(self.masks), dim=2)                                    # A, K, D
        cos = m @ m.transpose(1, 2)                                                  # A, K, K
        k = self.num_clusters.clamp(min=1)                                           # A
        in_use = torch.arange(K, device=k.device)[None, :] < k[:, None]              # A, K
        pairs = in_use[:, :, None] & in_use[:, None, :] & ~torch.eye(K, dtype=torch.bool, device=k.device)
        mean_cos = (cos * pairs).sum(dim=(1, 2)) / (k * (k - 1)).clamp(min=1)
        of_rows = attributes[:, None] == torch.arange(A, device=attributes.device)[None, :]   # B, A
        if rows is not None:
            of_rows = of_rows & rows[:, None]
        counted = of_rows.any(dim=0) & (k >= 2)
        return mean_over(mean_cos, counted)

    @torch.no_grad()
    def divide(self, attribute: int) -> None:
        """Double the attribute's masks in use: children 2c and 2c+1 copy parent c."""
        k = max(int(self.num_clusters[attribute]), 1)
        if 2 * k > self.max_clusters:
            raise ValueError(f"cannot divide beyond max_clusters={self.max_clusters}")
        for c in range(k - 1, -1, -1):
            parent = self.masks[attribute, c].clone()
            self.masks[attribute, 2 * c] = parent
            self.masks[attribute, 2 * c + 1] = parent
        self.num_clusters[attribute] = 2 * k
