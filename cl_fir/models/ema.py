"""Exponential-moving-average teacher.

After every optimizer step: ``theta_T <- m * theta_T + (1 - m) * theta_S`` for parameters
and floating-point buffers (BatchNorm running statistics); integer buffers are copied.
The teacher is frozen and always in eval mode (the MCL-FIR reference code never called
its EMA update and ran the teacher in train mode; see docs/strategies.md).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMATeacher:
    def __init__(self, student: nn.Module, momentum: float):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)
        self.module.eval()
        self.updates = 0

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        t_params = list(self.module.parameters())
        s_params = list(student.parameters())
        torch._foreach_lerp_(t_params, s_params, 1.0 - self.momentum)
        for tb, sb in zip(self.module.buffers(), student.buffers()):
            if tb.dtype.is_floating_point:
                tb.lerp_(sb, 1.0 - self.momentum)
            else:
                tb.copy_(sb)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
