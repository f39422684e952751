"""Transforms equal torchvision's reference pipeline; the doublet sampler is sound and seeded."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from cl_fir.data.asen_meta import SampleTable
from cl_fir.data.samplers import DoubletBatchSampler
from cl_fir.data.transforms import TransformConfig, build_transforms
from cl_fir.errors import ConfigError


def reference(cfg, flip=False):
    steps = [v2.PILToTensor(), v2.Resize(cfg.resize, antialias=True), v2.CenterCrop(cfg.crop)]
    steps += [v2.RandomHorizontalFlip(p=1.0)] if flip else []
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(cfg.mean), list(cfg.std))]
    return v2.Compose(steps)


@pytest.mark.parametrize("size, resize, crop", [((64, 64), 64, 64), ((80, 60), 72, 56), ((50, 90), 64, 64)])
def test_eval_transform_equals_torchvision(size, resize, crop):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
    cfg = TransformConfig(resize=resize, crop=crop)
    _, ev = build_transforms(cfg)
    out = ev(img)
    assert out.shape == (3, crop, crop)
    torch.testing.assert_close(out, reference(cfg)(img), atol=1e-5, rtol=0)


def test_train_transform_flips_only_when_enabled():
    img = Image.fromarray(np.arange(3 * 8 * 8, dtype=np.uint8).reshape(8, 8, 3))
    cfg = TransformConfig(resize=8, crop=8)
    train, ev = build_transforms(cfg)
    outs = {train(img)[0, 0, 0].item() for _ in range(40)}
    assert len(outs) == 2                                       # flipped and not flipped
    assert {ev(img)[0, 0, 0].item() for _ in range(10)} == {ev(img)[0, 0, 0].item()}
    no_flip, _ = build_transforms(TransformConfig(resize=8, crop=8, hflip=False))
    assert len({no_flip(img)[0, 0, 0].item() for _ in range(20)}) == 1


def table(attrs, values):
    n = len(attrs)
    return SampleTable(np.arange(n), np.asarray(attrs), np.asarray(values))


def test_doublets_share_attribute_value_and_differ_in_sample():
    rng = np.random.default_rng(0)
    t = table(rng.integers(0, 3, 300), rng.integers(0, 4, 300))
    sampler = DoubletBatchSampler(t, batch_size=8, num_doublets=160, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 20
    for b in batches:
        anchors, positives = b[:8], b[8:]
        for i, j in zip(anchors, positives):
            assert i != j
            assert t.attributes[i] == t.attributes[j] and t.values[i] == t.values[j]


def test_sampler_is_deterministic_and_attribute_balanced():
    t = table([0] * 500 + [1] * 50, [0, 1] * 275)
    a = list(DoubletBatchSampler(t, 10, 2000, seed=5))
    assert a == list(DoubletBatchSampler(t, 10, 2000, seed=5))
    assert a != list(DoubletBatchSampler(t, 10, 2000, seed=6))
    counts = Counter(int(t.attributes[b[k]]) for b in a for k in range(10))
    assert abs(counts[0] - counts[1]) < 0.1 * 2000       # uniform over attributes, not over images


def test_sampler_skips_values_with_a_single_image_and_rejects_impossible_tables():
    t = table([0, 0, 0, 1], [0, 0, 1, 0])                # only (0, 0) has two images
    for b in DoubletBatchSampler(t, 2, 10, seed=0):
        assert set(b) == {0, 1}
    with pytest.raises(ConfigError, match="two training images"):
        DoubletBatchSampler(table([0, 1], [0, 0]), 2, 4, seed=0)
    with pytest.raises(ConfigError, match="batch_size"):
        DoubletBatchSampler(t, 1, 4, seed=0)


def test_jpeg_draft_decodes_at_a_reduced_scale_that_keeps_the_shorter_side(tmp_path):
    from PIL import Image

    from cl_fir.data.image_dataset import load_rgb

    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, size=(25, 32, 3)), np.ones((16, 16, 1))).astype(np.uint8)   # 400 x 512
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(smooth).save(tmp_path / "a.png")
    assert load_rgb(tmp_path / "a.jpg").size == (512, 400)
    assert load_rgb(tmp_path / "a.jpg", min_side=100).size == (128, 100)        # 1/4: shorter side 100 >= 100
    assert load_rgb(tmp_path / "a.jpg", min_side=101).size == (256, 200)        # 1/4 would give 100 < 101
    assert load_rgb(tmp_path / "a.jpg", min_side=400).size == (512, 400)
    assert load_rgb(tmp_path / "a.png", min_side=100).size == (512, 400)        # only JPEGs have DCT scales
    # the transform's output is close to that of a full decode (mean error 3.4 grey levels here)
    cfg = TransformConfig(resize=96, crop=96, hflip=False)
    draft, _ = build_transforms(cfg)
    full, _ = build_transforms(TransformConfig(resize=96, crop=96, hflip=False, jpeg_draft=False))
    assert draft.decode_min_side == 96 and full.decode_min_side is None
    a = draft(load_rgb(tmp_path / "a.jpg", draft.decode_min_side))
    b = full(load_rgb(tmp_path / "a.jpg", full.decode_min_side))
    assert a.shape == b.shape == (3, 96, 96)
    std = torch.tensor(cfg.std).view(3, 1, 1) * 255
    assert ((a - b) * std).abs().mean() < 5.0
