"""Device and precision selection (CUDA when present; bf16 autocast and channels_last there)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from cl_fir.runtime.host_copies import keep_host_copy
from cl_fir.runtime.host_syncs import host_only
from cl_fir.errors import ConfigError


def host_to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A CPU tensor on ``device`` without a stream synchronisation: through pinned memory
    and an asynchronous copy on CUDA (see :meth:`DeviceSetup.from_host`)."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


@dataclass
class DeviceSetup:
    device: torch.device
    precision: str            # "fp32" or "bf16"
    channels_last: bool

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    @property
    def name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"cpu ({torch.get_num_threads()} threads)"

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def from_host(self, data, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Host data (a list, an array or a CPU tensor) as a tensor on the device, without
        making the host wait: on CUDA it is staged in pinned memory and copied
        asynchronously, in stream order. (``torch.as_tensor(data, device=...)`` and
        ``t.to(device)`` synchronise the stream after the copy: the host waits for every
        queued kernel, ``runtime/host_syncs.py``.) For integer data the host keeps a copy
        (``runtime/host_copies.py``), so routing by these values reads nothing back."""
        host = torch.as_tensor(data, dtype=dtype)
        on_device = host_to_device(host, self.device)
        if host.device.type == "cpu" and not host.is_floating_point() and not host.is_complex():
            with host_only():
                keep_host_copy(on_device, host.numpy())
        return on_device

    def to_device(self, images) -> torch.Tensor:
        """A batch of images on the device; an encoded batch (``transforms.decode = "device"``)
        is decoded and transformed there."""
        decode_on = getattr(images, "decode_on", None)
        images = decode_on(self.device) if decode_on else images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def describe(self) -> dict:
        return {"device": str(self.device), "name": self.name, "precision": self.precision,
                "channels_last": self.channels_last}


def resolve_device(spec: str = "auto", precision: str = "auto") -> DeviceSetup:
    if spec == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(spec)
        except RuntimeError:
            raise ConfigError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: CUDA is not available on this machine (use --device cpu or auto)")
        if device.type not in ("cpu", "cuda"):
            raise ConfigError(f"--device {spec!r}: only cpu and cuda are supported")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"--precision {precision!r}: expected auto, fp32 or bf16")
    return DeviceSetup(device, precision, channels_last=device.type == "cuda")
