"""The composed family's metric losses on L2-normalised query and target embeddings
(``[queries; targets]``, query i's target is row B + i): batch classification, and the
multi-grained uncertainty regularisation of Chen et al. ("Composed Image Retrieval with Text
Feedback via Multi-grained Uncertainty Regularization", ICLR 2024), loss side only."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cl_fir.losses.registry import MetricLoss, register_loss


def augment_target_features(f_t: torch.Tensor, alpha_scale: float = 1.0, beta_scale: float = 1.0,
                            noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The released code's ``NormalAugmenter``, per row i of ``f_t`` (B, D):
    ``fbar_i = (f_i - mean_i) / sqrt(var_i + 1e-5)`` (biased variance, gradient flows),
    ``alpha_i ~ N(1, sd_i)`` and ``beta_i ~ N(mean_i, sd_i)`` per element, drawn without
    gradient (``sd_i`` the unbiased std of the row) and scaled by ``alpha_scale`` /
    ``beta_scale``; returns ``alpha * fbar + beta`` (not re-normalised).
    ``noise`` = two standard-normal tensors shaped like ``f_t`` (drawn when None)."""
    f = f_t.float()
    mean = f.mean(dim=1, keepdim=True)
    fbar = (f - mean) / torch.sqrt(f.var(dim=1, unbiased=False, keepdim=True) + 1e-5)
    with torch.no_grad():
        sd = f.std(dim=1, keepdim=True)
        eps_a, eps_b = noise if noise is not None else (torch.randn_like(f), torch.randn_like(f))
        alpha = alpha_scale * (1.0 + sd * eps_a)
        beta = beta_scale * (mean + sd * eps_b)
    return alpha * fbar + beta


def batch_classification_loss(queries: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``queries @ targets.T`` against the diagonal (InfoNCE with the raw dot
    product as logit, the MGUR code's ``batch_based_classification_loss``); ``reduction="none"``
    gives it per query (B,)."""
    logits = queries.float() @ targets.float().t()
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device), reduction=reduction)


def batch_classification_terms(queries: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:func:`batch_classification_loss` per query (B,)."""
    return batch_classification_loss(queries, targets, reduction="none")


def uncertainty_gamma(epoch: int, total_epochs: int, gamma0: float = 1.0) -> float:
    """``exp(-gamma0 * epoch / total_epochs)``: 1 in the first epoch (epochs counted from 0)."""
    return math.exp(-gamma0 * epoch / max(total_epochs, 1))


def uncertainty_regularised_terms(f_s: torch.Tensor, f_t: torch.Tensor, gamma: float, form: str = "code",
                                  alpha_scale: float = 1.0, beta_scale: float = 1.0,
                                  noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """:func:`uncertainty_regularised_loss` per query (B,): the cross-entropies per query, the
    batch-wide terms (the spread ``s`` or ``sigma``) in every query's term; their mean is the loss."""
    return _uncertainty_regularised(f_s, f_t, gamma, form, alpha_scale, beta_scale, noise, reduction="none")


def uncertainty_regularised_loss(f_s: torch.Tensor, f_t: torch.Tensor, gamma: float, form: str = "code",
                                 alpha_scale: float = 1.0, beta_scale: float = 1.0,
                                 noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``gamma * L_u + (1 - gamma) * L_info`` with ``L_info = CE(f_s, f_t)`` and, on the
    augmented targets ``fhat``:

    * ``form = "code"`` (default, the released code): ``s = std(fhat)`` over all B*D entries
      (with gradient) read as a log-variance, ``L_u = (exp(-s) * CE(f_s, fhat) + s) / 2``;
    * ``form = "paper"`` (eq. 7 literally): ``sigma = std(f_t)``,
      ``L_u = CE(f_s, fhat) / (2 sigma^2) + log(sigma^2) / 2``.
    """
    return _uncertainty_regularised(f_s, f_t, gamma, form, alpha_scale, beta_scale, noise, reduction="mean")


def _uncertainty_regularised(f_s, f_t, gamma, form, alpha_scale, beta_scale, noise, reduction: str) -> torch.Tensor:
    """The loss with its cross-entropies reduced by ``reduction`` ("mean": the loss; "none": per query)."""
    if form not in ("code", "paper"):
        raise ValueError(f"uncertainty loss form must be 'code' or 'paper', got {form!r}")
    fhat = augment_target_features(f_t, alpha_scale, beta_scale, noise)
    ce_u = batch_classification_loss(f_s, fhat, reduction)
    if form == "code":
        s = fhat.std()
        l_u = 0.5 * (torch.exp(-s) * ce_u + s)
    else:
        var = f_t.float().var()
        l_u = ce_u / (2 * var) + 0.5 * torch.log(var)
    return gamma * l_u + (1.0 - gamma) * batch_classification_loss(f_s, f_t, reduction)


@register_loss("infonce", family="composed")
class BatchClassification(MetricLoss):
    """:func:`batch_classification_loss` on queries and targets scaled by ``norm_scale``."""

    @dataclass
    class Options:
        norm_scale: float = 4.0          # embeddings x this before the raw-dot-product logits (MGUR: 4)

    def check(self) -> None:
        self.require(self.opts.norm_scale > 0, "norm_scale", "a number > 0", self.opts.norm_scale)

    def _scaled(self, embeddings):
        B = embeddings.shape[0] // 2
        return embeddings[:B] * self.opts.norm_scale, embeddings[B:] * self.opts.norm_scale

    def __call__(self, embeddings, labels=None, *, epoch=0, epochs=1):
        return batch_classification_loss(*self._scaled(embeddings))

    def terms(self, embeddings, labels=None, *, epoch=0, epochs=1):
        return batch_classification_terms(*self._scaled(embeddings))


@register_loss("uncertainty", family="composed")
class UncertaintyRegularised(BatchClassification):
    """:func:`uncertainty_regularised_loss` with gamma annealed over the increment's epochs
    (:func:`uncertainty_gamma`)."""

    @dataclass
    class Options:
        norm_scale: float = 4.0          # embeddings x this before the raw-dot-product logits (MGUR: 4)
        uncertainty_gamma0: float = 1.0  # gamma = exp(-gamma0 * epoch / epochs), per increment
        uncertainty_form: str = "code"   # code (std of the augmented targets as log-variance) | paper

    def check(self) -> None:
        super().check()
        self.require(self.opts.uncertainty_form in ("code", "paper"), "uncertainty_form", "code or paper",
                     self.opts.uncertainty_form)

    def __call__(self, embeddings, labels=None, *, epoch=0, epochs=1):
        gamma = uncertainty_gamma(epoch, epochs, self.opts.uncertainty_gamma0)
        return uncertainty_regularised_loss(*self._scaled(embeddings), gamma, self.opts.uncertainty_form)

    def terms(self, embeddings, labels=None, *, epoch=0, epochs=1):
        gamma = uncertainty_gamma(epoch, epochs, self.opts.uncertainty_gamma0)
        return uncertainty_regularised_terms(*self._scaled(embeddings), gamma, self.opts.uncertainty_form)
