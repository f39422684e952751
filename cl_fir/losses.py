"""Losses on L2-normalised embeddings.

Each batch loss used as a metric loss has a ``*_terms`` form: one term per sample of the batch
(doublet or triplet), each computed with the whole batch as its context (in-batch negatives),
whose mean is the loss. Per-sample gradients (EWC's empirical Fisher) are taken of these terms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def embedding_distillation(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Pull student embeddings towards (detached) teacher embeddings of the same images.

    ``cosine``: mean of ``1 - cos``; ``mse``: mean squared error over all elements.
    """
    teacher = teacher.detach().float()
    student = student.float()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=1)).mean()
    if kind == "mse":
        return F.mse_loss(student, teacher)
    raise ValueError(f"unknown distillation kind {kind!r}; expected cosine or mse")


def similarity_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Relational distillation: match each row's softmax over in-batch similarities (self excluded).

    KL(teacher || student), averaged over rows; embeddings are L2-normalised first.
    """
    s = F.normalize(student.float(), dim=1)
    t = F.normalize(teacher.detach().float(), dim=1)
    n = s.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=s.device)
    s_logits = (s @ s.t() / temperature)[off].view(n, n - 1)
    t_logits = (t @ t.t() / temperature)[off].view(n, n - 1)
    return F.kl_div(F.log_softmax(s_logits, dim=1), F.log_softmax(t_logits, dim=1), log_target=True,
                    reduction="batchmean")


def pooled_feature_distillation(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """MSE between global-average-pooled feature maps (the MCL-FIR reference code's KD term)."""
    return F.mse_loss(student_map.float().mean(dim=(2, 3)), teacher_map.detach().float().mean(dim=(2, 3)))


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


# ---------------------------------------------------------------- uncertainty regularisation
# Multi-grained uncertainty regularisation for composed image retrieval (Chen et al.,
# ICLR 2024, "MGUR"), loss side only, usable with any pairing
# of a query embedding f_s and a target embedding f_t.


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


def batch_classification_loss(queries: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``queries @ targets.T`` against the diagonal (InfoNCE with the raw dot
    product as logit, the MGUR code's ``batch_based_classification_loss``)."""
    logits = queries.float() @ targets.float().t()
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def batch_classification_terms(queries: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:func:`batch_classification_loss` per query (B,)."""
    logits = queries.float() @ targets.float().t()
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device), reduction="none")


def uncertainty_gamma(epoch: int, total_epochs: int, gamma0: float = 1.0) -> float:
    """``exp(-gamma0 * epoch / total_epochs)``: 1 in the first epoch (epochs counted from 0)."""
    return math.exp(-gamma0 * epoch / max(total_epochs, 1))


def composed_loss(queries: torch.Tensor, targets: torch.Tensor, cfg, epoch: int, epochs: int) -> torch.Tensor:
    """The composed family's metric loss on L2-normalised query and target embeddings, both
    scaled by ``cfg.norm_scale``: batch classification (``cfg.composed = "infonce"``) or the
    uncertainty-regularised loss with gamma annealed over the increment's epochs."""
    q, t = queries * cfg.norm_scale, targets * cfg.norm_scale
    if cfg.composed == "infonce":
        return batch_classification_loss(q, t)
    if cfg.composed == "uncertainty":
        gamma = uncertainty_gamma(epoch, epochs, cfg.uncertainty_gamma0)
        return uncertainty_regularised_loss(q, t, gamma, cfg.uncertainty_form)
    raise ValueError(f"loss.composed must be infonce or uncertainty, got {cfg.composed!r}")


def composed_loss_terms(queries: torch.Tensor, targets: torch.Tensor, cfg, epoch: int, epochs: int) -> torch.Tensor:
    """:func:`composed_loss` per triplet (B,); their mean is the loss."""
    q, t = queries * cfg.norm_scale, targets * cfg.norm_scale
    if cfg.composed == "infonce":
        return batch_classification_terms(q, t)
    if cfg.composed == "uncertainty":
        gamma = uncertainty_gamma(epoch, epochs, cfg.uncertainty_gamma0)
        return uncertainty_regularised_terms(q, t, gamma, cfg.uncertainty_form)
    raise ValueError(f"loss.composed must be infonce or uncertainty, got {cfg.composed!r}")


def uncertainty_regularised_terms(f_s: torch.Tensor, f_t: torch.Tensor, gamma: float, form: str = "code",
                                  alpha_scale: float = 1.0, beta_scale: float = 1.0,
                                  noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """:func:`uncertainty_regularised_loss` per query (B,): the cross-entropies per query, the
    batch-wide terms (the spread ``s`` or ``sigma``) in every query's term; their mean is the loss."""
    if form not in ("code", "paper"):
        raise ValueError(f"uncertainty loss form must be 'code' or 'paper', got {form!r}")
    fhat = augment_target_features(f_t, alpha_scale, beta_scale, noise)
    ce_u = batch_classification_terms(f_s, fhat)
    if form == "code":
        s = fhat.std()
        l_u = 0.5 * (torch.exp(-s) * ce_u + s)
    else:
        var = f_t.float().var()
        l_u = ce_u / (2 * var) + 0.5 * torch.log(var)
    return gamma * l_u + (1.0 - gamma) * batch_classification_terms(f_s, f_t)


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
    if form not in ("code", "paper"):
        raise ValueError(f"uncertainty loss form must be 'code' or 'paper', got {form!r}")
    fhat = augment_target_features(f_t, alpha_scale, beta_scale, noise)
    ce_u = batch_classification_loss(f_s, fhat)
    if form == "code":
        s = fhat.std()
        l_u = 0.5 * (torch.exp(-s) * ce_u + s)
    else:
        var = f_t.float().var()
        l_u = ce_u / (2 * var) + 0.5 * torch.log(var)
    return gamma * l_u + (1.0 - gamma) * batch_classification_loss(f_s, f_t)
