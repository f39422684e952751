"""Decoding and transforming images on the training device (``transforms.decode = "device"``).

CPU workers decode a 224 px training image at about 125-300 images/s each
(``docs/performance.md``), so 16 cores feed about 2,000 images/s, half of what ResNet-50
trains at in bf16 on an H100. In this mode a loader worker only reads the file: a JPEG's
bytes go to the main process, which decodes the whole batch at once with
``torchvision.io.decode_jpeg`` on the training device (nvJPEG on CUDA), then resizes,
centre-crops, flips and normalises there, batching images of equal size.

What stays in the worker: reading the bytes, decoding non-JPEG files (PNG...) with PIL,
and drawing the flip from the sample's seed, exactly as :class:`~cl_fir.data.transforms.ImageTransform`
draws it, so the augmentation of every sample is the same in both modes and does not
depend on the number of workers.

A file the device cannot decode is decoded with PIL from its bytes instead; one PIL
cannot decode either becomes the mid-grey stand-in and is appended to the run's failure
log, as in worker decoding. The pixels of the two modes differ only by the decoder
(libjpeg-turbo in torchvision vs PIL's) and by draft decoding, which nvJPEG does not have:
a JPEG is always decoded at full size here.

torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec; they are
what the pinned versions provide, and the warning is silenced where they are called.
"""

from __future__ import annotations

import io
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import default_collate
from torchvision.transforms.v2 import functional as F

from cl_fir.data.pixels import Normalisation, PixelBatch, Pixels
from cl_fir.runtime.device import host_to_device

_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class DeviceTransformSpec:
    """Resize (shorter side), centre crop and normalisation applied on the device."""
    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass
class EncodedImage:
    """What a loader worker hands over: a JPEG's file bytes (``data``) or, for other files
    and stand-ins, decoded uint8 pixels (``pixels``, 3 x H x W); plus the flip drawn for it
    and the transform to apply (set by :class:`DeviceImageTransform`)."""
    path: str
    data: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    flip: bool = False
    spec: DeviceTransformSpec | None = None
    failure_log: str | None = None


def _pil_pixels(img: Image.Image) -> torch.Tensor:
    return F.pil_to_tensor(img.convert("RGB"))


def _decode_jpeg(data, device: torch.device):
    """torchvision's JPEG decoder (one tensor or a list) on ``device``, its deprecation warning silenced."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


class EncodedReader:
    """Reads an image file in a loader worker for decoding on the device: the bytes of a
    JPEG, the PIL-decoded pixels of anything else."""

    def __call__(self, path: str | Path) -> EncodedImage:
        raw = Path(path).read_bytes()
        if raw[:3] == _JPEG_MAGIC:
            return EncodedImage(str(path), data=torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        with Image.open(io.BytesIO(raw)) as img:
            return EncodedImage(str(path), pixels=_pil_pixels(img))

    @staticmethod
    def stand_in() -> EncodedImage:
        from cl_fir.data.image_dataset import PilReader

        return EncodedImage("<stand-in>", pixels=_pil_pixels(PilReader.stand_in()))


class DeviceImageTransform:
    """The worker's half of the transform: draws the flip (training only, from torch's
    global RNG, which the loop seeds per sample) and names the device's half."""

    def __init__(self, cfg, train: bool):
        self.flip = train and cfg.hflip
        self.spec = DeviceTransformSpec(cfg.resize, cfg.crop, tuple(cfg.mean), tuple(cfg.std))

    def __call__(self, image: EncodedImage) -> EncodedImage:
        if not isinstance(image, EncodedImage):
            raise TypeError(f"transforms.decode = 'device' expects the dataset to read images with EncodedReader, "
                            f"got {type(image).__name__}")
        image.flip = bool(self.flip and torch.rand(()) < 0.5)
        image.spec = self.spec
        return image

    def __repr__(self) -> str:
        s = self.spec
        return f"DeviceImageTransform(resize={s.resize}, crop={s.crop}, flip={self.flip})"


