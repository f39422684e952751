"""Image checks: missing, empty, non-image, truncated files; other extensions; the cache."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from cl_fir.data.image_check import check_images
from cl_fir.data.image_dataset import SampleImageDataset, count_load_failures
from cl_fir.data.asen_meta import SampleTable


def _jpeg_bytes(size=128) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def image_folder(tmp_path):
    data = _jpeg_bytes()
    (tmp_path / "good.jpg").write_bytes(data)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "renamed.png").write_bytes(data)     # listed as renamed.jpg
    return tmp_path


def test_levels_find_what_they_promise(image_folder):
    names = ["good.jpg", "missing.jpg", "empty.jpg", "text.jpg", "truncated.jpg", "renamed.jpg"]
    paths = [image_folder / n for n in names]
    exists = check_images(paths, "exists")
    assert sorted(exists.bad) == [1, 2]
    header = check_images(paths, "header")
    assert sorted(header.bad) == [1, 2, 3]            # a truncated JPEG has a valid header
    decode = check_images(paths, "decode")
    assert sorted(decode.bad) == [1, 2, 3, 4]
    assert decode.bad[1] == "missing" and decode.bad[2].startswith("empty")
    assert decode.bad[4].startswith("corrupt")
    assert decode.paths[5] == image_folder / "renamed.png" and decode.other_extension == 1
    assert decode.reasons() == {"missing": 1, "empty": 1, "corrupt": 2}


def test_results_are_cached_until_a_file_changes(image_folder, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    paths = [image_folder / "good.jpg", image_folder / "text.jpg"]
    first = check_images(paths, "decode", cache)
    again = check_images(paths, "decode", cache)
    assert not first.from_cache and again.from_cache and again.bad == first.bad
    (image_folder / "text.jpg").write_bytes(_jpeg_bytes())
    os.utime(image_folder / "text.jpg", ns=(1, 1))
    fixed = check_images(paths, "decode", cache)
    assert not fixed.from_cache and fixed.bad == {}


def test_load_failure_during_a_run_is_replaced_and_logged(image_folder, tmp_path):
    table = SampleTable(np.asarray([0, 1]), np.asarray([0, 0]), np.asarray([0, 1]))
    ds = SampleImageDataset([image_folder / "good.jpg", image_folder / "truncated.jpg"], table, np.asarray([0]))
    ds.failure_log = str(tmp_path / "failures.txt")
    img, label = ds[1]
    assert img.size == (224, 224) and label == 1
    assert count_load_failures(ds.failure_log) == 1
    assert "truncated.jpg" in (tmp_path / "failures.txt").read_text()
