"""Doublet InfoNCE (NT-Xent) with in-batch negatives: the attribute family's default metric loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cl_fir.losses.registry import MetricLoss, register_loss


def mean_over(values: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``selected`` (booleans of the same shape) is true, 0 where none
    is, in fixed shapes: ``values[selected].mean()`` has a size the host must read (a GPU wait).
    Values left out must be finite (they are multiplied by 0)."""
    return (values * selected).sum() / selected.sum().clamp(min=1)


def doublet_infonce(anchors: torch.Tensor, positives: torch.Tensor, labels: torch.Tensor | None = None,
                    temperature: float = 0.3, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (NT-Xent) on doublets with in-batch negatives.

    ``anchors[i]`` and ``positives[i]`` are a positive pair. Every row of the stacked
    ``2B`` embeddings is classified against all other rows: its partner is the target and
    the remaining ``2B - 2`` rows are negatives (MCL-FIR's ``CCLoss``, tau = 0.3).

    With ``labels`` (one class id per doublet), the loss is *label-aware*: rows that share
    the class of row ``i`` (other than its partner) are removed from its negatives, so
    in-batch items with the same attribute value are not pushed away.

    With ``rows`` (a boolean per doublet), the loss is the one over the selected doublets
    alone, ``doublet_infonce(anchors[rows], positives[rows], labels[rows])``, computed on the
    whole batch with masks: the others are neither terms nor negatives (0 when none is
    selected). Selecting by mask gives shapes that depend on values, which the host must
    read (a GPU wait); the masks do not.
    """
    logits, partner, excluded = _doublet_logits(anchors, positives, labels, temperature)
    if rows is None:
        return F.cross_entropy(logits.masked_fill(excluded, float("-inf")), partner)
    keep = torch.cat([rows, rows])
    excluded |= keep[:, None] & ~keep[None, :]        # a left-out row keeps finite logits, and weight 0
    terms = F.cross_entropy(logits.masked_fill(excluded, float("-inf")), partner, reduction="none")
    return mean_over(terms, keep)


def _doublet_logits(anchors, positives, labels, temperature):
    """The ``2B x 2B`` logits of doublet InfoNCE, each row's target (its partner) and the
    entries that are not negatives (itself; with ``labels``, rows of its class)."""
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
    return logits, partner, excluded


def doublet_infonce_terms(anchors: torch.Tensor, positives: torch.Tensor, labels: torch.Tensor | None = None,
                          temperature: float = 0.3) -> torch.Tensor:
    """:func:`doublet_infonce` per doublet (B,): the mean of its two rows' terms (anchor to
    positive, positive to anchor), each against the whole batch; their mean is the loss."""
    logits, partner, excluded = _doublet_logits(anchors, positives, labels, temperature)
    rows = F.cross_entropy(logits.masked_fill(excluded, float("-inf")), partner, reduction="none")
    B = anchors.shape[0]
    return (rows[:B] + rows[B:]) / 2




@register_loss("infonce", family="attribute")
class DoubletInfoNCE(MetricLoss):
    """:func:`doublet_infonce`; with labels (label-aware), same-class rows are not negatives."""

    @dataclass
    class Options:
        temperature: float = 0.3         # InfoNCE temperature (MCL-FIR: 0.3)

    def check(self) -> None:
        self.require(self.opts.temperature > 0, "temperature", "a number > 0", self.opts.temperature)

    def __call__(self, embeddings, labels=None, *, epoch=0, epochs=1):
        B = embeddings.shape[0] // 2
        return doublet_infonce(embeddings[:B], embeddings[B:], None if labels is None else labels[:B],
                               self.opts.temperature)

    def terms(self, embeddings, labels=None, *, epoch=0, epochs=1):
        B = embeddings.shape[0] // 2
        return doublet_infonce_terms(embeddings[:B], embeddings[B:], None if labels is None else labels[:B],
                                     self.opts.temperature)
