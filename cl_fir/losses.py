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
