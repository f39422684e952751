"""Losses on L2-normalised embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def doublet_infonce(anchors: torch.Tensor, positives: torch.Tensor, labels: torch.Tensor | None = None,
                    temperature: float = 0.3) -> torch.Tensor:
    """Symmetric InfoNCE (NT-Xent) on doublets with in-batch negatives.

    ``anchors[i]`` and ``positives[i]`` are a positive pair. Every row of the stacked
    ``2B`` embeddings is classified against all other rows: its partner is the target and
    the remaining ``2B - 2`` rows are negatives (MCL-FIR's ``CCLoss``, tau = 0.3).

    With ``labels`` (one class id per doublet), the loss is *label-aware*: rows that share
    the class of row ``i`` (other than its partner) are removed from its negatives, so
    in-batch items with the same attribute value are not pushed away.
    """
    B = anchors.shape[0]
    z = torch.cat([anchors, positives], dim=0).float()
    logits = z @ z.t() / temperature
    n = 2 * B
    idx = torch.arange(n, device=z.device)
    partner = (idx + B) % n
    excluded = torch.eye(n, dtype=torch.bool, device=z.device)
    if labels is not None:
        lab = torch.cat([labels, labels])
        same = lab[:, None] == lab[None, :]
        same[idx, partner] = False
        excluded |= same
    logits = logits.masked_fill(excluded, float("-inf"))
    return F.cross_entropy(logits, partner)
