"""transforms.decode = "device": workers read files, the device decodes and transforms batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cl_fir.cli import app
from cl_fir.data.device_decoding import EncodedBatch, EncodedImage, EncodedReader, collate_images
from cl_fir.data.image_dataset import load_rgb
from cl_fir.data.transforms import TransformConfig, build_reader, build_transforms


def _smooth(h: int, w: int, seed: int) -> np.ndarray:
    """An image with large flat blocks, so JPEG round-trips are close to exact."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, size=(h // 8 + 1, w // 8 + 1, 3))
    return np.kron(blocks, np.ones((8, 8, 1)))[:h, :w].astype(np.uint8)


@pytest.fixture
def images(tmp_path):
    """JPEGs of three sizes (two of one size), a greyscale JPEG and a PNG."""
    paths = []
    for i, (h, w) in enumerate([(60, 80), (80, 60), (60, 80), (48, 48)]):
        paths.append(tmp_path / f"{i}.jpg")
        Image.fromarray(_smooth(h, w, i)).save(paths[-1], quality=95)
    paths.append(tmp_path / "grey.jpg")
    Image.fromarray(_smooth(40, 56, 9)[..., 0]).save(paths[-1], quality=95)
    paths.append(tmp_path / "p.png")
    Image.fromarray(_smooth(70, 50, 5)).save(paths[-1])
    return paths


def _worker_and_device(paths, cfg: TransformConfig, seeds):
    """Each image through the worker transform and through the device path, with the same
    per-sample seeds (as SeededItems sets them)."""
    worker_tf, _ = build_transforms(TransformConfig(**{**cfg.__dict__, "decode": "workers"}))
    device_cfg = TransformConfig(**{**cfg.__dict__, "decode": "device"})
    device_tf, _ = build_transforms(device_cfg)
    reader = build_reader(device_cfg)
    expected, encoded = [], []
    for path, seed in zip(paths, seeds):
        torch.manual_seed(seed)
        expected.append(worker_tf(load_rgb(path)))
        torch.manual_seed(seed)
        encoded.append(device_tf(reader(path)))
    return torch.stack(expected), collate_images(encoded)


@pytest.mark.parametrize("hflip", [False, True])
def test_device_path_gives_the_worker_transform_pixels(images, hflip):
    cfg = TransformConfig(resize=40, crop=32, hflip=hflip, jpeg_draft=False)
    expected, batch = _worker_and_device(images, cfg, seeds=range(len(images)))
    assert isinstance(batch, EncodedBatch) and [it.data is not None for it in batch.items] == [True] * 5 + [False]
    if hflip:
        assert 0 < sum(it.flip for it in batch.items) < len(images)        # both outcomes drawn
    got = batch.decode_on("cpu")
    assert got.shape == expected.shape == (len(images), 3, 32, 32) and got.dtype == torch.float32
    grey_levels = (got - expected) * torch.tensor(cfg.std).view(1, 3, 1, 1) * 255
    # same flips, same resize and crop; the decoders (torchvision's libjpeg-turbo, PIL's) agree here
    assert grey_levels.abs().max() < 1.0


def test_reader_sends_jpeg_bytes_and_decodes_other_files(images):
    reader = EncodedReader()
    jpeg, png = reader(images[0]), reader(images[-1])
    assert jpeg.data is not None and jpeg.pixels is None and jpeg.data.dtype == torch.uint8
    assert jpeg.data.numel() == images[0].stat().st_size
    assert png.data is None and png.pixels.shape == (3, 70, 50)


def test_an_undecodable_jpeg_becomes_the_grey_stand_in_and_is_logged(images, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"not a jpeg at all" * 20)
    log = tmp_path / "failures.tsv"
    device_cfg = TransformConfig(resize=32, crop=32, hflip=False, decode="device")
    train_tf, _ = build_transforms(device_cfg)
    reader = build_reader(device_cfg)
    items = [train_tf(reader(p)) for p in (images[0], bad, images[1])]
    items[1].failure_log = str(log)
    out = collate_images(items).decode_on("cpu")
    std, mean = torch.tensor(device_cfg.std).view(3, 1, 1), torch.tensor(device_cfg.mean).view(3, 1, 1)
    torch.testing.assert_close(out[1] * std * 255 + mean * 255, torch.full((3, 32, 32), 128.0))
    assert str(bad) in log.read_text()
    worker_tf, _ = build_transforms(TransformConfig(resize=32, crop=32, hflip=False, jpeg_draft=False, decode="workers"))
    assert (out[0] - worker_tf(load_rgb(images[0]))).abs().max() < 0.02   # the good ones still decode


