"""``synth-cir``: composed image retrieval on synthfashion garments, written in FashionIQ's
distributed format and read back by the FashionIQ reader (as synthfashion goes through
the ASEN reader).

Three categories, one per silhouette (``straight``, ``a_line``, ``fitted``). A triplet is
a reference garment, a target that differs from it in one or two of colour, pattern,
sleeve length, hem length and neckline, and two templated captions ("make it red", "with
long sleeves"; with one change the second caption paraphrases the first). Every image
has its own nuisance draw (position, scale, background, noise), so the target is never a
copy of the reference. Each category's split file also holds distractor garments, so the
"split" gallery (FashionIQ's original rule) is larger than the "val" gallery (references
and targets of the caption file, VAL's rule).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cl_fir.data import cached_copy
from cl_fir.data.synthfashion import ATTRIBUTES, render_garment

GENERATOR_VERSION = 1
CATEGORIES = ("straight", "a_line", "fitted")
MODIFIABLE = ("colour", "pattern", "sleeve_length", "hem_length", "neckline")
_TEMPLATES = {
    "colour": ("make it {v}", "change the colour to {v}"),
    "pattern": ("with a {v} pattern", "make the pattern {v}"),
    "sleeve_length": ("with {v} sleeves", "change to {v} sleeves"),
    "hem_length": ("{v} length", "make the hem {v}"),
    "neckline": ("with a {v} neckline", "change the neckline to {v}"),
}
_WORDS = {"h_stripes": "horizontal stripes", "v_stripes": "vertical stripes", "three_quarter": "three quarter",
          "v_neck": "v neck", "hip_pair": "hip pockets"}


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


def caption(attr: str, value_index: int, variant: int) -> str:
    return _TEMPLATES[attr][variant].format(v=_words(ATTRIBUTES[attr][value_index]))


def _random_values(rng, category: str) -> dict[str, int]:
    values = {name: int(rng.integers(len(vals))) for name, vals in ATTRIBUTES.items()}
    values["silhouette"] = ATTRIBUTES["silhouette"].index(category)
    return values


def _plan(cfg: SynthComposedConfig, category: str, split: str, n: int):
    """``n`` triplets: (reference values, target values, two captions)."""
    rng = np.random.default_rng([cfg.seed, CATEGORIES.index(category), ("train", "val").index(split)])
    out = []
    for _ in range(n):
        ref = _random_values(rng, category)
        tgt = dict(ref)
        changed = rng.choice(len(MODIFIABLE), size=int(rng.integers(1, 3)), replace=False)
        caps = []
        for k in changed:
            attr = MODIFIABLE[k]
            choices = [v for v in range(len(ATTRIBUTES[attr])) if v != ref[attr]]
            tgt[attr] = int(rng.choice(choices))
            caps.append(caption(attr, tgt[attr], 0))
        if len(caps) == 1:
            attr = MODIFIABLE[changed[0]]
            caps.append(caption(attr, tgt[attr], 1))
        out.append((ref, tgt, caps))
    return out


def generate(cfg: SynthComposedConfig, root: Path) -> None:
    """Write ``root/fashionIQ/`` (captions, image_splits, images as PNG)."""
    base = root / "fashionIQ"
    for sub in ("captions", "image_splits", "images"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    counter = 0

    def render(values, tag) -> str:
        nonlocal counter
        key = f"S{counter:06d}"
        counter += 1
        rng = np.random.default_rng([cfg.seed, 7, counter])
        render_garment(values, rng, cfg.image_size, cfg.nuisance).save(base / "images" / f"{key}.png",
                                                                       compress_level=1)
        return key

    for category in CATEGORIES:
        for split, n in (("train", cfg.train_per_category), ("val", cfg.val_per_category)):
            entries, images = [], []
            for ref, tgt, caps in _plan(cfg, category, split, n):
                r, t = render(ref, "r"), render(tgt, "t")
                entries.append({"target": t, "candidate": r, "captions": caps})
                images += [r, t]
            if split == "val":
                rng = np.random.default_rng([cfg.seed, 11, CATEGORIES.index(category)])
                images += [render(_random_values(rng, category), "d") for _ in range(cfg.distractors_per_category)]
            (base / "captions" / f"cap.{category}.{split}.json").write_text(json.dumps(entries))
            (base / "image_splits" / f"split.{category}.{split}.json").write_text(json.dumps(images))


def ensure_synth_composed(cfg: SynthComposedConfig, cache_dir: Path) -> Path:
    """The generated copy's root (holding ``fashionIQ/``), generated once per configuration.

    The copy is built in a temporary folder and renamed into place. Two processes racing
    to generate it both end up reading the one complete copy: the loser's rename fails and
    it uses the winner's (it used to delete the winner's copy and put its own in place,
    while the winner was reading it: a run then saw a few categories' files and evaluated
    47 queries instead of 60)."""
    root = Path(cache_dir) / f"synth-cir-{cfg.fingerprint()}"

    def complete() -> bool:   # finished, and nothing missing or cut short since (its manifest)
        return (root / "fashionIQ" / "complete").is_file() and cached_copy.problem(root) is None

    if complete():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synth-cir-", dir=root.parent))
    try:
        generate(cfg, tmp)
        (tmp / "fashionIQ" / "complete").write_text(json.dumps(asdict(cfg)))
        cached_copy.seal(tmp)
        if root.exists() and not complete():   # not a copy anyone reads (only complete ones are)
            cached_copy.discard(root)
        try:
            os.rename(tmp, root)
        except OSError:
            if not complete():                 # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
