"""The synthetic generator: deterministic, complete, in the ASEN/FashionAI meta format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cl_fir.data.asen_meta import AsenMetaDataset
from cl_fir.data.synthfashion import (ATTRIBUTE_NAMES, ATTRIBUTES, DATASET_KEY, SynthFashionConfig,
                                      ensure_synthfashion, render_garment)
from cl_fir.errors import ConfigError

TINY = dict(seed=3, image_size=32, train_per_attribute=10, queries_per_attribute=8, candidates_per_attribute=12)


def test_attribute_inventory_matches_the_brief():
    assert len(ATTRIBUTES) >= 6
    assert all(4 <= len(v) <= 10 for v in ATTRIBUTES.values())


def test_rendering_is_deterministic_and_sized():
    values = {a: 1 for a in ATTRIBUTE_NAMES}
    a = np.asarray(render_garment(values, np.random.default_rng(5), 64))
    b = np.asarray(render_garment(values, np.random.default_rng(5), 64))
    c = np.asarray(render_garment(values, np.random.default_rng(6), 64))
    assert a.shape == (64, 64, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_every_attribute_changes_the_image():
    base = {a: 0 for a in ATTRIBUTE_NAMES}
    ref = np.asarray(render_garment(base, np.random.default_rng(0), 64), dtype=np.int16)
    for name in ATTRIBUTE_NAMES:
        changed = dict(base, **{name: len(ATTRIBUTES[name]) - 1})
        img = np.asarray(render_garment(changed, np.random.default_rng(0), 64), dtype=np.int16)
        assert np.abs(img - ref).sum() > 0, f"{name} is not visible"


def test_generated_copy_is_cached_and_identical_across_generations(tmp_path):
    cfg = SynthFashionConfig(**TINY)
    root1 = ensure_synthfashion(cfg, tmp_path / "a")
    root2 = ensure_synthfashion(cfg, tmp_path / "b")
    assert ensure_synthfashion(cfg, tmp_path / "a") == root1   # reused, not regenerated
    files1 = sorted(p.relative_to(root1) for p in root1.rglob("*") if p.is_file())
    files2 = sorted(p.relative_to(root2) for p in root2.rglob("*") if p.is_file())
    assert files1 == files2
    for rel in files1:
        assert (root1 / rel).read_bytes() == (root2 / rel).read_bytes(), rel
    assert not any(p.name.startswith(".synthfashion-") for p in (tmp_path / "a").iterdir())


def test_written_files_follow_the_asen_meta_format(tmp_path):
    cfg = SynthFashionConfig(**TINY)
    root = ensure_synthfashion(cfg, tmp_path)
    meta = json.loads((root / "meta.json").read_text())[DATASET_KEY]
    assert meta["ATTRIBUTES"] == ATTRIBUTE_NAMES
    ds = AsenMetaDataset(root, DATASET_KEY)
    n_attr = len(ATTRIBUTE_NAMES)
    assert len(ds.filenames("train")) == n_attr * cfg.train_per_attribute
    train = ds.train_samples()
    assert len(train) == n_attr * cfg.train_per_attribute               # FashionAI style: one pair per image
    assert sorted(train.image_ids.tolist()) == list(range(len(train)))
    for split in ("valid", "test"):
        q, c = ds.eval_samples(split, "query"), ds.eval_samples(split, "candidate")
        assert len(q) == n_attr * cfg.queries_per_attribute and len(c) == n_attr * cfg.candidates_per_attribute
        ids = set(q.image_ids.tolist())
        assert not ids & set(c.image_ids.tolist())                       # disjoint ...
        assert ids | set(c.image_ids.tolist()) == set(range(len(ds.filenames(split))))   # ... and covering
        for a, name in enumerate(ATTRIBUTE_NAMES):                       # every value has a candidate
            assert set(c.values[c.attributes == a].tolist()) == set(range(len(ATTRIBUTES[name])))
    assert ds.image_paths("test")[0].is_file()


def test_rejects_bad_configuration(tmp_path):
    with pytest.raises(ConfigError, match="image_size"):
        ensure_synthfashion(SynthFashionConfig(image_size=8), tmp_path)
    with pytest.raises(ConfigError, match="train_per_attribute"):
        ensure_synthfashion(SynthFashionConfig(train_per_attribute=2), tmp_path)