class EncodedBatch:
    """A batch of :class:`EncodedImage`; ``decode_on(device)`` gives the normalised float
    batch (N x 3 x crop x crop) on that device."""

    def __init__(self, items: list[EncodedImage]):
        specs = {it.spec for it in items}
        if len(specs) != 1 or None in specs:
            raise ValueError("an encoded batch needs one DeviceImageTransform for all its images")
        self.items, self.spec = items, specs.pop()

    def __len__(self) -> int:
        return len(self.items)

    def pin_memory(self) -> "EncodedBatch":
        return self      # the decoder reads host bytes; decoded pixels are copied per size group

    def decode_on(self, device: torch.device | str) -> torch.Tensor:
        device = torch.device(device)
        images = self._decoded(device)
        s = self.spec
        by_size: dict[tuple, list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            by_size[tuple(img.shape)].append(i)
        out = None if len(by_size) == 1 else \
            torch.empty((len(images), 3, s.crop, s.crop), dtype=torch.float32, device=device)
        for (_, h, w), rows in by_size.items():   # one resize per distinct source size
            x = torch.stack([images[i] for i in rows])
            if min(h, w) != s.resize:
                x = F.resize(x, [s.resize], antialias=True)
            if tuple(x.shape[-2:]) != (s.crop, s.crop):
                x = F.center_crop(x, [s.crop, s.crop])
            if out is None:
                out = x.float()
            else:
                out[host_to_device(torch.as_tensor(rows), device)] = x.float()
        flips = [it.flip for it in self.items]     # host values: no device sync to test them
        if any(flips):
            mask = host_to_device(torch.tensor(flips), device).view(-1, 1, 1, 1)
            out = torch.where(mask, out.flip(-1), out)
        return Normalisation(s.mean, s.std)(out)

    def _decoded(self, device: torch.device) -> list[torch.Tensor]:
        """uint8 3 x H x W per image, on ``device``: JPEGs decoded there in one call."""
        images: list[torch.Tensor | None] = [None] * len(self.items)
        jpegs = [i for i, it in enumerate(self.items) if it.data is not None]
        if jpegs:
            try:
                decoded = _decode_jpeg([self.items[i].data for i in jpegs], device)
            except RuntimeError:   # one bad file fails the whole call: decode them one by one
                decoded = [self._decode_one(self.items[i], device) for i in jpegs]
            for i, img in zip(jpegs, decoded):
                images[i] = img
        for i, it in enumerate(self.items):
            if images[i] is None:
                images[i] = it.pixels.to(device, non_blocking=True)
        return images

    @staticmethod
    def _decode_one(item: EncodedImage, device: torch.device) -> torch.Tensor:
        from cl_fir.data.image_dataset import record_load_failure

        try:
            return _decode_jpeg(item.data, device)
        except RuntimeError:
            pass
        try:   # e.g. a JPEG variant the device decoder does not handle
            with Image.open(io.BytesIO(item.data.numpy().tobytes())) as img:
                return _pil_pixels(img).to(device)
        except Exception as exc:   # PIL raises OSError, SyntaxError, ValueError... on bad files
            record_load_failure(item.failure_log, item.path, exc)
            return EncodedReader.stand_in().pixels.to(device)


def _deferred_batch(items: list):
    """The batch of images whose last steps run on the device, or None for other fields."""
    if isinstance(items[0], EncodedImage):
        return EncodedBatch(items)
    if isinstance(items[0], Pixels):
        return PixelBatch.collate(items)
    return None


def collate_images(batch: list):
    """``default_collate``, except that fields holding :class:`EncodedImage` become an
    :class:`EncodedBatch` and fields holding :class:`~cl_fir.data.pixels.Pixels` a
    :class:`~cl_fir.data.pixels.PixelBatch` (the loop and the evaluators finish them on
    their device, ``decode_on``)."""
    whole = _deferred_batch(batch)
    if whole is not None:
        return whole
    first = batch[0]
    if isinstance(first, (tuple, list)) and any(isinstance(f, (EncodedImage, Pixels)) for f in first):
        columns = [list(col) for col in zip(*batch)]
        return [default_collate(col) if (done := _deferred_batch(col)) is None else done for col in columns]
    return default_collate(batch)
