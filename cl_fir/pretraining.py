"""Pretrained starting points for the synthetic scenarios: the role ImageNet plays in the papers.

Every paper this project reproduces fine-tunes an ImageNet-pretrained ResNet. ImageNet's
images are not FashionAI's and its labels are object categories, not the attributes
retrieved later. The synthetic counterpart built here has the same relation to the
synthetic scenarios:

* **disjoint images**: images of the ``pretrain`` split of :mod:`cl_fir.data.synthfashion`,
  drawn from random streams that no train, valid or test image uses;
* **other labels**: the network is trained to classify each image's garment type, colour
  and fabric pattern. None of them is an attribute of any scenario (colour and pattern are
  nuisance there, and garment type is not retrieved), so the network learns generic
  features of the domain (edges, shapes, colour, texture) without the attributes themselves.

The whole timm classifier is trained (stem to last stage, global pooling, one linear
head per label); its state dict is saved with timm's own keys, so ``--weights FILE``
loads it like any timm checkpoint (the retrieval backbone uses the stages up to
``feature_index``), and a user can swap in real ImageNet weights the same way.

Training is deterministic on a given machine: images are rendered from their seeds, the
data order and augmentations come from one seeded generator, and the number of torch
threads is fixed (:attr:`PretrainConfig.threads`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cl_fir.files.atomic_io import atomic_path
from cl_fir.data.synthfashion import COLOURS, GARMENTS, GENERATOR_VERSION, PATTERNS, render_unlabelled
from cl_fir.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cl_fir.errors import ConfigError

#: Labels of the pretraining task and their classes.
LABELS = {"garment": GARMENTS, "colour": COLOURS, "pattern": PATTERNS}


@dataclass
class PretrainConfig:
    """Everything the pretrained weights depend on (recorded in the file)."""

    arch: str = "test_resnet"         # timm architecture (as the scenario's model.backbone)
    image_size: int = 64
    images: int = 10000               # rendered from the pretrain split
    epochs: int = 6
    batch_size: int = 64
    lr: float = 3e-3                  # Adam, cosine decay to 0 over all steps
    weight_decay: float = 1e-4
    seed: int = 0                     # data and training seed
    nuisance: float = 0.5
    threads: int = 1                  # torch threads (results depend on it bit for bit)

    def validate(self) -> None:
        checks = [(self.images >= self.batch_size, "--images", f"at least the batch size ({self.batch_size})"),
                  (self.epochs >= 1, "--epochs", "at least 1"), (self.batch_size >= 2, "--batch-size", "at least 2"),
                  (self.lr > 0, "--lr", "a number > 0"), (32 <= self.image_size <= 256, "--image-size", "in 32..256"),
                  (self.threads >= 1, "--threads", "at least 1")]
        for ok, option, expected in checks:
            if not ok:
                raise ConfigError(f"cl-fir pretrain {option}: expected {expected}")


class _Classifier(nn.Module):
    """A timm network without its classifier, and one linear head per label."""

    def __init__(self, arch: str):
        super().__init__()
        import timm

        if arch not in timm.list_models():
            raise ConfigError(f"cl-fir pretrain --arch: unknown timm architecture {arch!r}")
        self.body = timm.create_model(arch, pretrained=False, num_classes=0)
        self.heads = nn.ModuleDict({name: nn.Linear(self.body.num_features, len(classes))
                                    for name, classes in LABELS.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.body(x)
        return {name: head(z) for name, head in self.heads.items()}


def render_pretraining_set(cfg: PretrainConfig, first: int, count: int, progress: Callable[[int], None] | None = None
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images ``first .. first + count - 1`` of the pretrain split as a uint8 tensor (N, 3, H, W)
    and their labels (garment, colour, pattern indices)."""
    images = np.empty((count, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    labels = {name: np.empty(count, dtype=np.int64) for name in LABELS}
    for i in range(count):
        img, spec = render_unlabelled(cfg.seed, first + i, cfg.image_size, cfg.nuisance)
        images[i] = np.asarray(img)
        for name, classes in LABELS.items():
            labels[name][i] = classes.index(getattr(spec, name))
        if progress is not None:
            progress(1)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), {k: torch.from_numpy(v) for k, v in labels.items()}


def _normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def _augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and translations by up to 1/8 of the side (reflect padding)."""
    n, _, h, w = images.shape
    flip = torch.rand(n, generator=gen) < 0.5
    images = torch.where(flip.view(n, 1, 1, 1), images.flip(-1), images)
    pad = h // 8
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h))                     # n, h
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))                     # n, w
    batch = torch.arange(n).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)


def pretrain(cfg: PretrainConfig, log: Callable[[str], None] = print,
             progress_factory=None) -> tuple[dict[str, torch.Tensor], dict]:
    """Train the classifier on the pretraining set; returns the network's state dict (timm
    keys, without the label heads) and a report (config, accuracies on held-out images)."""
    cfg.validate()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _pretrain(cfg, log, progress_factory)
    finally:
        torch.set_num_threads(previous_threads)


def _pretrain(cfg: PretrainConfig, log, progress_factory) -> tuple[dict[str, torch.Tensor], dict]:
    held_out = max(cfg.batch_size, cfg.images // 10)
    start = time.perf_counter()
    if progress_factory is not None:
        with progress_factory(cfg.images + held_out, "rendering the pretraining images") as advance:
            train_x, train_y = render_pretraining_set(cfg, 0, cfg.images, advance)
            test_x, test_y = render_pretraining_set(cfg, cfg.images, held_out, advance)
    else:
        train_x, train_y = render_pretraining_set(cfg, 0, cfg.images)
        test_x, test_y = render_pretraining_set(cfg, cfg.images, held_out)
    log(f"rendered {cfg.images} + {held_out} held-out images in {time.perf_counter() - start:.1f} s")
    torch.manual_seed(cfg.seed)
    model = _Classifier(cfg.arch)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = cfg.images // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total) / total)))
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(cfg.images, generator=gen)
        losses = []
        t0 = time.perf_counter()
        for s in range(steps_per_epoch):
            idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            x = _normalise(_augment(train_x[idx], gen))
            out = model(x)
            loss = sum(F.cross_entropy(out[name], train_y[name][idx]) for name in LABELS)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {np.mean(losses):.3f} ({time.perf_counter() - t0:.1f} s)")
    accuracy = _accuracy(model, test_x, test_y, cfg.batch_size)
    log("held-out accuracy: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in accuracy.items()))
    state = {k: v.detach().clone() for k, v in model.body.state_dict().items()}
    report = {"recipe": asdict(cfg), "generator_version": GENERATOR_VERSION, "labels": {k: list(v) for k, v in
                                                                                      LABELS.items()},
              "held_out_images": held_out, "held_out_accuracy": accuracy, "torch": str(torch.__version__)}
    log(f"pretraining took {time.perf_counter() - start:.1f} s")   # not in the file: its bytes depend on nothing else
    return state, report


@torch.inference_mode()
def _accuracy(model: _Classifier, x: torch.Tensor, y: dict[str, torch.Tensor], batch: int) -> dict[str, float]:
    model.eval()
    hits = {name: 0 for name in LABELS}
    for s in range(0, x.shape[0], batch):
        out = model(_normalise(x[s:s + batch]))
        for name in LABELS:
            hits[name] += int((out[name].argmax(1) == y[name][s:s + batch]).sum())
    return {name: hits[name] / x.shape[0] for name in LABELS}


def save_weights(path: Path, state: dict[str, torch.Tensor], report: dict) -> str:
    """Write ``{"state_dict": ..., "pretraining": report}`` atomically; returns its sha256."""
    import io

    buffer = io.BytesIO()
    torch.save({"state_dict": state, "pretraining": report}, buffer)
    data = buffer.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def describe(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True)
