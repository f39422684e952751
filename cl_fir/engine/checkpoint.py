"""Checkpoints at increment boundaries, written atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from cl_fir.atomic_io import atomic_path


def save_checkpoint(path: Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)
