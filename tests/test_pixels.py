"""transforms.normalize = "device": workers hand over uint8 crops, the device normalises
them, and every value equals normalising in the worker."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cl_fir.cli import app
from cl_fir.data.device_decoding import collate_images
from cl_fir.data.pixels import PixelBatch, Pixels
from cl_fir.data.transforms import TransformConfig, build_transforms, resolve_normalize
from cl_fir.runtime.device import resolve_device


def _image(h: int, w: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("train", [True, False])
def test_device_normalisation_equals_the_workers_bit_for_bit(train):
    cfg = dict(resize=20, crop=16, mean=(0.3, 0.5, 0.7), std=(0.2, 0.25, 0.3))
    worker = build_transforms(TransformConfig(**cfg, normalize="workers"))[0 if train else 1]
    device = build_transforms(TransformConfig(**cfg, normalize="device"))[0 if train else 1]
    images = [_image(24 + 3 * i, 30, i) for i in range(6)]
    expected, items = [], []
    for i, img in enumerate(images):
        torch.manual_seed(i)
        expected.append((worker(img), i))
        torch.manual_seed(i)
        items.append((device(img), i))
    assert isinstance(items[0][0], Pixels) and items[0][0].data.dtype == torch.uint8
    batch, labels = collate_images(items)
    assert isinstance(batch, PixelBatch) and len(batch) == 6 and labels.tolist() == list(range(6))
    setup = resolve_device("cpu", "fp32")
    out = setup.to_device(batch)
    assert out.dtype == torch.float32 and torch.equal(out, torch.stack([e for e, _ in expected]))


def test_auto_normalises_on_the_device_only_for_cuda():
    cfg = TransformConfig()
    assert resolve_normalize(cfg, torch.device("cpu")).normalize == "workers"
    assert resolve_normalize(cfg, torch.device("cuda", 0)).normalize == "device"
    assert resolve_normalize(TransformConfig(normalize="workers"), torch.device("cuda")).normalize == "workers"
    assert cfg.normalize == "auto"                                       # the run's config is left as given


def test_a_batch_mixing_normalisations_is_refused():
    a = Pixels(torch.zeros(3, 2, 2, dtype=torch.uint8), build_transforms(TransformConfig(normalize="device"))[0].norm)
    b = Pixels(a.data, build_transforms(TransformConfig(normalize="device", std=(1.0, 1.0, 1.0)))[0].norm)
    with pytest.raises(ValueError, match="one normalisation"):
        collate_images([a, b])


def _matrix(out, scenario, strategy):
    return (out / scenario / strategy / "seed0" / "matrix.csv").read_text()


def test_runs_normalising_on_the_device_equal_runs_normalising_in_workers(tiny_scenario, tmp_path, cache_dir,
                                                                          monkeypatch):
    """Attribute family with 2 loader workers (uint8 through shared memory), and the composed
    family (references and targets both pixel batches); the loop, the evaluators and the
    class-mean pass all finish the batches on the device."""
    from test_composed_family import TINY_CIR

    finished, original = [], PixelBatch.decode_on
    monkeypatch.setattr(PixelBatch, "decode_on", lambda self, device: finished.append(len(self)) or
                        original(self, device))
    cir = tmp_path / "tiny-cir.toml"
    cir.write_text(TINY_CIR.replace("{gallery}", "split").replace("{groups}", "3"))
    for scenario, name, strategy, extra in ((tiny_scenario, "tiny", "finetune", ["--num-workers", "2"]),
                                            (cir, "tiny-cir", "lwf", [])):
        runs = {}
        for where in ("workers", "device"):
            out = tmp_path / f"{name}-{where}"
            res = CliRunner().invoke(app, ["run", "--strategy", strategy, "--scenario", str(scenario), "--quiet",
                                           "--output-dir", str(out), "--set", f"transforms.normalize={where}",
                                           *extra])
            assert res.exit_code == 0, res.output
            runs[where] = _matrix(out, name, strategy)
        assert runs["device"] == runs["workers"]
    assert len(finished) > 10


def test_bad_normalize_option_is_named(tiny_scenario, tmp_path):
    res = CliRunner().invoke(app, ["run", "--strategy", "finetune", "--scenario", str(tiny_scenario), "--quiet",
                                   "--output-dir", str(tmp_path), "--set", "transforms.normalize=gpu"])
    assert res.exit_code != 0
    assert "transforms.normalize: expected auto, workers or device, got 'gpu'" in res.output
