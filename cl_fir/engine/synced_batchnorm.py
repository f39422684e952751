"""BatchNorm that normalises with the statistics of the whole batch across data-parallel ranks.

With ``torchrun``, each rank forwards its share of a batch. Plain BatchNorm then normalises
with that share's mean and variance: with MCL-FIR's 16 doublets over 8 GPUs, 4 images. With
``train.sync_batchnorm``, every BatchNorm layer in training mode does the following:

* each rank computes its share's per-channel mean and sum of squared deviations;
* these are gathered from all ranks, with gradients (``_GatherAll``: backward sums every
  rank's gradient for this rank's slice);
* they are combined with the parallel-variance formula (stable, unlike E[x^2] - E[x]^2);
* every rank normalises with the whole batch's mean and biased variance, and updates the
  running statistics with the unbiased one, as a single process would on the whole batch.

The forward and gradients then equal those of one process with the whole batch (tested with
two gloo processes). Every rank computes the same running statistics, so they need no
broadcast.

It is one small all-gather per BatchNorm layer in the forward and one all-reduce in the
backward: 53 of each for ResNet-50. Where each rank's share is large, per-rank statistics
are good enough and cheaper, so the default is off.

It is not ``torch.nn.SyncBatchNorm``: that one runs only on GPUs and assumes
``DistributedDataParallel``. This one runs on any backend with the loop's own gradient
averaging, and the CPU test is the same code the GPUs run.

The conversion swaps each layer's class in place. Parameters, buffers and state-dict keys
are unchanged, so checkpoints load into unconverted models and the reverse.

Only layers that every sample passes are synchronised: backbones, the text encoder, and
the head of single-head models. Multi-head models route each sample to its increment's
head, and a rank runs a head only when it holds samples for it. A collective inside such a
head could then meet a different layer's collective on another rank, with the same shape:
a silent mix-up. Those heads keep per-rank statistics.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from cl_fir.runtime.distributed import _GatherAll
from cl_fir.errors import ConfigError


class RankSyncedStatistics:
    """Mixin placed before a BatchNorm class: whole-batch statistics across ranks in training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        y = synced_batch_norm(self, x)
        if hasattr(self, "act"):        # timm's BatchNormAct2d: normalisation, then dropout and activation
            y = self.act(self.drop(y))
        return y


def synced_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    channels = x.shape[1]
    dims = [0] + list(range(2, x.dim()))
    shape = [1, channels] + [1] * (x.dim() - 2)
    xf = x.to(torch.promote_types(x.dtype, torch.float32))     # bf16/fp16 activations: statistics in float32
    n = xf.numel() // channels
    if n:
        mean = xf.mean(dims)
        m2 = ((xf - mean.view(shape)) ** 2).sum(dims)
    else:   # an empty share contributes nothing
        mean = m2 = xf.new_zeros(channels)
    stats = torch.cat([mean, m2, xf.new_full((1,), float(n))]).unsqueeze(0)
    every = _GatherAll.apply(stats)                              # ranks x (2C + 1)
    means, m2s, counts = every[:, :channels], every[:, channels:2 * channels], every[:, 2 * channels:]
    total = counts.sum()
    batch_mean = (counts * means).sum(0) / total
    batch_m2 = (m2s + counts * (means - batch_mean) ** 2).sum(0)
    batch_var = batch_m2 / total
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            unbiased = batch_m2 / (total - 1).clamp(min=1)
            bn.running_mean.mul_(1 - factor).add_(factor * batch_mean.to(bn.running_mean.dtype))
            bn.running_var.mul_(1 - factor).add_(factor * unbiased.to(bn.running_var.dtype))
    y = (xf - batch_mean.view(shape)) * torch.rsqrt(batch_var.view(shape) + bn.eps)
    if bn.affine:
        y = y * bn.weight.to(y.dtype).view(shape) + bn.bias.to(y.dtype).view(shape)
    return y.to(x.dtype)


_PLAIN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_SYNCED: dict[type, type] = {}


def _synced_class(cls: type) -> type:
    if cls not in _SYNCED:
        _SYNCED[cls] = type(f"RankSynced{cls.__name__}", (RankSyncedStatistics, cls), {})
    return _SYNCED[cls]


def _supported(module: nn.Module) -> bool:
    cls = type(module)
    if cls in _PLAIN:
        return True
    # timm's BatchNormAct2d (and its variants): plain BatchNorm followed by dropout and activation
    return (cls.__module__.startswith("timm.") and issubclass(cls, nn.BatchNorm2d)
            and hasattr(module, "act") and hasattr(module, "drop"))


def routed_modules(model: nn.Module) -> set[int]:
    """Ids of the modules that see only some samples of a batch: the per-increment heads of
    multi-head models (``model.heads`` with more than one entry, which route each sample to
    its task's head). A rank runs such a head only when it holds samples for it, so a
    collective inside it could pair with another layer's on another rank."""
    heads = getattr(model, "heads", None)
    if isinstance(heads, nn.ModuleList) and len(heads) > 1:
        return {id(m) for head in heads for m in head.modules()}
    return set()


def sync_batchnorm(model: nn.Module) -> int:
    """Make the BatchNorm layers that every sample passes (backbones, text encoder, a single
    head) use whole-batch statistics across ranks, in place; those of per-increment heads
    keep per-rank statistics (:func:`routed_modules`). Returns how many layers were converted."""
    routed = routed_modules(model)
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              and not isinstance(m, RankSyncedStatistics) and id(m) not in routed]
    unsupported = [f"{name} ({type(m).__module__}.{type(m).__name__})" for name, m in layers if not _supported(m)]
    if unsupported:
        raise ConfigError("train.sync_batchnorm: these BatchNorm layers are of a kind it cannot synchronise (only "
                          "torch's BatchNorm1d/2d/3d and timm's BatchNormAct2d): " + ", ".join(unsupported[:5])
                          + (f" and {len(unsupported) - 5} more" if len(unsupported) > 5 else ""))
    for _, m in layers:
        m.__class__ = _synced_class(type(m))
    return len(layers)
