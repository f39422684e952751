"""How a training batch is divided over data-parallel processes and put back together.

Every process draws the same batch of sample keys; :meth:`BatchSharding.shard` keeps this
process's share (doublets: its anchors and their positives; triplets: a contiguous slice), so
a batch ``[a_1..a_B, p_1..p_B]`` of B doublets on W processes gives each B/W doublets. After
the forward pass :meth:`BatchSharding.gather` puts the whole batch back together on every
process (differentiably: see :mod:`cl_fir.runtime.distributed`), and random values drawn per
sample (:meth:`BatchSharding.draw`) are drawn for the whole batch by every process, which
keeps its own rows. So a run draws and computes exactly what one process would. In one process
every method returns its input.
"""

from __future__ import annotations

from typing import Callable

import torch

from cl_fir.runtime.distributed import DistributedContext


class BatchSharding:
    def __init__(self, dist: DistributedContext, paired: bool):
        self.dist, self.paired = dist, paired

    @property
    def shard(self) -> Callable[[list], list] | None:
        """Cuts a batch of sample keys into this process's share (None in one process)."""
        if not self.dist.enabled:
            return None
        return self.dist.shard if self.paired else self.dist.shard_triplets

    def local_rows(self, n_local: int) -> torch.Tensor:
        """Where this process's ``n_local`` samples sit in the whole batch."""
        return self.dist.local_rows(n_local, paired=self.paired)

    def draw(self, make: Callable[[int], torch.Tensor], n_local: int, anchors: bool = False) -> torch.Tensor:
        """``make(n)`` values for the whole batch, this process's rows kept: one per sample, or
        with ``anchors`` one per doublet (this process's anchors) of a paired batch."""
        if not self.dist.enabled:
            return make(n_local // 2 if anchors else n_local)
        whole = make((n_local // 2 if anchors else n_local) * self.dist.world_size)
        rows = self.local_rows(n_local)
        return whole[rows[: n_local // 2] if anchors else rows]

    def gather(self, local: torch.Tensor, anchors: bool = False) -> torch.Tensor:
        """The whole batch's rows of a tensor laid out like this process's samples (or, with
        ``anchors``, like its anchors alone), in batch order; differentiable."""
        if self.paired and not anchors:
            return self.dist.gather_pairs(local)
        return self.dist.gather_rows(local)
