"""``synth-cir``: composed image retrieval on synthfashion garments, written in FashionIQ's
distributed format and read back by the FashionIQ reader (as synthfashion goes through
the ASEN reader).

Three categories, one per garment type, as FashionIQ has dresses, shirts and tops:
``dress`` (full shots), ``top`` (upper-body shots) and ``coat`` (full shots), rendered by
:mod:`cl_fir.data.synthfashion`. A triplet is a reference garment, a target of the same
type that differs from it in one or two of its colour, pattern, sleeve length, length
(dresses and coats) and neck style (neckline or high neck on dresses and tops, collar on
tops, lapel on coats), and two templated captions ("make it red", "with long sleeves"; with one change
the second caption paraphrases the first). Every image has its own nuisance draw
(position, scale, background, noise), so the target is never a copy of the reference.
Each category's split file also holds distractor garments, so the "split" gallery
(FashionIQ's original rule) is larger than the "val" gallery (references and targets of
the caption file, VAL's rule). No image shows a hidden ("invisible") part: a caption
cannot ask for one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cl_fir.data.synth_cache import ensure_generated
from cl_fir.data.synth_drawing import PATTERNS
from cl_fir.data.synthfashion import ATTRIBUTES, COLOURS, LENGTH_OF, NECK_OF, GarmentSpec, render

GENERATOR_VERSION = 2
CATEGORIES = ("dress", "top", "coat")
_SHOT = {"dress": "full", "top": "upper", "coat": "full"}
_TEMPLATES = {
    "colour": ("make it {v}", "change the colour to {v}"),
    "pattern": ("with a {v} pattern", "make the pattern {v}"),
    "sleeve_length": ("with {v} sleeves", "change to {v} sleeves"),
    "skirt_length": ("make it {v} length", "change the length to {v}"),
    "coat_length": ("make it {v} length", "change the length to {v}"),
    "neckline_design": ("with a {v} neckline", "change the neckline to {v}"),
    "collar_design": ("with a {v} collar", "change to a {v} collar"),
    "neck_design": ("with a {v} neck", "change to a {v} neck"),
    "lapel_design": ("with a {v} lapel", "change to a {v} lapel"),
}
_WORDS = {"h_stripes": "horizontal stripes", "v_stripes": "vertical stripes", "three_quarter": "three quarter",
          "v_neck": "v neck", "off_shoulder": "off the shoulder", "high_waist": "high waist", "low_turtle": "low turtle", "plus_size_shawl": "wide shawl",
          "peter_pan": "peter pan"}


@dataclass
class SynthComposedConfig:
    seed: int = 0
    image_size: int = 64
    train_per_category: int = 400         # triplets
    val_per_category: int = 60            # triplets (queries)
    distractors_per_category: int = 60    # extra gallery images in the split file only
    nuisance: float = 0.5

    def fingerprint(self) -> str:
        payload = json.dumps({"version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:10]


def _words(value: str) -> str:
    return _WORDS.get(value, value.replace("_", " "))


def caption(attr: str, value: str, variant: int) -> str:
    return _TEMPLATES[attr][variant].format(v=_words(value))


def _modifiable(category: str) -> tuple[str, ...]:
    """What a caption may change on a garment of this category."""
    return ("colour", "pattern", "sleeve_length", "length", "neck") if category in LENGTH_OF else \
        ("colour", "pattern", "sleeve_length", "neck")


def _random_garment(rng, category: str) -> GarmentSpec:
    """A garment of ``category`` with every part visible."""
    spec = GarmentSpec(category, _SHOT[category], colour=COLOURS[int(rng.integers(len(COLOURS)))],
                       pattern=PATTERNS[int(rng.integers(len(PATTERNS)))])
    spec.values["sleeve_length"] = int(rng.integers(1, len(ATTRIBUTES["sleeve_length"])))
    if category in LENGTH_OF:
        length = LENGTH_OF[category]
        spec.values[length] = int(rng.integers(1, len(ATTRIBUTES[length])))
    style = NECK_OF[category][int(rng.integers(len(NECK_OF[category])))]
    spec.neck = (style, int(rng.integers(1, len(ATTRIBUTES[style]))))
    return spec


def _change(spec: GarmentSpec, what: str, rng) -> tuple[GarmentSpec, str]:
    """A copy of ``spec`` with ``what`` changed to another value, and the caption asking for it."""
    out = GarmentSpec(spec.garment, spec.shot, dict(spec.values), spec.neck, spec.colour, spec.pattern)
    if what in ("colour", "pattern"):
        options = [v for v in (COLOURS if what == "colour" else PATTERNS) if v != getattr(spec, what)]
        value = options[int(rng.integers(len(options)))]
        setattr(out, what, value)
        return out, value
    attr = {"length": LENGTH_OF.get(spec.garment), "neck": spec.neck[0]}.get(what, what)
    current = spec.neck[1] if what == "neck" else spec.values[attr]
    choices = [v for v in range(1, len(ATTRIBUTES[attr])) if v != current]
    value = int(choices[int(rng.integers(len(choices)))])
    if what == "neck":
        out.neck = (attr, value)
    else:
        out.values[attr] = value
    return out, ATTRIBUTES[attr][value]


def _caption_key(spec: GarmentSpec, what: str) -> str:
    return {"length": LENGTH_OF.get(spec.garment), "neck": spec.neck[0]}.get(what, what)


def _plan(cfg: SynthComposedConfig, category: str, split: str, n: int):
    """``n`` triplets: (reference, target, two captions)."""
    rng = np.random.default_rng([cfg.seed, CATEGORIES.index(category), ("train", "val").index(split)])
    out = []
    modifiable = _modifiable(category)
    for _ in range(n):
        ref = _random_garment(rng, category)
        tgt = ref
        caps = []
        changed = rng.choice(len(modifiable), size=int(rng.integers(1, 3)), replace=False)
        for k in changed:
            what = modifiable[int(k)]
            tgt, value = _change(tgt, what, rng)
            caps.append(caption(_caption_key(tgt, what), value, 0))
        if len(caps) == 1:
            what = modifiable[int(changed[0])]
            caps.append(caption(_caption_key(tgt, what), value, 1))
        out.append((ref, tgt, caps))
    return out


def generate(cfg: SynthComposedConfig, root: Path) -> None:
    """Write ``root/fashionIQ/`` (captions, image_splits, images as PNG)."""
    base = root / "fashionIQ"
    for sub in ("captions", "image_splits", "images"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    counter = 0

    def draw(spec: GarmentSpec) -> str:
        nonlocal counter
        key = f"S{counter:06d}"
        counter += 1
        rng = np.random.default_rng([cfg.seed, 7, counter])
        render(spec, rng, cfg.image_size, cfg.nuisance).save(base / "images" / f"{key}.png", compress_level=1)
        return key

    for category in CATEGORIES:
        for split, n in (("train", cfg.train_per_category), ("val", cfg.val_per_category)):
            entries, images = [], []
            for ref, tgt, caps in _plan(cfg, category, split, n):
                r, t = draw(ref), draw(tgt)
                entries.append({"target": t, "candidate": r, "captions": caps})
                images += [r, t]
            if split == "val":
                rng = np.random.default_rng([cfg.seed, 11, CATEGORIES.index(category)])
                images += [draw(_random_garment(rng, category)) for _ in range(cfg.distractors_per_category)]
            (base / "captions" / f"cap.{category}.{split}.json").write_text(json.dumps(entries))
            (base / "image_splits" / f"split.{category}.{split}.json").write_text(json.dumps(images))


def ensure_synth_composed(cfg: SynthComposedConfig, cache_dir: Path) -> Path:
    """The generated copy's root (holding ``fashionIQ/``), generated once per configuration
    (see :mod:`cl_fir.data.synth_cache`)."""
    def build(folder: Path) -> None:
        generate(cfg, folder)
        (folder / "fashionIQ" / "complete").write_text(json.dumps(asdict(cfg)))

    return ensure_generated(Path(cache_dir) / f"synth-cir-{cfg.fingerprint()}", build, "fashionIQ/complete")
