"""The host's own copy of small integer tensors it sent to the device.

Routing a batch to per-increment heads needs each head's sample count on the host (to cut
the batch). Read back from the device, that count makes the host wait for every kernel
queued before it (``runtime/host_syncs.py``): mcl_fir did so 3 times a step. The values it
needs (each sample's attribute, the attribute drawn for distillation) came from the host in
the first place, so :meth:`DeviceSetup.from_host` keeps a copy of integer data it sends,
and :class:`cl_fir.models.routing.GroupRouting` uses it when there is one.

A copy belongs to one tensor object and is dropped with it. It is only right while that
tensor is not modified in place, which holds for what is kept here: index tensors made to
be read (attributes, heads, draws).
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

_copies: dict[int, np.ndarray] = {}


def keep_host_copy(tensor: torch.Tensor, values) -> torch.Tensor:
    """Remember ``values`` (host data equal to ``tensor``'s) for as long as ``tensor`` lives."""
    key = id(tensor)
    _copies[key] = np.array(values, copy=True)
    weakref.finalize(tensor, _copies.pop, key, None)
    return tensor


def host_copy(tensor: torch.Tensor) -> np.ndarray | None:
    """The values of ``tensor`` as the host sent them, or None when it kept none."""
    return _copies.get(id(tensor))
