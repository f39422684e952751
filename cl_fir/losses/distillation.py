"""Distillation terms: pull a student's embeddings (or feature maps) towards a teacher's."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
