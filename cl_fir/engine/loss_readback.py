"""Bringing each training step's loss to the host without stalling the GPU.

Reading a CUDA value on the host waits for every kernel queued before it. Reading the loss
of the step just queued (for the progress bar and the non-finite check) therefore makes
the host wait until the GPU has finished that step, and the GPU then idles while the host
queues the first kernels of the next one. (Measured on an H100, ResNet-50 bf16, 256 images
per step: the harness step was 8.0% slower than a bare loop with the synchronous read and
9.5-10.6% with this one, so that read is not what the remaining gap is made of; see
``docs/performance.md``. Deferral is kept: it removes a sync per step and loses no safety.)

Deferred readback copies the loss into pinned host memory behind a CUDA event and reads
it one step later, by which time the GPU has long finished it, so the host stays one step
ahead. The price: a non-finite loss is noticed one optimizer step late, after its own
update. The loop therefore flushes before every checkpoint and at the end of each epoch,
so weights trained on a non-finite loss are never saved or evaluated.

On CPU there is nothing to overlap, and each value is read at once (``deferred=False``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch


class LossReadback:
    """Collects step losses; calls ``on_non_finite(value, where)`` for the first bad one.

    ``where`` is whatever the caller pushed with the loss (the loop passes its increment,
    epoch and step), so the error names the step that produced the value, not the one
    during which it was read."""

    def __init__(self, on_non_finite: Callable[[float, object], None], deferred: bool = False):
        self.on_non_finite = on_non_finite
        self.deferred = deferred
        #: called with ``(value, where)`` for every finite value, once per step and in step
        #: order (experiment trackers listen here; see ``cl_fir/report/tensorboard_log.py``)
        self.listener: Callable[[float, object], None] | None = None
        self._pending: tuple[torch.Tensor, object, object] | None = None
        self.reset()

    @classmethod
    def for_device(cls, device: torch.device, on_non_finite: Callable[[float, object], None]) -> "LossReadback":
        return cls(on_non_finite, deferred=device.type == "cuda")

    def reset(self) -> None:
        """Start a new epoch's sums (what is still pending is kept)."""
        self.total, self.count, self.latest = 0.0, 0, None

    @property
    def mean(self) -> float:
        return self.total / max(self.count, 1)

    def push(self, loss: torch.Tensor, where: object) -> None:
        """Queue this step's loss; read the previous one (deferred) or this one (not)."""
        loss = loss.detach()
        if not self.deferred:
            self._accept(float(loss), where)
            return
        if loss.device.type == "cuda":
            host = torch.empty((), dtype=loss.dtype, pin_memory=True)
            host.copy_(loss, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:   # deferred on CPU: only to test the logic where there is no GPU
            host, event = loss.clone(), None
        previous, self._pending = self._pending, (host, event, where)
        if previous is not None:
            self._resolve(previous)

    def flush(self) -> None:
        """Read the pending value (before checkpoints, evaluation and at the end of an epoch)."""
        previous, self._pending = self._pending, None
        if previous is not None:
            self._resolve(previous)

    def _resolve(self, pending) -> None:
        host, event, where = pending
        if event is not None:
            event.synchronize()   # waits for that step only, not for what was queued after it
        self._accept(float(host), where)

    def _accept(self, value: float, where: object) -> None:
        if not math.isfinite(value):
            self._pending = None
            self.on_non_finite(value, where)
        elif self.listener is not None:
            self.listener(value, where)
        self.total += value
        self.count += 1
        self.latest = value
