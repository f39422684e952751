"""Training-cost accounting, per increment.

Counts are hardware-independent (image passes, optimizer steps, estimated FLOPs) and
sit next to wall-clock numbers (training time apart from data wait, evaluation time)
and peak memory, so cost ratios can be compared across machines.

Training time is booked by one mechanism, :meth:`CostMeter.training_time`: the loop runs
everything an increment trains inside it (the strategy's hooks with their extra passes,
EWC's Fisher, MODC's centroids, D&C's clustering, the epochs, the stored class centroids),
and the waits for data booked inside (:meth:`CostMeter.add_data_wait`) are taken out. So an
increment's ``train_seconds + data_wait_seconds + eval_seconds`` is its whole wall time,
less the results and checkpoint written after it; nothing a strategy adds can be left out.

FLOPs are estimated from one forward pass counted by ``torch.utils.flop_counter`` at the
training input size: a back-propagated image costs about 3x its forward FLOPs, a
forward-only image (a teacher, an old model) 1x, and an extra pass through a head alone
(distillation through old heads on features already computed) the head's share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import sys
import time
from dataclasses import dataclass

import torch

from cl_fir.runtime.device import DeviceSetup


@dataclass
class IncrementCost:
    increment: int
    images_forwarded: int = 0          # training images through the trained model
    images_backpropagated: int = 0
    extra_forward_images: int = 0      # forward-only passes (teachers, frozen old models)
    extra_head_passes: int = 0         # head-only passes on features already computed
    optimizer_steps: int = 0
    train_seconds: float = 0.0         # training wall time minus data wait
    data_wait_seconds: float = 0.0
    eval_seconds: float = 0.0
    eval_images: int = 0
    peak_memory_bytes: int = 0
    stored_images: int = 0             # images kept in memory by the strategy (replay buffer)
    train_flops: float = 0.0

    @property
    def image_passes(self) -> int:
        return self.images_forwarded + self.extra_forward_images


_SUMMED = ("images_forwarded", "images_backpropagated", "extra_forward_images", "extra_head_passes",
           "optimizer_steps", "train_seconds", "data_wait_seconds", "eval_seconds", "eval_images", "train_flops")


def forward_flops_per_image(model: torch.nn.Module, crop: int, setup: DeviceSetup,
                            attribute: int = 0) -> tuple[float, float]:
    """Forward FLOPs of one image through the whole model, and through the head alone.

    Counted on a batch of 2 in eval mode; the head's share is the total minus every
    module named ``*.backbone``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        x = setup.to_device(torch.zeros(2, 3, crop, crop))
        a = torch.full((2,), attribute, dtype=torch.long, device=setup.device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, a)
        total = counter.get_total_flops()
        backbone = sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items()
                       if name.endswith(".backbone"))
        return total / 2, (total - backbone) / 2
    finally:
        model.train(was_training)


