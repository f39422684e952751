"""A second, randomly distorted view of a batch, made on the device.

MCL-FIR's reference loader builds a RandomPerspective(0.4) view for the teacher (and then
loses it to an argument bug, docs/strategies.md). Here the view is a per-sample
random affine warp (rotation, scale, shear, translation) plus a random horizontal flip,
applied to the already-normalised batch with ``affine_grid``/``grid_sample``: one
vectorised operation on CPU or GPU, with no second trip through the data loader.
Randomness comes from torch's global RNG, which the loop seeds per epoch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine_thetas(n: int, strength: float = 1.0) -> torch.Tensor:
    """``n`` random affine matrices (n x 2 x 3, on CPU): the parameters of :func:`random_affine_view`."""
    u = lambda: torch.rand(n) * 2 - 1  # noqa: E731 - uniform in [-1, 1]
    angle = u() * math.radians(12) * strength
    scale = 1 + u() * 0.12 * strength
    shear = u() * 0.2 * strength
    tx, ty = u() * 0.08 * strength, u() * 0.08 * strength
    flip = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack([
        torch.stack([cos * flip, -sin + shear, tx], dim=1),
        torch.stack([sin * flip, cos, ty], dim=1),
    ], dim=1)


def random_affine_view(images: torch.Tensor, strength: float = 1.0, thetas: torch.Tensor | None = None) -> torch.Tensor:
    """The batch warped by ``thetas`` (drawn here when None; the training loop's
    ``per_sample_draw`` gives each process the rows a single process would draw)."""
    if thetas is None:
        thetas = random_affine_thetas(images.shape[0], strength)
    theta = thetas.to(device=images.device, dtype=images.dtype, non_blocking=True)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
