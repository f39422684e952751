"""``synthfashion``: procedurally rendered garments for offline attribute-specific retrieval.

Each image shows one garment with eight attributes, every one of them visible:

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

import colorsys
import hashlib
import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cl_fir.data import cached_copy

DATASET_KEY = "SynthFashion"
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

_SPLITS = {"train": 0, "valid": 1, "test": 2}
_SUPERSAMPLE = 3
_HUES = {"red": 0.0, "orange": 0.075, "yellow": 0.15, "green": 0.33, "teal": 0.48,
         "blue": 0.61, "purple": 0.76, "pink": 0.90}
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


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _mix(c1: tuple[int, int, int], c2: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(int(round(a * (1 - t) + b * t)) for a, b in zip(c1, c2))  # type: ignore[return-value]


def _background(rng: np.random.Generator, size: int, nuisance: float) -> Image.Image:
    """Low-saturation tinted gradient with a few faint clutter shapes."""
    h = rng.random()
    c1 = np.array(_rgb(h, rng.uniform(0.0, 0.14), rng.uniform(0.55, 0.97)), dtype=np.float32)
    c2 = np.array(_rgb(h + rng.uniform(-0.1, 0.1), rng.uniform(0.0, 0.14), rng.uniform(0.55, 0.97)),
                  dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    # The gradient is smooth, so compute it on a coarse grid and upscale.
    yy, xx = np.mgrid[0:16, 0:16].astype(np.float32) / 15
    t = np.clip(0.5 + (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle), 0, 1)[..., None]
    img = Image.fromarray((c1 * (1 - t) + c2 * t).astype(np.uint8), "RGB").resize((size, size), Image.BILINEAR)
    draw = ImageDraw.Draw(img, "RGBA")
    for _ in range(int(round(rng.integers(0, 4) * nuisance))):
        col = _rgb(rng.random(), rng.uniform(0.0, 0.2), rng.uniform(0.4, 1.0)) + (int(rng.integers(30, 90)),)
        x0, y0 = rng.uniform(-0.2, 1.0, size=2) * size
        w, hh = rng.uniform(0.1, 0.5, size=2) * size
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + w, y0 + hh], fill=col)
        else:
            draw.line([x0, y0, x0 + w, y0 + hh], fill=col, width=int(rng.integers(1, 4)) * _SUPERSAMPLE)
    return img


def _pattern(draw: ImageDraw.ImageDraw, kind: str, colour, size: int, unit: float, rng) -> None:
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


def render_garment(values: dict[str, int], rng: np.random.Generator, image_size: int,
                   nuisance: float = 1.0) -> Image.Image:
    """Render one garment with the given attribute value indices."""
    name = {a: ATTRIBUTES[a][values[a]] for a in ATTRIBUTE_NAMES}
    S = image_size * _SUPERSAMPLE
    k = nuisance
    bg = _background(rng, S, k)

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
    return np.random.default_rng([seed, _SPLITS[split], index])


def _plan_split(cfg: SynthFashionConfig, split: str):
    """Annotated (attribute, value) per image, and which eval images are queries.

    Values of the annotated attribute are stratified so that every value occurs (with
    at least one candidate in each eval split); image order is shuffled as in FashionAI.
    """
    rng = np.random.default_rng([cfg.seed, _SPLITS[split], 10**6])
    rows = []  # (attr, value, is_query)
    for a, name in enumerate(ATTRIBUTE_NAMES):
        n_values = len(ATTRIBUTES[name])
        roles = [False] * cfg.train_per_attribute if split == "train" else (
            [True] * cfg.queries_per_attribute + [False] * cfg.candidates_per_attribute)
        for is_query in (False, True):
            count = sum(1 for r in roles if r == is_query)
            vals = rng.permutation(np.arange(count) % n_values)
            rows.extend((a, int(v), is_query) for v in vals)
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def _render_one(job: tuple) -> None:
    """Worker: render image ``index`` of ``split`` with the annotated value forced."""
    seed, split, index, attr, value, image_size, nuisance, out = job
    rng = _image_rng(seed, split, index)
    values = {name: int(rng.integers(len(vals))) for name, vals in ATTRIBUTES.items()}
    values[ATTRIBUTE_NAMES[attr]] = value
    render_garment(values, rng, image_size, nuisance).save(out, compress_level=1)


def generate(cfg: SynthFashionConfig, root: Path, workers: int | None = None, progress=None) -> None:
    """Write a complete dataset copy under ``root`` (which must not exist yet)."""
    ds_dir = root / DATASET_KEY
    jobs = []
    files: dict[str, list[str]] = {}
    for split in _SPLITS:
        (ds_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        plan = _plan_split(cfg, split)
        names, labels, queries, candidates = [], [], [], []
        for i, (a, v, is_query) in enumerate(plan):
            rel = f"images/{split}/{i:06d}.png"
            names.append(rel)
            jobs.append((cfg.seed, split, i, a, v, cfg.image_size, cfg.nuisance, str(ds_dir / rel)))
            line = f"{i} {a} {v}"
            if split == "train":
                labels.append(line)
            else:
                (queries if is_query else candidates).append(line)
        files[f"filenames_{split}.txt"] = names
        if split == "train":
            files["label_train.txt"] = labels
        else:
            files[f"query_{split}.txt"] = queries
            files[f"candidate_{split}.txt"] = candidates
    for fname, lines in files.items():
        (ds_dir / fname).write_text("\n".join(lines) + "\n")
    meta = {DATASET_KEY: {
        "ATTRIBUTES": ATTRIBUTE_NAMES,
        "ATTRIBUTES_NUM": {a: len(v) for a, v in ATTRIBUTES.items()},
        "ATTRIBUTES_VALUES": ATTRIBUTES,
    }}
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (ds_dir / "generator.json").write_text(json.dumps(
        {"generator": "synthfashion", "version": GENERATOR_VERSION, **asdict(cfg)}, indent=2) + "\n")

    workers = workers or max(1, min(4, os.cpu_count() or 1))
    if workers == 1 or len(jobs) < 256:   # a process pool costs more than it saves on tiny copies
        for job in jobs:
            _render_one(job)
            if progress:
                progress()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_render_one, jobs, chunksize=64):
                if progress:
                    progress()


def default_cache_dir() -> Path:
    env = os.environ.get("CL_FIR_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cl-fir"


def ensure_synthfashion(cfg: SynthFashionConfig, cache_dir: Path | None = None, workers: int | None = None,
                        progress_factory=None) -> Path:
    """Return the data root of a complete copy, generating it on first use.

    The copy is built in a temporary folder and renamed into place, so an interrupted
    generation never leaves a partial dataset behind, and two processes racing to
    generate the same copy both end up using one complete folder. A cached copy that no
    longer matches its manifest (:mod:`cl_fir.data.cached_copy`) is generated again.
    """
    cfg.validate()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    final = cache_dir / f"synthfashion-{cfg.fingerprint()}"
    damage = cached_copy.problem(final)
    if damage is None:
        return final
    if final.exists():   # damaged or unsealed: generated again
        cached_copy.discard(final)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synthfashion-", dir=cache_dir))
    try:
        total = len(ATTRIBUTE_NAMES) * (cfg.train_per_attribute
                                        + 2 * (cfg.queries_per_attribute + cfg.candidates_per_attribute))
        if progress_factory is not None:
            label = f"generating synthfashion into {final}" + (
                f" (the cached copy was damaged: {damage})" if damage != "missing" else "")
            with progress_factory(total, label) as advance:
                generate(cfg, tmp, workers, advance)
        else:
            generate(cfg, tmp, workers)
        cached_copy.seal(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if cached_copy.problem(final) is not None:  # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final