class CostMeter:
    def __init__(self, setup: DeviceSetup, forward_flops: float, head_flops: float = 0.0, parameters: int = 0,
                 replicas: int = 1):
        self.setup = setup
        #: processes doing the same share of work (data-parallel ranks): counts are per rank x replicas
        self.replicas = replicas
        self.forward_flops = forward_flops
        self.head_flops = head_flops
        self.parameters = parameters
        self.increments: list[IncrementCost] = []
        self._span_start: float | None = None    # training_time(): when the time not yet booked began
        self._span_wait = 0.0                    # data waits booked since then

    def start(self, increment: int) -> IncrementCost:
        self.increments = [c for c in self.increments if c.increment != increment]
        cost = IncrementCost(increment)
        self.increments.append(cost)
        if self.setup.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.setup.device)
        return cost

    @property
    def current(self) -> IncrementCost:
        return self.increments[-1]

    @contextlib.contextmanager
    def training_time(self):
        """Book the block's wall time, less the data waits booked inside it, into the current
        increment's ``train_seconds`` (on CUDA after the queued work has finished). A nested
        block is part of the outer one."""
        if self._span_start is not None:
            yield
            return
        self.restart_training_time()
        try:
            yield
        finally:
            if self.setup.device.type == "cuda":
                torch.cuda.synchronize(self.setup.device)
            self.book_training_time()
            self._span_start = None

    def restart_training_time(self) -> None:
        """Count training time from now on (e.g. after loading a checkpoint's cost, which holds
        the time until then)."""
        self._span_start, self._span_wait = time.perf_counter(), 0.0

    def book_training_time(self) -> None:
        """Book the training time since the last booking now (before a checkpoint is written)."""
        if self._span_start is None:
            return
        now = time.perf_counter()
        self.current.train_seconds += now - self._span_start - self._span_wait
        self._span_start, self._span_wait = now, 0.0

    def add_data_wait(self, seconds: float) -> None:
        """Time spent waiting for a batch of training data: booked apart, not as training time."""
        self.current.data_wait_seconds += seconds
        if self._span_start is not None:
            self._span_wait += seconds

    def add_training_step(self, n: int) -> None:
        """One optimizer step on ``n`` images (called by the loop)."""
        self.add_gradient_pass(n)
        self.current.optimizer_steps += 1

    def add_gradient_pass(self, n: int) -> None:
        """For strategies: ``n`` images forwarded and back-propagated once, without a step."""
        n *= self.replicas
        c = self.current
        c.images_forwarded += n
        c.images_backpropagated += n
        c.train_flops += 3.0 * self.forward_flops * n

    def add_sample_gradients(self, n: int, samples: int) -> None:
        """For strategies: ``n`` images forwarded once, then back-propagated once per sample of
        the batch (per-sample gradients, e.g. EWC's empirical Fisher): ``n * samples`` images
        back-propagated, each backward costing about twice the forward."""
        n *= self.replicas
        c = self.current
        c.images_forwarded += n
        c.images_backpropagated += n * samples
        c.train_flops += self.forward_flops * n * (1.0 + 2.0 * samples)

    def add_forward_only(self, n: int, backbone_only: bool = False, all_ranks: bool = False) -> None:
        """For strategies: images passed through a teacher or old model without backward
        (``n`` on this rank, or on all ranks together with ``all_ranks``: sharded passes)."""
        n *= 1 if all_ranks else self.replicas
        self.current.extra_forward_images += n
        self.current.train_flops += (self.forward_flops - (self.head_flops if backbone_only else 0.0)) * n

    def add_head_passes(self, n: int, backward: bool = True) -> None:
        """For strategies: extra passes through a head alone (x3 when back-propagated)."""
        n *= self.replicas
        self.current.extra_head_passes += n
        self.current.train_flops += (3.0 if backward else 1.0) * self.head_flops * n

    def record_peak_memory(self) -> None:
        if self.setup.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.setup.device)
        else:  # process-wide peak resident set (kilobytes on Linux, bytes on macOS)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        self.current.peak_memory_bytes = int(max(self.current.peak_memory_bytes, peak))

    def totals(self) -> dict:
        out = {k: sum(getattr(c, k) for c in self.increments) for k in _SUMMED}
        out["image_passes"] = sum(c.image_passes for c in self.increments)
        out["peak_memory_bytes"] = max((c.peak_memory_bytes for c in self.increments), default=0)
        out["stored_images"] = max((c.stored_images for c in self.increments), default=0)
        return out

    def to_dict(self) -> dict:
        return {
            **self.setup.describe(),
            "memory_kind": "cuda_max_allocated" if self.setup.device.type == "cuda" else "process_peak_rss",
            "forward_flops_per_image": self.forward_flops,
            "head_flops_per_image": self.head_flops,
            "model_parameters": self.parameters,
            "total": self.totals(),
            "increments": [{**dataclasses.asdict(c), "image_passes": c.image_passes} for c in self.increments],
        }

    def load(self, data: dict) -> None:
        fields = {f.name for f in dataclasses.fields(IncrementCost)}
        self.increments = [IncrementCost(**{k: v for k, v in c.items() if k in fields}) for c in data["increments"]]
