"""The synthetic generator: FashionAI's structure, deterministic, complete, in the ASEN meta format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cl_fir.data.asen_meta import AsenMetaDataset
from cl_fir.data.synthfashion import (ATTRIBUTE_NAMES, ATTRIBUTES, DATASET_KEY, INVISIBLE, LENGTH_OF, NECK_OF,
                                      POPULATIONS, SLEEVED, GarmentSpec, SynthFashionConfig, ensure_synthfashion,
                                      plan_image, render, render_annotated, render_unlabelled)
from cl_fir.errors import ConfigError

TINY = dict(seed=3, image_size=32, train_per_attribute=10, queries_per_attribute=8, candidates_per_attribute=12)


def test_every_attribute_has_an_invisible_value_and_comparable_value_counts():
    assert ATTRIBUTE_NAMES[:4] == ["skirt_length", "sleeve_length", "coat_length", "pant_length"]   # FashionAI order
    assert all(values[INVISIBLE] == "invisible" and 4 <= len(values) <= 6 for values in ATTRIBUTES.values())


def test_images_of_an_attribute_show_only_the_garments_it_belongs_to():
    """Each attribute's population has its own garments (the input distribution shifts between
    attributes), and a garment shows only the attributes that apply to it."""
    rng = np.random.default_rng(0)
    for attribute in ATTRIBUTE_NAMES:
        shares, shot = POPULATIONS[attribute]
        seen = set()
        for value in range(len(ATTRIBUTES[attribute])):
            for _ in range(20):
                spec = plan_image(attribute, value, rng)
                seen.add(spec.garment)
                assert spec.garment in shares and spec.shot == shot
                assert spec.shows()[attribute] == value                    # the annotated value is drawn
                applicable = ({LENGTH_OF[spec.garment]} if spec.garment in LENGTH_OF else set()) \
                    | ({"sleeve_length"} if spec.garment in SLEEVED else set()) | set(NECK_OF.get(spec.garment, ()))
                assert set(spec.shows()) <= applicable                      # trousers have no sleeves
        assert seen == set(shares)
    # the populations differ: not every attribute's images show the same garments and shots
    assert len({(tuple(sorted(s)), shot) for s, shot in POPULATIONS.values()}) >= 5


def test_rendering_is_deterministic_and_sized():
    spec = GarmentSpec("dress", "full", {"skirt_length": 2, "sleeve_length": 3}, ("neckline_design", 1))
    a = np.asarray(render(spec, np.random.default_rng(5), 64))
    b = np.asarray(render(spec, np.random.default_rng(5), 64))
    c = np.asarray(render(spec, np.random.default_rng(6), 64))
    assert a.shape == (64, 64, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_every_value_of_every_attribute_changes_the_image():
    for attribute in ATTRIBUTE_NAMES:
        spec = plan_image(attribute, 1, np.random.default_rng(1))
        images = []
        for value in range(len(ATTRIBUTES[attribute])):
            changed = GarmentSpec(spec.garment, spec.shot, dict(spec.values), spec.neck, spec.colour, spec.pattern)
            if attribute in changed.values:
                changed.values[attribute] = value
            else:
                changed.neck = (attribute, value)
            images.append(np.asarray(render(changed, np.random.default_rng(2), 64), dtype=np.int16))
        for i in range(len(images)):
            for j in range(i):
                assert np.abs(images[i] - images[j]).sum() > 0, f"{attribute}: values {j} and {i} look the same"


def test_pretraining_images_are_not_scenario_images():
    scenario = {np.asarray(render_annotated(0, split, i, i % 8, 1, 32, 0.5)).tobytes()
                for split in ("train", "valid", "test") for i in range(40)}
    for i in range(40):
        image, spec = render_unlabelled(0, i, 32)
        assert np.asarray(image).tobytes() not in scenario and spec.garment in {g for s, _ in POPULATIONS.values()
                                                                                for g in s}


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


def test_the_earlier_flat_generator_is_still_reachable(tmp_path):
    from cl_fir.data import synthfashion_flat as flat

    cfg = flat.SynthFashionConfig(seed=3, image_size=32, train_per_attribute=8, queries_per_attribute=8,
                                  candidates_per_attribute=8)
    root = flat.ensure_synthfashion_flat(cfg, tmp_path)
    ds = AsenMetaDataset(root, flat.DATASET_KEY)
    assert ds.meta.names == tuple(flat.ATTRIBUTE_NAMES) and len(ds.train_samples()) == 8 * 8
