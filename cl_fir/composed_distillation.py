"""Distillation on composed-retrieval batches, shared by the strategies that distil (LwF, MCL-FIR).

For the batch's references and texts, the student's query embeddings under other tasks'
compositors (``attrs``, one per sample) are computed from the image and text features the
loop already has (only the compositors run again), the teacher's from its own forward of
``teacher_view`` (the references, or a distorted view of them); targets are distilled
through the shared image encoder. Returns the student and teacher (queries, targets).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def composed_pairs(loop, teacher, attrs: torch.Tensor, teacher_refs: torch.Tensor, teacher_targets: torch.Tensor):
    B = loop.mb_x.shape[0]
    with loop.setup.autocast():
        student_q = F.normalize(loop.model.compose(loop.mb_features, loop.mb_text_features, attrs).float(), dim=1)
        with torch.no_grad():
            teacher_q = teacher.embed_query(teacher_refs, loop.mb_text, attrs)
            teacher_t = teacher.embed_target(teacher_targets)
    loop.cost.add_forward_only(2 * B)          # the teacher's passes over references and targets
    loop.cost.add_head_passes(B)               # the student's extra compositor pass (back-propagated)
    return (student_q, teacher_q), (loop.mb_local_output[B:], teacher_t)   # this rank's targets under torchrun