def test_collate_keeps_other_fields_and_the_default_path():
    spec_tf, _ = build_transforms(TransformConfig(decode="device"))
    items = [(spec_tf(EncodedImage("a", pixels=torch.zeros(3, 4, 4, dtype=torch.uint8))), "text", 3)] * 2
    images, texts, labels = collate_images(items)
    assert isinstance(images, EncodedBatch) and len(images) == 2
    assert texts == ["text", "text"] and labels.tolist() == [3, 3]
    plain = collate_images([(torch.ones(2), 1), (torch.zeros(2), 2)])
    assert plain[0].shape == (2, 2) and plain[1].tolist() == [1, 2]


def test_worker_transform_refuses_decoded_images():
    device_tf, _ = build_transforms(TransformConfig(decode="device"))
    with pytest.raises(TypeError, match="EncodedReader"):
        device_tf(Image.new("RGB", (8, 8)))


def _matrix(out, name, strategy="finetune"):
    return np.genfromtxt(out / name / strategy / "seed0" / "matrix.csv", delimiter=",", skip_header=1)[:, 1:]


def test_a_run_decoding_on_the_device_equals_one_decoding_in_workers(tiny_scenario, tmp_path, monkeypatch):
    """synthfashion images are PNGs: the workers decode them in both modes, and resize,
    crop, flip and normalisation on the (CPU) device give the same pixels, so the runs match
    exactly, with loader workers too."""
    decoded, original = [], EncodedBatch.decode_on
    monkeypatch.setattr(EncodedBatch, "decode_on", lambda self, device: decoded.append(len(self)) or
                        original(self, device))
    runs = {}
    for name, extra in (("workers", []), ("device", ["--set", "transforms.decode=device"]),
                        ("device_w2", ["--set", "transforms.decode=device", "--num-workers", "2"])):
        res = CliRunner().invoke(app, ["run", "--strategy", "finetune", "--scenario", str(tiny_scenario), "--quiet",
                                       "--output-dir", str(tmp_path / name), *extra])
        assert res.exit_code == 0, res.output
        runs[name] = _matrix(tmp_path / name, "tiny")
    np.testing.assert_array_equal(runs["device"], runs["workers"])
    np.testing.assert_array_equal(runs["device_w2"], runs["workers"])
    # per device run: 2 training steps of 16 images per increment, then evaluation batches
    assert decoded.count(16) >= 2 * 2 * 2 and len(decoded) > 8


def test_bad_decode_option_is_named(tiny_scenario, tmp_path):
    res = CliRunner().invoke(app, ["run", "--strategy", "finetune", "--scenario", str(tiny_scenario), "--quiet",
                                   "--output-dir", str(tmp_path), "--set", "transforms.decode=gpu"])
    assert res.exit_code != 0
    assert "transforms.decode: expected workers or device, got 'gpu'" in res.output


def test_a_composed_run_decoding_on_the_device_equals_one_decoding_in_workers(tmp_path, cache_dir):
    """References and targets are both encoded batches, decoded by the loop and the evaluator."""
    from test_composed_family import TINY_CIR

    scenario = tmp_path / "tiny-cir.toml"
    scenario.write_text(TINY_CIR.replace("{gallery}", "split").replace("{groups}", "3"))
    runs = {}
    for name, extra in (("workers", []), ("device", ["--set", "transforms.decode=device"])):
        res = CliRunner().invoke(app, ["run", "--strategy", "lwf", "--scenario", str(scenario), "--quiet",
                                       "--output-dir", str(tmp_path / name), *extra])
        assert res.exit_code == 0, res.output
        runs[name] = _matrix(tmp_path / name, "tiny-cir", "lwf")
    np.testing.assert_array_equal(runs["device"], runs["workers"])
