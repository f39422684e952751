"""The multi-similarity loss (Wang et al., "Multi-Similarity Loss with General Pair Weighting for
Deep Metric Learning", CVPR 2019)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cl_fir.losses.registry import MetricLoss, register_loss


def multi_similarity_loss(embeddings: torch.Tensor, labels: torch.Tensor, alpha: float = 2.0, beta: float = 50.0,
                          base: float = 1.0, epsilon: float = 0.1) -> torch.Tensor:
    """Multi-similarity loss (Wang et al., CVPR'19) with its pair mining, on cosine similarities.

    For anchor i with positives P_i and negatives N_i (same / different label, i excluded), a
    negative k is kept when ``S_ik + epsilon > min_P S``, a positive when ``S_ik - epsilon < max_N S``;
    ``L_i = log(1 + sum_P' exp(-alpha (S - base))) / alpha + log(1 + sum_N' exp(beta (S - base))) / beta``.
    The loss is the sum over anchors divided by the batch size (anchors without a mined pair
    add 0), as the official code. Defaults are the paper's (alpha 2, beta 50, lambda 1, eps 0.1).
    """
    return _multi_similarity_rows(embeddings, labels, alpha, beta, base, epsilon).sum() / embeddings.shape[0]


def multi_similarity_terms(embeddings: torch.Tensor, labels: torch.Tensor, alpha: float = 2.0, beta: float = 50.0,
                           base: float = 1.0, epsilon: float = 0.1) -> torch.Tensor:
    """:func:`multi_similarity_loss` per doublet of ``embeddings = [anchors; positives]`` (B,):
    the mean of the doublet's two anchors' ``L_i``; their mean is the loss."""
    rows = _multi_similarity_rows(embeddings, labels, alpha, beta, base, epsilon)
    B = rows.shape[0] // 2
    return (rows[:B] + rows[B:]) / 2


def _multi_similarity_rows(embeddings, labels, alpha, beta, base, epsilon) -> torch.Tensor:
    """``L_i`` of every row (0 for a row without a mined pair)."""
    z = F.normalize(embeddings.float(), dim=1)
    sim = z @ z.t()
    n = z.shape[0]
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos, neg = same & ~eye, ~same
    min_pos = torch.where(pos, sim, float("inf")).min(dim=1, keepdim=True).values   # Python scalars: no copy
    max_neg = torch.where(neg, sim, float("-inf")).max(dim=1, keepdim=True).values
    keep_neg = neg & (sim + epsilon > min_pos)
    keep_pos = pos & (sim - epsilon < max_neg)
    pos_term = torch.log1p(torch.where(keep_pos, torch.exp(-alpha * (sim - base)), 0.0).sum(dim=1)) / alpha
    neg_term = torch.log1p(torch.where(keep_neg, torch.exp(beta * (sim - base)), 0.0).sum(dim=1)) / beta
    valid = keep_pos.any(dim=1) & keep_neg.any(dim=1)
    return torch.where(valid, pos_term + neg_term, 0.0)



@register_loss("multi_similarity", family="attribute")
class MultiSimilarity(MetricLoss):
    """:func:`multi_similarity_loss` over all 2B embeddings, labelled by class (label-aware) or,
    without labels, by doublet."""

    @dataclass
    class Options:
        ms_alpha: float = 2.0            # positive scale (paper: 2)
        ms_beta: float = 50.0            # negative scale (paper: 50)
        ms_base: float = 1.0             # similarity margin lambda (paper: 1; PML default 0.5)
        ms_epsilon: float = 0.1          # pair-mining margin (paper: 0.1)

    def _labels(self, embeddings, labels):
        if labels is not None:
            return labels
        return torch.arange(embeddings.shape[0] // 2, device=embeddings.device).repeat(2)

    def __call__(self, embeddings, labels=None, *, epoch=0, epochs=1):
        o = self.opts
        return multi_similarity_loss(embeddings, self._labels(embeddings, labels), o.ms_alpha, o.ms_beta, o.ms_base,
                                     o.ms_epsilon)

    def terms(self, embeddings, labels=None, *, epoch=0, epochs=1):
        o = self.opts
        return multi_similarity_terms(embeddings, self._labels(embeddings, labels), o.ms_alpha, o.ms_beta,
                                      o.ms_base, o.ms_epsilon)
