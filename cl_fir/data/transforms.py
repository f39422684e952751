"""Train and evaluation transforms (ASEN protocol: resize, centre crop, horizontal flip).

"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torchvision.transforms.v2 import functional as F

from cl_fir.data.pixels import Normalisation, Pixels

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TransformConfig:
    resize: int = 224          # shorter side, before the centre crop
    crop: int = 224
    hflip: bool = True         # training only
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Decode JPEGs at a reduced scale (1/2, 1/4, 1/8, in the DCT domain) when the shorter
    # side stays >= resize: a 512 px source decodes at 256 px for resize 224-256, 2-3x fewer
    # decoding operations. Pixels differ slightly from a full decode plus resize; false
    # decodes every image at full size.
    jpeg_draft: bool = True
    # Where images are decoded and transformed: "workers" (PIL in the loader workers) or
    # "device" (workers read the file; JPEGs are decoded in batches on the training device,
    # nvJPEG on CUDA, and resized, cropped, flipped and normalised there; see
    # data/device_decoding.py). jpeg_draft does not apply to "device".
    decode: str = "workers"
    # Where worker-decoded images become normalised floats: "workers", or "device" (workers
    # hand over uint8 crops, 4x fewer bytes through shared memory, pinning and the copy to the
    # device; normalised there, same values: data/pixels.py); "auto": device when training on
    # CUDA, else workers. With decode = "device" normalisation is always on the device.
    normalize: str = "auto"
    # Keep decoded images in memory, up to this many MiB of pixels per process (0: off), and
    # reuse them instead of decoding the file again (worker decoding only): for small datasets
    # read many times, such as the synthetic ones. Same pixels either way.
    cache_decoded_mb: int = 0


def resolve_normalize(cfg: TransformConfig, device: torch.device) -> TransformConfig:
    """``cfg`` with ``normalize = "auto"`` made concrete for training on ``device``."""
    if cfg.normalize != "auto":
        return cfg
    return replace(cfg, normalize="device" if torch.device(device).type == "cuda" else "workers")


def draft_min_side(cfg: TransformConfig) -> int | None:
    """The smallest shorter side a JPEG may be decoded at (``jpeg_draft``), or None for full size."""
    return cfg.resize if cfg.jpeg_draft else None


class ImageTransform:
    """PIL image -> normalised float tensor: resize (shorter side), centre crop, optional flip
    (with ``normalize = "device"``: the uint8 crop as :class:`~cl_fir.data.pixels.Pixels`).

    A plain callable rather than a ``v2.Compose``: at 64 px the per-call overhead of the
    composed version was larger than the work (0.19 vs 0.07 ms per image here). Resize
    and crop are skipped when the image already has the target size. The flip draws from
    torch's global RNG, which the training loop seeds for each sample from the epoch and the
    sample's position in it (``engine/loop.py``, ``SeededItems``), whichever worker loads it.
    """

    def __init__(self, cfg: TransformConfig, train: bool):
        self.resize, self.crop = cfg.resize, cfg.crop
        self.flip = train and cfg.hflip
        #: the normalisation, applied here or (``normalize = "device"``) left to the device:
        #: then uint8 :class:`Pixels` come out, and the device applies the same arithmetic
        self.norm = Normalisation(tuple(cfg.mean), tuple(cfg.std))
        self.normalize_here = cfg.normalize != "device"
        #: the smallest shorter side the decoder may produce (see ``TransformConfig.jpeg_draft``)
        self.decode_min_side = draft_min_side(cfg)

    def __call__(self, img) -> torch.Tensor:
        x = F.pil_to_tensor(img) if not isinstance(img, torch.Tensor) else img
        h, w = x.shape[-2:]
        if min(h, w) != self.resize:
            x = F.resize(x, [self.resize], antialias=True)
            h, w = x.shape[-2:]
        if (h, w) != (self.crop, self.crop):
            x = F.center_crop(x, [self.crop, self.crop])
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return self.norm(x) if self.normalize_here else Pixels(x, self.norm)

    def __repr__(self) -> str:
        where = "workers" if self.normalize_here else "device"
        return f"ImageTransform(resize={self.resize}, crop={self.crop}, flip={self.flip}, normalize={where})"


def build_transforms(cfg: TransformConfig):
    """Return ``(train, eval)``; they differ only by the random horizontal flip."""
    if cfg.decode == "device":
        from cl_fir.data.device_decoding import DeviceImageTransform

        return DeviceImageTransform(cfg, train=True), DeviceImageTransform(cfg, train=False)
    return ImageTransform(cfg, train=True), ImageTransform(cfg, train=False)


def build_reader(cfg: TransformConfig):
    """How datasets read an image file (in a loader worker): PIL, with draft decoding when
    ``jpeg_draft`` is on, keeping decoded images when ``cache_decoded_mb`` > 0; or, for
    ``decode = "device"``, the file's bytes. The train and
    eval transforms then work on what it returns."""
    if cfg.decode == "device":
        from cl_fir.data.device_decoding import EncodedReader

        return EncodedReader()
    from cl_fir.data.image_dataset import CachingReader, PilReader

    reader = PilReader(draft_min_side(cfg))
    return CachingReader(reader, cfg.cache_decoded_mb << 20) if cfg.cache_decoded_mb > 0 else reader
