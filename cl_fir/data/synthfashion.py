"""``synthfashion``: procedurally rendered garments with FashionAI's structure, for offline
attribute-specific retrieval.

FashionAI (the attribute track of the 2018 Tianchi FashionAI challenge, as split by ASEN:
Ma et al., "Fine-Grained Fashion Similarity Learning by Attribute-Specific Embedding
Network", AAAI 2020) annotates every image with exactly one of eight attributes, and
the images of an attribute show the garments that attribute belongs to: skirt length is
annotated on skirts and dresses, lapel design on coats, neckline design on close-ups of
tops. Every attribute has an "invisible" value for images where the part is hidden.
This generator copies that structure at a size that trains on two CPU cores:

=============== ============================== ========= ===============================================
attribute       garments (share of its images) shot      values
=============== ============================== ========= ===============================================
skirt_length    skirt 60%, dress 40%           full      invisible, mini, knee, midi, ankle
sleeve_length   top 50%, dress 25%, coat 25%   upper     invisible, sleeveless, short, elbow, three_quarter, long
coat_length     coat                           full      invisible, high_waist, hip, knee, ankle
pant_length     trousers                       full      invisible, short, knee, cropped, full
collar_design   top                            close-up  invisible, shirt, peter_pan, band, puritan
lapel_design    coat                           close-up  invisible, notched, collarless, shawl, plus_size_shawl
neckline_design top 60%, dress 40%             close-up  invisible, round, v_neck, square, off_shoulder
neck_design     top 60%, dress 40%             close-up  invisible, turtle, low_turtle, ruffle, draped
=============== ============================== ========= ===============================================

So the garments, and how they are framed, change from attribute to attribute: a
class-incremental sequence over these attributes shifts the input distribution from
increment to increment, and an image of a new increment often does not show the old
attributes at all (trousers have no sleeves). Lengths are hidden by the frame (the hem
is cut off), sleeves and necks by an occluder over the part. Everything else about a
garment is nuisance: its colour (8 hues) and fabric pattern (6), the attributes of the
garment that are not annotated, buttons and belts, position, scale, rotation, background
tint and clutter, brightness and pixel noise (``nuisance``: 0 = clean, 0.5 = default).

The dataset is written in the ASEN/FashionAI meta format (``meta.json`` +
``<Dataset>/filenames_*.txt``, ``label_train.txt``, ``query_*``, ``candidate_*``) and read
back through :mod:`cl_fir.data.asen_meta`, the code path of the real FashionAI, DARN and
DeepFashion readers. Rendering is deterministic: image ``i`` of split ``s`` is drawn from
its own generator seeded by ``(seed, s, i)``, independent of the number of processes.
:func:`render_unlabelled` draws images from a split of its own (``pretrain``), disjoint from
every scenario image, for pretraining (:mod:`cl_fir.pretraining`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cl_fir.data.synth_cache import default_cache_dir, ensure_generated
from cl_fir.data.synth_writer import SPLIT_IDS, write_asen_copy
from cl_fir.data.synth_drawing import HUES, PATTERNS, background, fabric_colours, mix, pattern, photometric

DATASET_KEY = "SynthFashion"
#: Bump when rendering changes, so cached copies are regenerated.
GENERATOR_VERSION = 5

#: Attribute names in FashionAI's meta order, with their value names in index order; value 0 is
#: "invisible" everywhere, as in FashionAI.
ATTRIBUTES: dict[str, list[str]] = {
    "skirt_length": ["invisible", "mini", "knee", "midi", "ankle"],
    "sleeve_length": ["invisible", "sleeveless", "short", "elbow", "three_quarter", "long"],
    "coat_length": ["invisible", "high_waist", "hip", "knee", "ankle"],
    "pant_length": ["invisible", "short", "knee", "cropped", "full"],
    "collar_design": ["invisible", "shirt", "peter_pan", "band", "puritan"],
    "lapel_design": ["invisible", "notched", "collarless", "shawl", "plus_size_shawl"],
    "neckline_design": ["invisible", "round", "v_neck", "square", "off_shoulder"],
    "neck_design": ["invisible", "turtle", "low_turtle", "ruffle", "draped"],
}
ATTRIBUTE_NAMES = list(ATTRIBUTES)
INVISIBLE = 0

GARMENTS = ("top", "dress", "skirt", "trousers", "coat")
SHOTS = ("full", "upper", "closeup")
#: Per attribute: the garments its images show (with their shares) and the shot.
POPULATIONS: dict[str, tuple[dict[str, float], str]] = {
    "skirt_length": ({"skirt": 0.6, "dress": 0.4}, "full"),
    "sleeve_length": ({"top": 0.5, "dress": 0.25, "coat": 0.25}, "upper"),
    "coat_length": ({"coat": 1.0}, "full"),
    "pant_length": ({"trousers": 1.0}, "full"),
    "collar_design": ({"top": 1.0}, "closeup"),
    "lapel_design": ({"coat": 1.0}, "closeup"),
    "neckline_design": ({"top": 0.6, "dress": 0.4}, "closeup"),
    "neck_design": ({"top": 0.6, "dress": 0.4}, "closeup"),
}
#: The length attribute of each garment that has one (drawn as its hem).
LENGTH_OF = {"dress": "skirt_length", "skirt": "skirt_length", "coat": "coat_length", "trousers": "pant_length"}
#: The neck-region attributes a garment can show (one style at a time: a collar, a neckline, a high neck or a lapel).
NECK_OF = {"top": ("collar_design", "neckline_design", "neck_design"), "dress": ("neckline_design", "neck_design"),
           "coat": ("lapel_design",)}
SLEEVED = ("top", "dress", "coat")
COLOURS = tuple(HUES)

#: The splits of the stream seeds: the scenario splits, and one for unlabelled pretraining images.
_SPLITS = {**SPLIT_IDS, "pretrain": 3}
_SUPERSAMPLE = 3
#: Probability that an attribute which is not annotated is hidden anyway (an occluded neck, a cropped hem).
_HIDDEN_ANYWAY = 0.1

# Geometry, in units of the shoulder width (upper garments) or waist width (lower garments);
# y grows downwards from the shoulder line (upper) or the waistband (lower).
_SLEEVE = {"sleeveless": 0.0, "short": 0.28, "elbow": 0.6, "three_quarter": 0.92, "long": 1.24}
_SKIRT = {"mini": 0.45, "knee": 0.85, "midi": 1.25, "ankle": 1.7}            # below the waist
_COAT = {"high_waist": 0.78, "hip": 1.08, "knee": 1.4, "ankle": 1.75}        # below the shoulders
_PANT = {"short": 0.55, "knee": 0.88, "cropped": 1.2, "full": 1.5}            # below the waistband
_DRESS_WAIST = 0.8
#: Longest extent below the origin, per garment (framing of full shots).
_EXTENT = {"top": 1.15, "dress": _DRESS_WAIST + max(_SKIRT.values()), "coat": max(_COAT.values()),
           "skirt": max(_SKIRT.values()), "trousers": max(_PANT.values())}


@dataclass
class SynthFashionConfig:
    """Size and seed of a generated copy; the cache folder name is derived from it."""

    seed: int = 0
    image_size: int = 64
    train_per_attribute: int = 400
    queries_per_attribute: int = 40       # per evaluation split (valid, test)
    candidates_per_attribute: int = 160   # per evaluation split; 1:4 as in FashionAI
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
        fewest = max(len(v) for v in ATTRIBUTES.values())
        for name in ("train_per_attribute", "queries_per_attribute", "candidates_per_attribute"):
            value = getattr(self, name)
            if value < fewest:
                raise ConfigError(f"synthfashion {name} must be at least {fewest} (one image per value), got {value}")


# --------------------------------------------------------------------------- what an image shows


@dataclass
class GarmentSpec:
    """What one image shows: the garment, the shot, the value of each attribute of the
    garment that is drawn (``values``: length and sleeves), the neck-region style
    (``neck``: one attribute and its value) and the nuisance factors."""

    garment: str
    shot: str
    values: dict[str, int] = field(default_factory=dict)
    neck: tuple[str, int] | None = None
    colour: str = "red"
    pattern: str = "solid"
    buttons: bool = False
    belt: bool = False

    def shows(self) -> dict[str, int]:
        """Every attribute the image shows (with its value), the neck style included."""
        out = dict(self.values)
        if self.neck is not None:
            out[self.neck[0]] = self.neck[1]
        return out


def _random_value(attribute: str, rng) -> int:
    """A value of an attribute that is not annotated: visible, or hidden anyway now and then."""
    if rng.random() < _HIDDEN_ANYWAY:
        return INVISIBLE
    return int(rng.integers(1, len(ATTRIBUTES[attribute])))


def plan_image(attribute: str, value: int, rng) -> GarmentSpec:
    """An image of ``attribute``'s population whose ``attribute`` has ``value``; everything
    else about it is drawn from ``rng``."""
    shares, shot = POPULATIONS[attribute]
    names = list(shares)
    garment = names[int(rng.choice(len(names), p=np.asarray([shares[g] for g in names])))]
    spec = GarmentSpec(garment, shot, colour=COLOURS[int(rng.integers(len(COLOURS)))],
                       pattern=PATTERNS[int(rng.integers(len(PATTERNS)))])
    if garment in LENGTH_OF:
        spec.values[LENGTH_OF[garment]] = _random_value(LENGTH_OF[garment], rng)
    if garment in SLEEVED:
        spec.values["sleeve_length"] = _random_value("sleeve_length", rng)
    if attribute in spec.values:
        spec.values[attribute] = value
    if garment in NECK_OF:
        if attribute in NECK_OF[garment]:
            spec.neck = (attribute, value)
        else:
            styles = NECK_OF[garment]
            style = styles[int(rng.integers(len(styles)))]
            spec.neck = (style, _random_value(style, rng))
    spec.buttons = garment in ("top", "dress") and rng.random() < 0.3
    spec.belt = garment in ("dress", "skirt", "trousers") and rng.random() < 0.25
    return spec


# --------------------------------------------------------------------------- rendering


class _Canvas:
    """Maps garment units to canvas pixels: scaled by ``unit``, rotated by ``angle`` (degrees)
    about the origin, which sits at ``(cx, top)``. Rotating coordinates rather than the
    rendered image keeps rendering cheap; boxes (ellipses, rectangles) move with the rotation
    but stay axis-aligned, which at a few degrees is not visible."""

    def __init__(self, cx: float, top: float, unit: float, angle: float = 0.0):
        self.cx, self.top, self.unit = cx, top, unit
        self.cos, self.sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))

    def __call__(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + (x * self.cos - y * self.sin) * self.unit,
                self.top + (x * self.sin + y * self.cos) * self.unit)

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
        cx, cy = self((x0 + x1) / 2, (y0 + y1) / 2)
        hw, hh = abs(x1 - x0) * self.unit / 2, abs(y1 - y0) * self.unit / 2
        return [(cx - hw, cy - hh), (cx + hw, cy + hh)]


def _frame(spec: GarmentSpec, drawn: dict[str, int], S: int, rng, k: float) -> _Canvas:
    """Where the garment sits: full shots show the whole garment (its longest variant fits),
    upper shots the torso and arms, close-ups the neck and shoulders. A hidden length is cut
    off by the frame: the garment is enlarged until its hem falls below the bottom edge."""
    jitter = 1 + k * rng.uniform(-0.14, 0.12)
    angle = k * rng.uniform(-7, 7)
    cx = S / 2 + k * rng.uniform(-0.1, 0.1) * S
    lower = spec.garment in ("skirt", "trousers")
    if spec.shot == "full":
        head = 0.08 if lower else 0.38          # room above the origin: waistband, or the neck region
        top_margin = S * (0.05 + k * rng.uniform(-0.02, 0.02))
        unit = S * 0.9 / (_EXTENT[spec.garment] + head) * jitter
        length_attr = LENGTH_OF.get(spec.garment)
        if length_attr is not None and spec.values.get(length_attr) == INVISIBLE:
            hem = _hem(spec.garment, drawn[length_attr])
            unit = max(unit, (S - top_margin) / (head + hem * rng.uniform(0.55, 0.8)))
        return _Canvas(cx, top_margin + head * unit, unit, angle)
    if spec.shot == "upper":
        unit = S * 0.4 * jitter
        return _Canvas(cx, S * (0.24 + k * rng.uniform(-0.04, 0.04)), unit, angle)
    unit = S * 0.78 * jitter
    return _Canvas(cx, S * (0.36 + k * rng.uniform(-0.05, 0.05)), unit, angle)


def _hem(garment: str, value: int) -> float:
    """y of the hem (garment units) for a visible length value."""
    name = ATTRIBUTES[LENGTH_OF[garment]][value]
    if garment == "dress":
        return _DRESS_WAIST + _SKIRT[name]
    return {"skirt": _SKIRT, "coat": _COAT, "trousers": _PANT}[garment][name]


def _drawn_values(spec: GarmentSpec, rng) -> dict[str, int]:
    """The value drawn for each of ``spec.values``: a hidden one is drawn as some visible value
    (cut off by the frame, or under an occluder)."""
    return {a: v if v != INVISIBLE else int(rng.integers(1, len(ATTRIBUTES[a]))) for a, v in spec.values.items()}


def _upper_outline(spec: GarmentSpec, drawn: dict[str, int], P: _Canvas) -> tuple[list, list[list]]:
    """Body polygon and sleeve polygons of a top, dress or coat."""
    sleeve_name = ATTRIBUTES["sleeve_length"][drawn["sleeve_length"]]
    sh = 0.56 if spec.garment == "coat" else 0.5
    shoulder_x = 0.34 if sleeve_name == "sleeveless" else sh
    right = [(0.2, -0.03), (shoulder_x, 0.05)]
    if sleeve_name == "sleeveless":
        right.append((sh - 0.05, 0.22))
    right.append((sh, 0.36))
    if spec.garment == "top":
        right += [(0.46, 0.8), (0.5, 1.12)]
    elif spec.garment == "dress":
        hem = _hem("dress", drawn["skirt_length"]) - _DRESS_WAIST
        right += [(0.4, _DRESS_WAIST), (0.4 + 0.3 * hem, _DRESS_WAIST + hem)]
    else:
        hem = _hem("coat", drawn["coat_length"])
        right += [(0.56, min(0.9, hem)), (0.58 + 0.05 * hem, hem)]
    body = [P(x, y) for x, y in right] + [P(-x, y) for x, y in reversed(right)]
    sleeves = []
    L = _SLEEVE[sleeve_name]
    if L > 0:
        theta = math.radians(62)
        dx, dy = math.cos(theta) * L, math.sin(theta) * L
        for side in (1, -1):
            p1, p4 = (side * sh, 0.05), (side * sh, 0.38)
            p2 = (p1[0] + side * dx, p1[1] + dy)
            p3 = (p4[0] + side * dx * 0.82, p4[1] + dy * 0.9)
            sleeves.append([P(*p1), P(*p2), P(*p3), P(*p4)])
    return body, sleeves


#: Skin tones of the wearer's neck, chest and arms (seen through necklines and below sleeves).
_SKIN = ((241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172))
_ARM = 1.42                # arm length from the shoulder, in shoulder widths: longer than any sleeve


def _wearer(spec: GarmentSpec, P: _Canvas) -> list[list]:
    """Skin polygons under an upper garment: the neck and chest (seen through a neckline) and
    both arms (seen below the sleeves, so a sleeve's end is a fabric-to-skin edge, as in photos)."""
    sh = 0.56 if spec.garment == "coat" else 0.5
    parts = [[P(-0.13, -0.6), P(0.13, -0.6), P(0.13, 0.0), P(sh - 0.04, 0.04), P(sh - 0.04, 0.75),
              P(-sh + 0.04, 0.75), P(-sh + 0.04, 0.04), P(-0.13, 0.0)]]
    theta = math.radians(62)
    dx, dy = math.cos(theta) * _ARM, math.sin(theta) * _ARM
    for side in (1, -1):
        p1, p4 = (side * (sh - 0.08), 0.04), (side * (sh - 0.04), 0.34)
        parts.append([P(*p1), P(p1[0] + side * dx * 0.97, p1[1] + dy), P(p4[0] + side * dx * 0.78, p4[1] + dy * 0.9),
                      P(*p4)])
    return parts


def _lower_outline(spec: GarmentSpec, drawn: dict[str, int], P: _Canvas) -> tuple[list, list[list]]:
    """A skirt (one trapezoid) or trousers (two legs); the waistband is drawn separately."""
    hem = _hem(spec.garment, drawn[LENGTH_OF[spec.garment]])
    if spec.garment == "skirt":
        right = [(0.42, 0.0), (0.42 + 0.3 * hem, hem)]
        return [P(x, y) for x, y in right] + [P(-x, y) for x, y in reversed(right)], []
    legs = []
    for side in (1, -1):
        pts = [(0.0, 0.0), (0.45, 0.0), (0.43, hem), (0.06, hem), (0.02, 0.36)]
        legs.append([P(side * x, y) for x, y in pts])
    return legs[0], legs[1:]


def _bezier(p0, p1, p2, n: int = 8) -> list[tuple[float, float]]:
    return [((1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * p1[0] + t * t * p2[0],
             (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * p1[1] + t * t * p2[1])
            for t in np.linspace(0, 1, n)]


def _draw_neck(spec: GarmentSpec, P: _Canvas, mask_draw, fabric_draw, colours, line_w: int) -> None:
    """The neck-region style: cut-outs of the mask (necklines), additions to it (high necks,
    collars, lapels), edged and outlined. A hidden style is drawn as a plain round neck (the
    occluder covers it later)."""
    base, shade, dark = colours
    attr, value = spec.neck
    name = ATTRIBUTES[attr][value]
    trim = mix(base, (255, 255, 255), 0.35)

    def cut(kind: str, geom) -> None:
        getattr(fabric_draw, kind)(geom, outline=dark, width=line_w * 3)
        getattr(mask_draw, kind)(geom, fill=0)

    def add(poly, fill=None) -> None:
        mask_draw.polygon(poly, fill=255)
        fabric_draw.polygon(poly, fill=fill or base, outline=dark, width=line_w)

    if value == INVISIBLE or attr == "neck_design" and name == "draped" or attr == "collar_design":
        cut("ellipse", P.box(-0.17, -0.08, 0.17, 0.12))
    if value == INVISIBLE:
        return
    if attr == "neckline_design":
        if name == "round":
            cut("ellipse", P.box(-0.28, -0.18, 0.28, 0.34))
        elif name == "v_neck":
            cut("polygon", [P(-0.26, -0.06), P(0.26, -0.06), P(0.0, 0.72)])
        elif name == "square":
            cut("rectangle", P.box(-0.28, -0.06, 0.28, 0.4))
        elif name == "off_shoulder":   # the shoulders bare: the garment starts below them
            mask_draw.polygon([P(-0.7, -0.2), P(0.7, -0.2), P(0.7, 0.2), P(-0.7, 0.2)], fill=0)
            fabric_draw.line([P(-0.62, 0.2), P(0.62, 0.2)], fill=dark, width=line_w * 3)
    elif attr == "neck_design":
        if name in ("turtle", "low_turtle", "ruffle"):
            height = {"turtle": 0.3, "low_turtle": 0.18, "ruffle": 0.24}[name]
            add([P(-0.2, -height), P(0.2, -height), P(0.21, 0.02), P(-0.21, 0.02)])
            for y in np.linspace(-height + 0.07, -0.03, max(2, int(height / 0.07))):   # ribbing
                fabric_draw.line([P(-0.19, y), P(0.19, y)], fill=dark, width=line_w)
            if name == "ruffle":
                for x in np.linspace(-0.16, 0.16, 5):
                    box = P.box(x - 0.045, -height - 0.045, x + 0.045, -height + 0.045)
                    mask_draw.ellipse(box, fill=255)
                    fabric_draw.ellipse(box, fill=base, outline=dark, width=line_w)
        else:   # draped: a cowl of folds below the neck
            for k in range(3):
                fold = _bezier((-0.3 + 0.03 * k, 0.02), (0.0, 0.26 + 0.13 * k), (0.3 - 0.03 * k, 0.02))
                fabric_draw.line([P(*p) for p in fold], fill=dark, width=line_w)
    elif attr == "collar_design":
        if name == "shirt":
            for s in (1, -1):
                add([P(s * 0.2, -0.07), P(s * 0.01, 0.05), P(s * 0.17, 0.3)], trim)
        elif name == "peter_pan":
            for s in (1, -1):
                box = P.box(min(s * 0.31, s * 0.0), -0.05, max(s * 0.31, s * 0.0), 0.2)
                mask_draw.ellipse(box, fill=255)
                fabric_draw.ellipse(box, fill=trim, outline=dark, width=line_w)
        elif name == "band":
            add([P(-0.19, -0.16), P(0.19, -0.16), P(0.19, 0.0), P(-0.19, 0.0)], trim)
            fabric_draw.line([P(0.0, -0.16), P(0.0, 0.0)], fill=dark, width=line_w * 2)
        elif name == "puritan":
            box = P.box(-0.5, -0.06, 0.5, 0.46)
            mask_draw.ellipse(box, fill=255)
            fabric_draw.ellipse(box, fill=trim, outline=dark, width=line_w)
            cut("ellipse", P.box(-0.15, -0.08, 0.15, 0.1))
    elif attr == "lapel_design":
        inner = (245, 245, 240) if base[0] + base[1] + base[2] < 380 else (40, 40, 48)
        opening = [P(-0.2, -0.03), P(0.2, -0.03), P(0.0, 0.6)]
        fabric_draw.polygon(opening, fill=inner)
        if name == "collarless":
            fabric_draw.line(opening[1:] + opening[:1], fill=dark, width=line_w * 3)
            return
        for s in (1, -1):
            if name == "notched":     # collar and lapel meet at a notch cut inwards
                pts = [(0.2, -0.03), (0.38, 0.08), (0.24, 0.17), (0.46, 0.24), (0.03, 0.58)]
            elif name == "shawl":     # one smooth, narrow curve
                pts = _bezier((0.2, -0.03), (0.42, 0.2), (0.03, 0.58))
            else:                     # plus-size shawl: a wide rounded lapel down to the chest
                pts = _bezier((0.2, -0.03), (0.8, 0.3), (0.03, 0.72))
            lapel = [P(s * x, y) for x, y in pts] + [P(s * 0.0, pts[-1][1]), P(s * 0.12, 0.0)]
            fabric_draw.polygon(lapel, fill=trim, outline=dark, width=line_w)


def _occluder(draw: ImageDraw.ImageDraw, box, rng) -> None:
    """An opaque shape over a part (hair, a hand, a bag): the part is invisible."""
    tone = [(40, 28, 20), (20, 20, 24), (95, 60, 35), (210, 170, 140), (120, 120, 128)][int(rng.integers(5))]
    (x0, y0), (x1, y1) = box
    if rng.random() < 0.5:
        draw.ellipse([x0, y0, x1, y1], fill=tone)
    else:
        draw.rounded_rectangle([x0, y0, x1, y1], radius=0.25 * min(x1 - x0, y1 - y0), fill=tone)


def render(spec: GarmentSpec, rng: np.random.Generator, image_size: int, nuisance: float = 0.5) -> Image.Image:
    """Render one image of ``spec``; the nuisance draws come from ``rng``."""
    S = image_size * _SUPERSAMPLE
    k = nuisance
    bg = background(rng, S, k, stroke=_SUPERSAMPLE)
    drawn = _drawn_values(spec, rng)
    P = _frame(spec, drawn, S, rng, k)
    colours = fabric_colours(HUES[spec.colour], rng)
    base, shade, dark = colours
    upper = spec.garment in SLEEVED
    body, extra = (_upper_outline if upper else _lower_outline)(spec, drawn, P)

    mask = Image.new("L", (S, S), 0)
    mdraw = ImageDraw.Draw(mask)
    fabric = Image.new("RGB", (S, S), base)
    fdraw = ImageDraw.Draw(fabric)
    pattern(fdraw, spec.pattern, shade, S, P.unit, rng)
    line_w = max(1, int(round(P.unit * 0.025)))
    for poly in [body, *extra]:
        mdraw.polygon(poly, fill=255)
        fdraw.polygon(poly, outline=dark, width=line_w)
    trim = (25, 25, 30) if rng.random() < 0.5 else (235, 235, 225)
    if upper:
        skin = _SKIN[int(rng.integers(len(_SKIN)))]
        bg_draw = ImageDraw.Draw(bg)
        for part in _wearer(spec, P):
            bg_draw.polygon(part, fill=skin)
        _draw_neck(spec, P, mdraw, fdraw, colours, line_w)
        if spec.garment == "coat":
            fdraw.line([P(0.0, 0.6), P(0.0, 2.4)], fill=dark, width=line_w * 2)
        if spec.buttons:
            for y in np.linspace(0.3, 0.75, 3):
                x, yy = P(0.0, y)
                r = 0.05 * P.unit
                fdraw.ellipse([x - r, yy - r, x + r, yy + r], fill=trim)
        if spec.belt and spec.garment == "dress":
            fdraw.rectangle(P.box(-0.45, _DRESS_WAIST - 0.06, 0.45, _DRESS_WAIST + 0.06), fill=trim)
    else:
        band = P.box(-0.46, -0.08, 0.46, 0.06)
        mdraw.rectangle(band, fill=255)
        fdraw.rectangle(band, fill=trim if spec.belt else dark)

    bg.paste(fabric, (0, 0), mask)
    odraw = ImageDraw.Draw(bg)
    if spec.values.get("sleeve_length") == INVISIBLE:
        for s in (1, -1):
            x0, x1 = sorted((s * 0.4, s * 1.25))
            _occluder(odraw, P.box(x0, -0.1, x1, 1.35), rng)
    if spec.neck is not None and spec.neck[1] == INVISIBLE:
        _occluder(odraw, P.box(-0.42, -0.5, 0.42, 0.4), rng)
    return photometric(bg.reduce(_SUPERSAMPLE), rng, k)


# --------------------------------------------------------------------------- dataset


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLITS[split], index])


def render_annotated(seed: int, split: str, index: int, attribute: int, value: int, image_size: int,
                     nuisance: float) -> Image.Image:
    """Image ``index`` of ``split``: one of ``attribute``'s population with that ``value``."""
    rng = _image_rng(seed, split, index)
    return render(plan_image(ATTRIBUTE_NAMES[attribute], value, rng), rng, image_size, nuisance)


def _render_one(job: tuple) -> None:
    *args, out = job
    render_annotated(*args).save(out, compress_level=1)


def generate(cfg: SynthFashionConfig, root: Path, workers: int | None = None, progress=None) -> None:
    """Write a complete dataset copy under ``root``; ``meta.json`` is written last."""
    write_asen_copy(cfg, root, DATASET_KEY, ATTRIBUTES, "synthfashion", GENERATOR_VERSION, _render_one, workers, progress)

def ensure_synthfashion(cfg: SynthFashionConfig, cache_dir: Path | None = None, workers: int | None = None,
                        progress_factory=None) -> Path:
    """The data root of a complete copy, generated on first use (see :mod:`cl_fir.data.synth_cache`)."""
    cfg.validate()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    final = cache_dir / f"synthfashion-{cfg.fingerprint()}"
    total = len(ATTRIBUTE_NAMES) * (cfg.train_per_attribute
                                    + 2 * (cfg.queries_per_attribute + cfg.candidates_per_attribute))

    def build(folder: Path) -> None:
        if progress_factory is None:
            generate(cfg, folder, workers)
            return
        with progress_factory(total, f"generating synthfashion into {final}") as advance:
            generate(cfg, folder, workers, advance)

    return ensure_generated(final, build, "meta.json")


# --------------------------------------------------------------------------- unlabelled images


def render_unlabelled(seed: int, index: int, image_size: int, nuisance: float = 0.5
                      ) -> tuple[Image.Image, GarmentSpec]:
    """Image ``index`` of the ``pretrain`` split: an image of a random attribute's population
    with random values, from random streams no scenario image uses. Returned with its spec,
    whose garment, colour and pattern (not the attributes) may serve as pretraining labels."""
    rng = _image_rng(seed, "pretrain", index)
    attribute = ATTRIBUTE_NAMES[int(rng.integers(len(ATTRIBUTE_NAMES)))]
    spec = plan_image(attribute, int(rng.integers(len(ATTRIBUTES[attribute]))), rng)
    return render(spec, rng, image_size, nuisance), spec
