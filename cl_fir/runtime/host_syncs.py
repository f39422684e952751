"""Counting the operations that make the host wait for the GPU, on any device.

On CUDA the host queues kernels and runs ahead; an operation whose result the host needs
(``.item()``, ``.tolist()``, ``bool(t)``, a data-dependent shape such as ``nonzero`` or
``unique``) makes it wait until the GPU has caught up, and the GPU then idles while the host
queues the next kernels. So does a blocking copy between host and device
(``torch.as_tensor(data, device=...)``, ``t.to(device)`` without ``non_blocking``): PyTorch
synchronises the stream after it. ``torch.cuda.set_sync_debug_mode`` finds them only on a GPU. This
counter intercepts the same operations on any device (tensor methods that hand a value to
Python through a torch-function mode, value-dependent shapes at the dispatcher), so a test
on CPU can check which a training step makes (``tests/test_host_syncs.py``).

Reads inside ``torch.optim`` are left out: on CPU the optimizer reads its step counters,
which live on the host when training on CUDA too (or on the device, without a read, for
fused and capturable optimizers).
"""

from __future__ import annotations

import contextlib
import traceback
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: tensor methods that hand a value to Python (a wait when the tensor is on the GPU)
READS = frozenset({"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "numpy"})
#: factories that copy Python or NumPy data to ``device=``: a blocking host-to-device copy on CUDA
FROM_HOST = frozenset({"tensor", "as_tensor"})
#: aten operations whose output shape depends on values
SHAPE_FROM_VALUES = frozenset({"nonzero", "masked_select", "unique", "_unique2", "unique_dim", "unique_consecutive",
                               "equal", "is_nonzero", "repeat_interleave", "allclose"})


def _boolean_index(name: str, args) -> bool:
    """``x[mask]`` and ``x[mask] = v``: the mask's true count sets the shape."""
    if name not in ("index", "index_put", "index_put_") or len(args) < 2 or not isinstance(args[1], (list, tuple)):
        return False
    return any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in args[1])


def _site() -> str | None:
    """The innermost cl-fir or strategy line on the stack; None inside ``torch.optim``."""
    stack = traceback.extract_stack()
    if any("/torch/optim/" in f.filename for f in stack):
        return None
    ours = [f for f in stack if ("/cl_fir/" in f.filename or "/strategies/" in f.filename)
            and not f.filename.endswith("host_syncs.py")]
    if not ours:
        return "?"
    folder, name = ours[-1].filename.rsplit("/", 2)[-2:]
    return f"{folder}/{name}:{ours[-1].lineno}"


def _blocking_copy(name: str, args, kwargs: dict) -> bool:
    """A copy to a named device that the host waits for on CUDA: a factory from host data with
    ``device=``, or ``t.to(device)`` / ``t.cuda()`` / ``t.cpu()`` without ``non_blocking=True``
    (a blocking copy synchronises the stream: the host waits for every queued kernel)."""
    if name in FROM_HOST:
        return kwargs.get("device") is not None
    if name not in ("to", "cuda", "cpu") or not args or not isinstance(args[0], torch.Tensor):
        return False
    if kwargs.get("non_blocking") or (name == "to" and len(args) > 3 and args[3] is True):
        return False
    if name != "to":
        return True
    return any(isinstance(a, (torch.device, str)) for a in (*args[1:], kwargs.get("device")))


_host_only_depth = 0


@contextlib.contextmanager
def host_only():
    """Marks reads of tensors that are on the host in every run, CUDA included (a CPU tensor
    about to be sent to the device, say): they never wait for a GPU, and the counter leaves
    them out. On CPU it cannot tell them apart otherwise. Only for code that checks the
    tensor is on the CPU."""
    global _host_only_depth
    _host_only_depth += 1
    try:
        yield
    finally:
        _host_only_depth -= 1


class _Reads(TorchFunctionMode):
    def __init__(self, sites: Counter):
        super().__init__()
        self.sites = sites

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        kwargs = kwargs or {}
        read = name in READS and args and isinstance(args[0], torch.Tensor) and not _host_only_depth
        if read or _blocking_copy(name, args, kwargs):
            where = _site()
            if where is not None:
                self.sites[(name if read else f"blocking {name}", where)] += 1
        return func(*args, **kwargs)


class _Shapes(TorchDispatchMode):
    def __init__(self, sites: Counter):
        super().__init__()
        self.sites = sites

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SHAPE_FROM_VALUES or _boolean_index(name, args):
            where = _site()
            if where is not None:
                self.sites[(name, where)] += 1
        return func(*args, **(kwargs or {}))


class HostSyncCounter(contextlib.ExitStack):
    """``with HostSyncCounter() as syncs: ...``; then ``syncs.total`` and ``syncs.sites``
    ((operation, innermost cl-fir / strategy source line) -> count). On CPU every tensor is
    on the host, so a read of a tensor that would stay on the host in a CUDA run (a label
    from the loader) is counted too: each site is a place to look, not a proof."""

    def __init__(self):
        super().__init__()
        self.sites: Counter = Counter()

    def __enter__(self) -> "HostSyncCounter":
        super().__enter__()
        self.enter_context(_Reads(self.sites))
        self.enter_context(_Shapes(self.sites))
        return self

    @property
    def total(self) -> int:
        return sum(self.sites.values())
