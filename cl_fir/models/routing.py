"""Routing a batch's samples to per-group modules (a head per increment, a compositor per
category, a cluster's mask) with as few host reads as possible, and collecting the auxiliary
losses that heads record in their training forwards."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from cl_fir.runtime.device import host_to_device
from cl_fir.runtime.host_copies import host_copy


class GroupRouting:
    """Samples sorted by group (stable) and the group sizes: what routing a batch to its
    groups' modules needs. The sizes are needed on the host, once per routing however many
    groups and however many times it is applied. Read back from the device (:meth:`of`) they
    make the host wait for the GPU (``unique`` plus one ``nonzero`` per group made 1 + k such
    reads; now one); when the host knows the groups (:meth:`through`), order and sizes are
    worked out on the host and nothing is read back."""

    def __init__(self, order: torch.Tensor, sizes: list[int]):
        self.batch_size, self.order, self.sizes = order.shape[0], order, sizes

    @classmethod
    def of(cls, groups: torch.Tensor, num_groups: int) -> "GroupRouting":
        """Routing to ``groups`` (one per sample, in ``[0, num_groups)``), read from the device."""
        sizes = (groups[None, :] == torch.arange(num_groups, device=groups.device)[:, None]).sum(1).tolist()
        return cls(torch.argsort(groups, stable=True), sizes)

    @classmethod
    def through(cls, table: torch.Tensor, host_table: np.ndarray, keys: torch.Tensor,
                num_groups: int) -> "GroupRouting":
        """Routing to the groups ``table[keys]`` (e.g. the head of each sample's attribute);
        ``host_table`` holds ``table``'s values. When the host kept the values of ``keys``
        (sent with ``DeviceSetup.from_host``), the groups are known without reading the device:
        a stable NumPy argsort gives the device's stable order, and only the order is sent."""
        keys_on_host = host_copy(keys)
        if keys_on_host is None:
            return cls.of(table[keys], num_groups)
        groups = host_table[keys_on_host]
        order = host_to_device(torch.from_numpy(np.argsort(groups, kind="stable")), keys.device)
        return cls(order, np.bincount(groups, minlength=num_groups).tolist())

    def __call__(self, compute: Callable[[int, torch.Tensor], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        """Run ``compute(group, indices)`` once per group present (indices ascending) and
        scatter its outputs back into batch order; one tensor per output of ``compute``."""
        outs, start = None, 0
        for g, size in enumerate(self.sizes):
            if not size:
                continue
            idx, start = self.order[start:start + size], start + size
            parts = compute(g, idx)
            if outs is None:
                outs = [p.new_empty((self.batch_size, *p.shape[1:])) for p in parts]
            for out, part in zip(outs, parts):
                out[idx] = part
        return tuple(outs)


def route_by_group(groups: torch.Tensor, compute: Callable[[int, torch.Tensor], tuple[torch.Tensor, ...]],
                   num_groups: int):
    """Run ``compute(group, indices)`` once per group present (``groups`` in ``[0, num_groups)``)
    and scatter its outputs back into batch order (:class:`GroupRouting`, applied once)."""
    return GroupRouting.of(groups, num_groups)(compute)


def route_through(table: torch.Tensor, host_table: np.ndarray, keys: torch.Tensor,
                  compute: Callable[[int, torch.Tensor], tuple[torch.Tensor, ...]], num_groups: int):
    """:func:`route_by_group` on the groups ``table[keys]`` (:meth:`GroupRouting.through`)."""
    return GroupRouting.through(table, host_table, keys, num_groups)(compute)


def auxiliary_loss(model: nn.Module) -> torch.Tensor | None:
    """Sum of the auxiliary losses that modules (heads such as CRT) recorded in their
    training forwards since the last call, or None; clears them. Works for any container."""
    terms = [t for m in model.modules() for t in getattr(m, "aux_losses", [])]
    clear_auxiliary(model)
    return torch.stack([t.float() for t in terms]).sum() if terms else None


def clear_auxiliary(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(getattr(m, "aux_losses", None), list):
            m.aux_losses.clear()
