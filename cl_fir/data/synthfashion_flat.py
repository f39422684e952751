"""``synthfashion-flat``: the first synthetic generator (generator version 4), kept so that
numbers measured on it can be reproduced (``[dataset] reader = "synthfashion-flat"``).

Unlike :mod:`cl_fir.data.synthfashion`, which copies FashionAI's structure, every image
here shows one garment type with all eight attributes visible, so every increment shares
one input distribution and every new image also displays the old attributes:

============== ======================================================================
silhouette     straight, a_line, fitted, boxy, tapered
sleeve_length  sleeveless, cap, short, elbow, three_quarter, long
hem_length     crop, hip, thigh, knee, midi, ankle
neckline       round, v_neck, square, boat, turtleneck
colour         red, orange, yellow, green, teal, blue, purple, pink
pattern        solid, h_stripes, v_stripes, dots, checks, diagonal
closure        none, buttons, zip, belt, wrap
pocket         none, chest, hip_pair, kangaroo
============== ======================================================================

All eight are drawn at random for every image, so retrieval by one attribute must
ignore the other seven. Nuisance variation (position, scale, rotation, pattern phase and
period, background tint and gradient, background clutter, brightness, pixel noise)
keeps the task from being trivial.

The dataset is written in the ASEN/FashionAI meta format
(``meta.json`` + ``<Dataset>/filenames_*.txt``, ``label_train.txt``, ``query_*``,
``candidate_*``) and read back through :mod:`cl_fir.data.asen_meta`, the same code path
the real FashionAI, DARN and DeepFashion readers use. Like FashionAI, every image is
annotated with exactly one attribute (its "task"), so the tasks are disjoint in images.

Rendering is deterministic: image ``i`` of split ``s`` is drawn from its own RNG seeded
by ``(seed, s, i)``, independent of worker count.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cl_fir.data.synth_cache import default_cache_dir, ensure_generated
from cl_fir.data.synth_writer import SPLIT_IDS, write_asen_copy
from cl_fir.data.synth_drawing import HUES as _HUES
from cl_fir.data.synth_drawing import background as _background
from cl_fir.data.synth_drawing import mix as _mix
from cl_fir.data.synth_drawing import pattern as _pattern
from cl_fir.data.synth_drawing import rgb as _rgb


DATASET_KEY = "SynthFashionFlat"
#: Bump when rendering changes, so cached copies are regenerated.
GENERATOR_VERSION = 4

#: Attribute names in meta order, with their value names in index order. Contiguous
#: pairs are about equally hard for a small network trained from scratch (measured: MAP
#: after 64 steps alone), so ``groups = 4`` gives increments in which neither attribute
#: starves the other of gradient; an easy attribute such as colour paired with a hard one
#: suppresses the hard one completely (feature suppression). Later pairs are harder.
ATTRIBUTES: dict[str, list[str]] = {
    "colour": ["red", "orange", "yellow", "green", "teal", "blue", "purple", "pink"],
    "hem_length": ["crop", "hip", "thigh", "knee", "midi", "ankle"],
    "pattern": ["solid", "h_stripes", "v_stripes", "dots", "checks", "diagonal"],
    "closure": ["none", "buttons", "zip", "belt", "wrap"],
    "sleeve_length": ["sleeveless", "cap", "short", "elbow", "three_quarter", "long"],
    "neckline": ["round", "v_neck", "square", "boat", "turtleneck"],
    "silhouette": ["straight", "a_line", "fitted", "boxy", "tapered"],
    "pocket": ["none", "chest", "hip_pair", "kangaroo"],
}
ATTRIBUTE_NAMES = list(ATTRIBUTES)

_SUPERSAMPLE = 3
_HEM = [0.55, 0.85, 1.15, 1.5, 1.85, 2.2]           # body length / shoulder width
_SLEEVE = [0.0, 0.18, 0.4, 0.64, 0.88, 1.12]        # sleeve length / shoulder width


@dataclass
class SynthFashionConfig:
    """Size and seed of a generated copy; the cache folder name is derived from it."""

    seed: int = 0
    image_size: int = 64
    train_per_attribute: int = 500
    queries_per_attribute: int = 50       # per evaluation split (valid, test)
    candidates_per_attribute: int = 200   # per evaluation split; 1:4 as in FashionAI
    nuisance: float = 0.5                 # scales position/scale/rotation jitter, clutter, noise, brightness

    def fingerprint(self) -> str:
        payload = json.dumps({"version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:10]

    def validate(self) -> None:
        from cl_fir.errors import ConfigError

        if not 0.0 <= self.nuisance <= 2.0:
            raise ConfigError(f"synthfashion nuisance must be in 0..2, got {self.nuisance}")
        if not 32 <= self.image_size <= 256:
            raise ConfigError(f"synthfashion image_size must be in 32..256, got {self.image_size}")
        for field in ("train_per_attribute", "queries_per_attribute", "candidates_per_attribute"):
            value = getattr(self, field)
            if value < max(len(v) for v in ATTRIBUTES.values()):
                raise ConfigError(
                    f"synthfashion {field} must be at least {max(len(v) for v in ATTRIBUTES.values())} "
                    f"(one image per value), got {value}"
                )


# --------------------------------------------------------------------------- rendering


def render_garment(values: dict[str, int], rng: np.random.Generator, image_size: int,
                   nuisance: float = 1.0) -> Image.Image:
    """Render one garment with the given attribute value indices."""
    name = {a: ATTRIBUTES[a][values[a]] for a in ATTRIBUTE_NAMES}
    S = image_size * _SUPERSAMPLE
    k = nuisance
    bg = _background(rng, S, k, stroke=_SUPERSAMPLE)

    # Geometry in units of the shoulder width W; y grows downwards from the shoulder line.
    H = _HEM[values["hem_length"]]
    top = S * (0.16 + k * rng.uniform(-0.04, 0.04))
    max_unit = (S * 0.97 - top) / (H + 0.05)
    unit = min(S * 0.36 * (1 + k * rng.uniform(-0.14, 0.12)), max_unit)
    cx = S / 2 + k * rng.uniform(-0.12, 0.12) * S

    def P(x: float, y: float) -> tuple[float, float]:
        return (cx + x * unit, top + y * unit)

    sil = name["silhouette"]
    sh = 0.64 if sil == "boxy" else 0.5
    bottom = {"straight": 0.5, "a_line": 0.5 + 0.36 * H, "fitted": 0.5, "boxy": 0.64,
              "tapered": 0.5 - 0.15 * min(H, 1.6)}[sil]
    shoulder_x = 0.34 if name["sleeve_length"] == "sleeveless" else sh
    right = [P(0.2, -0.04), P(shoulder_x, 0.06)]
    if name["sleeve_length"] == "sleeveless":
        right.append(P(sh - 0.06, 0.2))
    right.append(P(sh, 0.34))
    if sil == "fitted" and H > 0.8:
        right.append(P(0.3, 0.62))
    right.append(P(bottom, H))
    body = right + [(2 * cx - x, y) for (x, y) in reversed(right)]

    mask = Image.new("L", (S, S), 0)
    mdraw = ImageDraw.Draw(mask)
    mdraw.polygon(body, fill=255)
    sleeves = []
    L = _SLEEVE[values["sleeve_length"]]
    if L > 0:
        theta = math.radians(62)
        dx, dy = math.cos(theta) * L, math.sin(theta) * L
        for side in (1, -1):
            p1, p4 = (side * sh, 0.05), (side * sh, 0.38)
            p2 = (p1[0] + side * dx, p1[1] + dy)
            p3 = (p4[0] + side * dx * 0.82, p4[1] + dy * 0.9)
            poly = [P(*p1), P(*p2), P(*p3), P(*p4)]
            sleeves.append(poly)
            mdraw.polygon(poly, fill=255)
    # Neckline: a cut-out of the mask, edged with a dark band on the fabric (drawn below).
    collar = None
    neck = name["neckline"]
    cut = None   # (kind, geometry) of the cut-out, for the edge band
    if neck == "turtleneck":
        collar = [P(-0.2, -0.22), P(0.2, -0.22), P(0.22, 0.0), P(-0.22, 0.0)]
        mdraw.polygon(collar, fill=255)
    elif neck == "round":
        cut = ("ellipse", [P(-0.24, -0.14), P(0.24, 0.24)])
    elif neck == "v_neck":
        cut = ("polygon", [P(-0.2, -0.06), P(0.2, -0.06), P(0.0, 0.55)])
    elif neck == "square":
        cut = ("rectangle", [P(-0.22, -0.06), P(0.22, 0.26)])
    elif neck == "boat":
        cut = ("ellipse", [P(-0.44, -0.1), P(0.44, 0.1)])

    # Fabric: base colour, pattern in a same-hue shade, outlines, closure, pockets.
    hue = _HUES[name["colour"]] + rng.uniform(-0.02, 0.02)
    base = _rgb(hue, rng.uniform(0.55, 0.9), rng.uniform(0.62, 0.95))
    shade = _mix(base, (0, 0, 0), 0.45) if sum(base) > 330 else _mix(base, (255, 255, 255), 0.5)
    dark = _mix(base, (0, 0, 0), 0.65)
    fabric = Image.new("RGB", (S, S), base)
    fdraw = ImageDraw.Draw(fabric)
    _pattern(fdraw, name["pattern"], shade, S, unit, rng)
    line_w = max(1, int(round(unit * 0.03)))
    for poly in [body, *sleeves] + ([collar] if collar else []):
        fdraw.polygon(poly, outline=dark, width=line_w)
    if cut is not None:
        kind, geom = cut
        getattr(fdraw, kind)(geom, outline=dark, width=line_w * 3)
        getattr(mdraw, kind)(geom, fill=0)

    trim = (25, 25, 30) if rng.random() < 0.5 else (235, 235, 225)
    clos = name["closure"]
    if clos == "buttons":
        r = 0.075 * unit
        n = 4 if H > 0.8 else 3
        for k in range(n):
            x, y = P(0.0, 0.18 + k * (min(H, 1.2) - 0.3) / max(n - 1, 1))
            fdraw.ellipse([x - r, y - r, x + r, y + r], fill=trim)
    elif clos == "zip":
        fdraw.line([P(0.0, 0.1), P(0.0, H)], fill=(170, 170, 180), width=max(1, int(unit * 0.07)))
        x, y = P(0.0, 0.12)
        fdraw.rectangle([x - 0.07 * unit, y, x + 0.07 * unit, y + 0.14 * unit], fill=(90, 90, 100))
    elif clos == "belt":
        y0 = min(0.62, 0.6 * H)
        fdraw.rectangle([P(-1.0, y0), P(1.0, y0 + 0.15)], fill=(45, 32, 22))
        fdraw.rectangle([P(-0.08, y0 - 0.02), P(0.08, y0 + 0.17)], outline=(212, 175, 55), width=line_w * 2)
    elif clos == "wrap":
        fdraw.line([P(-0.2, 0.0), P(bottom * 0.9, min(0.8, 0.85 * H))], fill=trim, width=max(1, int(unit * 0.08)))

    pocket = name["pocket"]
    if pocket == "chest":
        fdraw.rectangle([P(0.1, 0.18), P(0.36, 0.42)], fill=trim, outline=dark, width=line_w)
    elif pocket == "hip_pair":
        y0 = 0.5 * H
        for side in (1, -1):
            xs = sorted([side * 0.1, side * 0.38])
            fdraw.rectangle([P(xs[0], y0), P(xs[1], y0 + 0.26)], fill=trim, outline=dark, width=line_w)
    elif pocket == "kangaroo":
        y0 = 0.5 * H
        fdraw.polygon([P(-0.22, y0), P(0.22, y0), P(0.34, y0 + 0.3), P(-0.34, y0 + 0.3)], fill=trim,
                      outline=dark, width=line_w)

    angle = k * rng.uniform(-7, 7)
    centre = (cx, top + unit * H / 2)
    # One rotation of fabric+mask as RGBA; bilinear is enough on the supersampled canvas.
    fabric.putalpha(mask)
    fabric = fabric.rotate(angle, resample=Image.BILINEAR, center=centre)
    bg.paste(fabric, (0, 0), fabric)
    img = bg.resize((image_size, image_size), Image.LANCZOS)

    arr = np.asarray(img, dtype=np.float32)
    arr = arr * (1 + k * rng.uniform(-0.1, 0.1)) + k * rng.uniform(-12, 12)
    arr = arr + rng.normal(0.0, k * rng.uniform(2.0, 8.0), size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- dataset


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_IDS[split], index])


def _render_one(job: tuple) -> None:
    """Worker: render image ``index`` of ``split`` with the annotated value forced."""
    seed, split, index, attr, value, image_size, nuisance, out = job
    rng = _image_rng(seed, split, index)
    values = {name: int(rng.integers(len(vals))) for name, vals in ATTRIBUTES.items()}
    values[ATTRIBUTE_NAMES[attr]] = value
    render_garment(values, rng, image_size, nuisance).save(out, compress_level=1)


def generate(cfg: SynthFashionConfig, root: Path, workers: int | None = None, progress=None) -> None:
    """Write a complete dataset copy under ``root``; ``meta.json`` is written last."""
    write_asen_copy(cfg, root, DATASET_KEY, ATTRIBUTES, "synthfashion-flat", GENERATOR_VERSION, _render_one, workers, progress)

def ensure_synthfashion_flat(cfg: SynthFashionConfig, cache_dir: Path | None = None, workers: int | None = None,
                             progress_factory=None) -> Path:
    """The data root of a complete copy, generated on first use (see :mod:`cl_fir.data.synth_cache`)."""
    cfg.validate()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    final = cache_dir / f"synthfashion-flat-{cfg.fingerprint()}"
    total = len(ATTRIBUTE_NAMES) * (cfg.train_per_attribute
                                    + 2 * (cfg.queries_per_attribute + cfg.candidates_per_attribute))

    def build(folder: Path) -> None:
        if progress_factory is None:
            generate(cfg, folder, workers)
            return
        with progress_factory(total, f"generating synthfashion-flat into {final}") as advance:
            generate(cfg, folder, workers, advance)

    return ensure_generated(final, build, "meta.json")
