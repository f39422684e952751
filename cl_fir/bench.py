"""Benchmarks, reported as ratios against a reference run side by side in one process.

* :func:`bench_map`: exact MAP@all of the harness vs a straightforward per-query NumPy
  implementation in the style of ASEN's scorer, on FashionAI-test-sized random
  embeddings (3,600 queries x 14,400 candidates split over 8 attributes, 128-d).
* :func:`bench_train`: optimizer steps of the harness loop (``TrainingLoop.training_step``
  with the ``finetune`` strategy: hooks, auxiliary losses, cost meter, finite-loss check)
  vs a bare PyTorch loop on the same timm backbone and head, precision, optimizer and
  device-resident batches; repeats alternate between the two, best of each.
* :func:`bench_loader`: images/s of the training DataLoader reading JPEGs from disk
  (decode, resize, crop, flip, normalise) per number of workers, PIL vs torchvision decoding.
"""

from __future__ import annotations

import time

import numpy as np

import torch

from cl_fir.evaluation.retrieval import average_precision

# FashionAI test split, per attribute (reference/datasets.md 1.3): (queries, candidates, values)
FASHIONAI_TEST = [(422, 1703, 6), (623, 2383, 9), (535, 2088, 8), (422, 1722, 6),
                  (341, 1401, 5), (289, 1269, 5), (703, 2734, 10), (265, 1100, 5)]


def naive_average_precision(q: np.ndarray, ql: np.ndarray, c: np.ndarray, cl: np.ndarray) -> np.ndarray:
    """One query at a time: argsort, then AP over the full list (the ASEN scorer's approach)."""
    out = np.zeros(len(q))
    for i in range(len(q)):
        order = np.argsort(-(c @ q[i]), kind="stable")
        rel = (cl[order] == ql[i]).astype(np.float64)
        n_rel = rel.sum()
        if n_rel:
            out[i] = (np.cumsum(rel) / np.arange(1, len(rel) + 1) * rel).sum() / n_rel
    return out


def _random_split(rng, dim: int):
    tasks = []
    for n_q, n_c, n_v in FASHIONAI_TEST:
        centres = rng.normal(size=(n_v, dim))
        ql, cl = rng.integers(n_v, size=n_q), rng.integers(n_v, size=n_c)
        q = centres[ql] + 2.0 * rng.normal(size=(n_q, dim))
        c = centres[cl] + 2.0 * rng.normal(size=(n_c, dim))
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        tasks.append((q, ql, c, cl))   # float64: both scorers rank identical similarities
    return tasks


def bench_map(dim: int = 128, repeats: int = 3, seed: int = 0) -> dict:
    tasks = _random_split(np.random.default_rng(seed), dim)

    def timed(fn):
        best, values = float("inf"), None
        for _ in range(repeats):
            start = time.perf_counter()
            values = np.concatenate([fn(*t) for t in tasks])
            best = min(best, time.perf_counter() - start)
        return best, values

    t_harness, ap_harness = timed(lambda q, ql, c, cl: average_precision(q, ql, c, cl))
    t_naive, ap_naive = timed(naive_average_precision)
    return {
        "name": "map_all_fashionai_test_size",
        "queries": int(sum(t[0].shape[0] for t in tasks)),
        "candidates": int(sum(t[2].shape[0] for t in tasks)),
        "dim": dim,
        "harness_seconds": t_harness,
        "naive_numpy_seconds": t_naive,
        "speedup": t_naive / t_harness,
        "map_harness": float(ap_harness.mean()),
        "map_naive": float(ap_naive.mean()),
        "max_abs_difference": float(np.abs(ap_harness - ap_naive).max()),
    }


