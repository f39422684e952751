"""Drawing primitives shared by the synthetic generators: colours, backgrounds, fabric
patterns and the photometric nuisance applied to a finished render.

Everything draws from the ``numpy`` generator it is given, so a render is a pure function
of its seed.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

#: Fabric hues by colour name (HSV hue in [0, 1)).
HUES = {"red": 0.0, "orange": 0.075, "yellow": 0.15, "green": 0.33, "teal": 0.48,
        "blue": 0.61, "purple": 0.76, "pink": 0.90}
#: Fabric patterns; ``solid`` draws nothing.
PATTERNS = ("solid", "h_stripes", "v_stripes", "dots", "checks", "diagonal")


def rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def mix(c1: tuple[int, int, int], c2: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(int(round(a * (1 - t) + b * t)) for a, b in zip(c1, c2))  # type: ignore[return-value]


def background(rng: np.random.Generator, size: int, nuisance: float, stroke: int = 3) -> Image.Image:
    """Low-saturation tinted gradient with a few faint clutter shapes (``stroke``: line width unit)."""
    h = rng.random()
    c1 = np.array(rgb(h, rng.uniform(0.0, 0.14), rng.uniform(0.55, 0.97)), dtype=np.float32)
    c2 = np.array(rgb(h + rng.uniform(-0.1, 0.1), rng.uniform(0.0, 0.14), rng.uniform(0.55, 0.97)),
                  dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    # The gradient is smooth, so compute it on a coarse grid and upscale.
    yy, xx = np.mgrid[0:16, 0:16].astype(np.float32) / 15
    t = np.clip(0.5 + (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle), 0, 1)[..., None]
    img = Image.fromarray((c1 * (1 - t) + c2 * t).astype(np.uint8), "RGB").resize((size, size), Image.BILINEAR)
    draw = ImageDraw.Draw(img, "RGBA")
    for _ in range(int(round(rng.integers(0, 4) * nuisance))):
        col = rgb(rng.random(), rng.uniform(0.0, 0.2), rng.uniform(0.4, 1.0)) + (int(rng.integers(30, 90)),)
        x0, y0 = rng.uniform(-0.2, 1.0, size=2) * size
        w, hh = rng.uniform(0.1, 0.5, size=2) * size
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + w, y0 + hh], fill=col)
        else:
            draw.line([x0, y0, x0 + w, y0 + hh], fill=col, width=int(rng.integers(1, 4)) * stroke)
    return img


def pattern(draw: ImageDraw.ImageDraw, kind: str, colour, size: int, unit: float, rng) -> None:
    """Draw a repeating pattern over the whole fabric canvas (clipped later by the mask)."""
    period = unit * 0.2 * rng.uniform(0.85, 1.15)
    phase = rng.uniform(0, period)
    thick = max(1.0, period * 0.45)
    steps = int(size / period) + 3
    if kind == "h_stripes":
        for k in range(-1, steps):
            y = phase + k * period
            draw.rectangle([0, y, size, y + thick], fill=colour)
    elif kind == "v_stripes":
        for k in range(-1, steps):
            x = phase + k * period
            draw.rectangle([x, 0, x + thick, size], fill=colour)
    elif kind == "checks":
        line = max(1.0, period * 0.22)
        for k in range(-1, steps):
            p = phase + k * period
            draw.rectangle([0, p, size, p + line], fill=colour)
            draw.rectangle([p, 0, p + line, size], fill=colour)
    elif kind == "dots":
        r = period * 0.26
        for i in range(-1, steps):
            for j in range(-1, steps):
                cx = phase + j * period + (period / 2 if i % 2 else 0)
                cy = phase + i * period
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "diagonal":
        for k in range(-steps, 2 * steps):
            x = phase + k * period
            draw.line([x, 0, x + size, size], fill=colour, width=int(max(1, thick * 0.8)))
    # "solid": nothing to draw


def fabric_colours(hue: float, rng) -> tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]:
    """Base colour of a fabric of ``hue``, the shade its pattern is drawn in, and its outline colour."""
    base = rgb(hue + rng.uniform(-0.02, 0.02), rng.uniform(0.55, 0.9), rng.uniform(0.62, 0.95))
    shade = mix(base, (0, 0, 0), 0.45) if sum(base) > 330 else mix(base, (255, 255, 255), 0.5)
    return base, shade, mix(base, (0, 0, 0), 0.65)


def photometric(img: Image.Image, rng, nuisance: float) -> Image.Image:
    """Brightness and contrast jitter, then Gaussian pixel noise, scaled by ``nuisance``."""
    arr = np.asarray(img, dtype=np.float32)
    arr = arr * (1 + nuisance * rng.uniform(-0.1, 0.1)) + nuisance * rng.uniform(-12, 12)
    arr = arr + rng.normal(0.0, nuisance * rng.uniform(2.0, 8.0), size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
