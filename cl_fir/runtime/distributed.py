"""Data-parallel training across processes (``torchrun --nproc-per-node N -m cl_fir run ...``).

Every rank builds the same scenario, model and strategy from the same seed, and draws
the same batches; rank r loads and forwards its share of each batch's doublets. Then:

* the embeddings (and labels) of the whole batch are gathered, with gradients, so the
  strategy's loss sees the full batch exactly as a single process would (in-batch
  negatives from every rank);
* after backward, gradients are averaged over ranks in one coalesced all-reduce of all
  trainable parameters, and after the step floating-point buffers (BatchNorm statistics)
  are broadcast from rank 0 (with ``train.sync_batchnorm``, BatchNorm itself uses the whole
  batch's statistics: ``engine/synced_batchnorm.py``);
* evaluation is sharded: every rank embeds a contiguous share of each evaluation set and
  the embeddings are gathered (:meth:`DistributedContext.gather_uneven`); rank 0 alone
  computes the metrics and writes results and checkpoints.

Why not ``DistributedDataParallel``: strategies add loss terms through paths outside
the model's forward (distillation through old heads, the EWC penalty, the heads' own
auxiliary losses), and freeze parts of the model between increments; DDP's reducer
sees only parameters reached from its own forward and must be rebuilt when
``requires_grad`` changes. One explicit all-reduce after backward averages every
gradient whatever produced it. All heads for all increments exist from the start, so
every rank always holds the same parameters in the same order; a checksum after each
increment confirms that the ranks are still identical.

With a full-batch loss L computed identically on every rank, the gather's backward
(sum of the ranks' gradients for each rank's slice) gives rank r ``W * dL/dθ`` from its
own samples; averaging over ranks gives ``dL/dθ``. Per-rank means (distillation terms)
average to the mean over the batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cl_fir.errors import ConfigError


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict | None:
        return {"world_size": self.world_size, "backend": self.backend} if self.enabled else None

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @property
    def device(self) -> torch.device:
        """Where collective tensors live (NCCL needs them on the GPU)."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def any_flag(self, flag):
        """``flag`` if set here, else the first flag set on another rank, else None (every rank agrees)."""
        mine = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(mine, op=dist.ReduceOp.MAX)
        return (flag or "a signal on another process") if float(mine) > 0 else None

    # ------------------------------------------------------------ batches

    def shard(self, batch: list) -> list:
        """This rank's part of a batch ``[a_1..a_B, p_1..p_B]``: its anchors then their positives."""
        if not self.enabled:
            return batch
        B = len(batch) // 2
        if B % self.world_size:
            raise ConfigError(f"train.batch_size: {B} doublets do not split over {self.world_size} processes; "
                              f"use a multiple of {self.world_size}")
        b = B // self.world_size
        lo = self.rank * b
        return batch[lo:lo + b] + batch[B + lo:B + lo + b]

    def shard_triplets(self, batch: list) -> list:
        """This rank's part of a batch of composed triplets (one key each): a contiguous slice."""
        if not self.enabled:
            return batch
        if len(batch) % self.world_size:
            raise ConfigError(f"train.batch_size: {len(batch)} triplets do not split over {self.world_size} "
                              f"processes; use a multiple of {self.world_size}")
        b = len(batch) // self.world_size
        return batch[self.rank * b:(self.rank + 1) * b]

    def local_rows(self, n_local: int, paired: bool) -> torch.Tensor:
        """Where this rank's ``n_local`` samples sit in the whole batch: its anchors and its
        positives for doublet batches (``paired``, see :meth:`shard`), a contiguous slice for
        triplet batches (:meth:`shard_triplets`)."""
        if not paired:
            return torch.arange(self.rank * n_local, (self.rank + 1) * n_local)
        b = n_local // 2
        B = b * self.world_size
        mine = torch.arange(self.rank * b, (self.rank + 1) * b)
        return torch.cat([mine, mine + B])

    def gather_pairs(self, local: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`shard` across ranks: the full batch ``[anchors; positives]``, differentiable."""
        if not self.enabled:
            return local
        full = _GatherAll.apply(local)                      # W x (2b) rows, rank-major
        chunks = full.chunk(self.world_size)
        halves = [c.chunk(2) for c in chunks]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves])

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's rows in rank order, differentiable: the whole batch of contiguous
        shards (triplets, or the anchors alone of doublet shards)."""
        if not self.enabled:
            return local
        return _GatherAll.apply(local)

    def shard_rows(self, n: int) -> range:
        """This rank's contiguous share of ``n`` rows (sizes differ by at most one)."""
        return range(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)

    def gather_uneven(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's rows in rank order, on every rank, for shares of different sizes (not
        differentiable: evaluation embeddings). NCCL gathers equal shapes only, so each
        share is padded to the largest and trimmed after."""
        if not self.enabled:
            return local
        size = torch.tensor([local.shape[0]], device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        counts = [int(s) for s in sizes]
        padded = local.new_zeros((max(counts), *local.shape[1:]))
        padded[:local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:c] for p, c in zip(parts, counts)])

    # ------------------------------------------------------------ parameters

    def average_gradients(self, params) -> None:
        """Mean gradient over ranks for every parameter (zeros where a rank produced none)."""
        if not self.enabled:
            return
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        if not self.enabled:
            return
        buffers = [b for b in module.buffers() if b.dtype.is_floating_point]
        if buffers:
            flat = torch.cat([b.reshape(-1) for b in buffers])
            dist.broadcast(flat, src=0)
            offset = 0
            for b in buffers:
                b.copy_(flat[offset:offset + b.numel()].view_as(b))
                offset += b.numel()

    def check_in_sync(self, module: torch.nn.Module, where: str) -> None:
        """Raise if the ranks' parameters differ (they must stay identical)."""
        if not self.enabled:
            return
        with torch.no_grad():
            local = torch.stack([p.double().sum() for p in module.parameters()]).sum().reshape(1)
            gathered = [torch.zeros_like(local) for _ in range(self.world_size)]
            dist.all_gather(gathered, local)
        values = [float(g) for g in gathered]
        if max(values) - min(values) > 1e-6 * max(1.0, abs(values[0])):
            raise RuntimeError(f"ranks desynchronised {where}: parameter checksums {values}")


class _GatherAll(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice."""

    @staticmethod
    def forward(ctx, local):
        world = dist.get_world_size()
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), local.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def init_from_env() -> DistributedContext:
    """The context torchrun describes in the environment (a single process otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        from cl_fir.runtime.avalanche import import_before_distributed_init

        import_before_distributed_init()
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistributedContext(rank, world, local_rank, backend)
