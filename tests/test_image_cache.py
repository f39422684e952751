"""Keeping decoded images (transforms.cache_decoded_mb): same pixels, bounded memory."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cl_fir.data.image_dataset import CachingReader, PilReader
from cl_fir.data.transforms import TransformConfig, build_reader, build_transforms


def _pngs(folder, n, size=16):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_kept_images_have_the_files_pixels_and_stop_at_the_budget(tmp_path):
    paths = _pngs(tmp_path, 5)
    reader = CachingReader(PilReader(), max_bytes=3 * 16 * 16 * 3)      # room for three images
    first = [np.asarray(reader(p)) for p in paths]
    assert len(reader.kept) == 3 and reader.used == 3 * 16 * 16 * 3
    again = [np.asarray(reader(p)) for p in paths]
    for a, b, p in zip(first, again, paths):
        assert np.array_equal(a, b) and np.array_equal(a, np.asarray(PilReader()(p)))


def test_the_training_transform_never_changes_a_kept_image(tmp_path):
    [path] = _pngs(tmp_path, 1, size=32)
    cfg = TransformConfig(resize=32, crop=32, cache_decoded_mb=1)
    reader = build_reader(cfg)
    assert isinstance(reader, CachingReader)
    train, _ = build_transforms(cfg)
    before = np.asarray(reader(path)).copy()
    for seed in range(8):                                   # flips and normalisation copy the pixels
        torch.manual_seed(seed)
        train(reader(path))
    assert np.array_equal(np.asarray(reader(path)), before)
    assert not isinstance(build_reader(TransformConfig()), CachingReader)   # off by default