def _bare_step(model, optimizer, x, attrs, setup, temperature: float) -> float:
    """One step of a plain loop: forward under autocast, doublet InfoNCE, backward, step."""
    with setup.autocast():
        z = model(x, attrs)
    z = z.float()
    n = z.shape[0]
    logits = (z @ z.t() / temperature).masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    target = (torch.arange(n, device=z.device) + n // 2) % n
    loss = torch.nn.functional.cross_entropy(logits, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def bench_train(backbone: str = "resnet18", image_size: int = 112, batch_size: int = 32, steps: int = 10,
                repeats: int = 3, device: str = "auto", precision: str = "auto", seed: int = 0) -> dict:
    """Images/s of the harness training step vs a bare loop (``batch_size`` doublets = 2x images)."""
    import copy

    from cl_fir.config import RunConfig
    from cl_fir.engine.cost import CostMeter
    from cl_fir.engine.device import resolve_device
    from cl_fir.engine.loop import TrainingLoop
    from cl_fir.models import build_model
    from cl_fir.registry import get_strategy_class

    setup = resolve_device(device, precision)
    cfg = RunConfig(strategy="finetune", scenario="bench")
    cfg.model.backbone, cfg.train.batch_size = backbone, batch_size
    torch.manual_seed(seed)
    n_attr = 8
    harness_model = setup.prepare_model(build_model(cfg.model, n_attr, [0] * n_attr))
    bare_model = copy.deepcopy(harness_model)
    strategy = get_strategy_class("finetune")()
    from types import SimpleNamespace

    loop = TrainingLoop(cfg, SimpleNamespace(protocol="ranking"), strategy, harness_model, setup, CostMeter(setup, 0.0))
    loop.cost.start(0)
    loop.optimizer, _ = strategy.make_optimizer(loop)
    loop.increment = type("Increment", (), {"index": 0})()
    bare_opt, _ = strategy.make_optimizer(type("L", (), {"cfg": cfg, "model": bare_model, "setup": setup})())
    n = 2 * batch_size
    x = setup.to_device(torch.randn(n, 3, image_size, image_size))
    y = torch.randint(5, (batch_size,)).repeat(2).to(setup.device)
    attrs = torch.randint(n_attr, (batch_size,)).repeat(2).to(setup.device)
    batch = (x, y, attrs)

    def sync():
        if setup.device.type == "cuda":
            torch.cuda.synchronize(setup.device)

    def timed(step) -> float:
        step()                                     # warm-up (allocations, autotuning)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        return time.perf_counter() - start

    harness_step = lambda: loop.training_step(batch)                                         # noqa: E731
    bare_step = lambda: _bare_step(bare_model, bare_opt, x, attrs, setup, cfg.loss.temperature)  # noqa: E731
    t_harness = t_bare = float("inf")
    for _ in range(repeats):
        t_bare = min(t_bare, timed(bare_step))
        t_harness = min(t_harness, timed(harness_step))
    images = steps * n
    return {
        "name": "train_step_throughput",
        "backbone": backbone, "image_size": image_size, "images_per_step": n, "steps": steps,
        "device": setup.name, "precision": setup.precision, "channels_last": setup.channels_last,
        "harness_images_per_s": images / t_harness,
        "bare_images_per_s": images / t_bare,
        "harness_overhead": t_harness / t_bare - 1.0,
    }


def _write_jpegs(folder, count: int, size: int, seed: int = 0) -> list:
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    base = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    for i in range(count):
        img = np.roll(base, i * 7, axis=1) // 2 + rng.integers(0, 128, size=(size, size, 3), dtype=np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths


class _JpegDataset(torch.utils.data.Dataset):
    def __init__(self, paths, transform, decoder: str):
        self.paths, self.transform, self.decoder = paths, transform, decoder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if self.decoder == "torchvision":
            import warnings

            with warnings.catch_warnings():   # deprecated in torchvision 0.29 in favour of torchcodec
                warnings.simplefilter("ignore", DeprecationWarning)
                from torchvision.io import ImageReadMode, decode_image, read_file

                img = decode_image(read_file(str(self.paths[i])), mode=ImageReadMode.RGB)
        else:
            from cl_fir.data.image_dataset import load_rgb

            img = load_rgb(self.paths[i])
        return self.transform(img), 0


def bench_loader(images: int = 512, source_size: int = 300, crop: int = 224, workers=(0, 1, 2),
                 batch_size: int = 64) -> dict:
    """Training-transform images/s from JPEGs on disk, per worker count and decoder."""
    import tempfile
    from pathlib import Path

    from cl_fir.data.transforms import TransformConfig, build_transforms

    transform, _ = build_transforms(TransformConfig(resize=int(crop * 256 / 224), crop=crop))
    rows = []
    with tempfile.TemporaryDirectory(prefix="cl-fir-bench-") as tmp:
        paths = _write_jpegs(Path(tmp), images, source_size)
        for p in paths:                      # page cache warm for every configuration alike
            p.read_bytes()
        for decoder in ("pil", "torchvision"):
            for w in workers:
                loader = torch.utils.data.DataLoader(_JpegDataset(paths, transform, decoder), batch_size=batch_size,
                                                     num_workers=w, persistent_workers=False)
                start = time.perf_counter()
                count = sum(b[0].shape[0] for b in loader)
                elapsed = time.perf_counter() - start
                rows.append({"decoder": decoder, "workers": w, "images_per_s": count / elapsed,
                             "images_per_s_per_worker": count / elapsed / max(w, 1)})
    return {"name": "data_loader", "images": images, "source_size": source_size, "crop": crop, "rows": rows}
