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

from cl_fir.evaluation.retrieval import average_precision, retrieval_scores

# FashionAI test split, per attribute (docs/datasets.md): (queries, candidates, values)
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
    gpu = {}
    if torch.cuda.is_available():
        # Same split with the embeddings already on the GPU (as the evaluator has them):
        # float32, the evaluator's precision, and float64 for an exact comparison.
        for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
            on_gpu = [tuple(torch.as_tensor(a).cuda() for a in t) for t in tasks]
            on_gpu = [(q.to(dtype), ql, c.to(dtype), cl) for q, ql, c, cl in on_gpu]
            average_precision(*on_gpu[0])                       # warm-up: kernels, allocator

            def run_gpu(on_gpu=on_gpu):
                out = np.concatenate([average_precision(*t) for t in on_gpu])
                torch.cuda.synchronize()
                return out

            best, values = float("inf"), None
            for _ in range(repeats):
                start = time.perf_counter()
                values = run_gpu()
                best = min(best, time.perf_counter() - start)
            gpu[name] = {"seconds": best, "speedup_vs_naive": t_naive / best,
                         "max_abs_difference": float(np.abs(values - ap_naive).max())}
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
        "gpu": gpu,
    }


def bench_map_gallery(queries: int = 10_000, candidates: int = 100_000, dim: int = 128, values: int = 10,
                      chunks=(1 << 20, 1 << 22, 1 << 24, 1 << 26), device: str = "auto", seed: int = 0) -> dict:
    """MAP@all over one large gallery (memory bounded by the chunk size), per chunk size.

    Reports time and, on CUDA, the peak memory the ranking allocated; every chunk size
    must give the same values (checked against the first)."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(values, dim, generator=gen)
    ql, cl = torch.randint(values, (queries,), generator=gen), torch.randint(values, (candidates,), generator=gen)
    q = torch.nn.functional.normalize(centres[ql] + 2.0 * torch.randn(queries, dim, generator=gen), dim=1)
    c = torch.nn.functional.normalize(centres[cl] + 2.0 * torch.randn(candidates, dim, generator=gen), dim=1)
    q, ql, c, cl = (t.to(dev) for t in (q, ql, c, cl))
    retrieval_scores(q[:8], ql[:8], c, cl)          # warm-up: kernels, allocator
    rows, reference = [], None
    for chunk in chunks:
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
        start = time.perf_counter()
        ap = (average_precision(q, ql, c, cl) if chunk is None else
              retrieval_scores(q, ql, c, cl, ap_ks=(None,), chunk_elements=chunk)["ap"][None])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        row = {"chunk_elements": chunk, "seconds": elapsed, "map": float(ap.mean())}
        if dev.type == "cuda":
            row["peak_extra_bytes"] = int(torch.cuda.max_memory_allocated(dev) - base)
        reference = ap if reference is None else reference
        row["max_abs_difference_vs_first"] = float(np.abs(ap - reference).max())
        rows.append(row)
    return {"name": "map_all_large_gallery", "queries": queries, "candidates": candidates, "dim": dim,
            "device": str(dev), "rows": rows}


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


class _TrainBench:
    """The harness loop and a bare loop on identical copies of one model, with one
    device-resident batch of ``batch_size`` doublets (2x images)."""

    def __init__(self, backbone: str, image_size: int, batch_size: int, device: str, precision: str, seed: int,
                 compile: bool):
        import copy
        from types import SimpleNamespace

        from cl_fir.config import RunConfig
        from cl_fir.engine.cost import CostMeter
        from cl_fir.engine.loop import TrainingLoop
        from cl_fir.families import AttributeFamily
        from cl_fir.models import build_model
        from cl_fir.registry import get_strategy_class
        from cl_fir.runtime.device import resolve_device

        self.setup = setup = resolve_device(device, precision)
        self.cfg = cfg = RunConfig(strategy="finetune", scenario="bench")
        cfg.model.backbone, cfg.train.batch_size = backbone, batch_size
        torch.manual_seed(seed)
        n_attr = 8
        self.harness_model = setup.prepare_model(build_model(cfg.model, n_attr, [0] * n_attr))
        self.bare_model = copy.deepcopy(self.harness_model)
        if compile:
            from cl_fir.runner import _backbones

            for model in (self.harness_model, self.bare_model):
                for body in _backbones(model):
                    body.compile()
        strategy = get_strategy_class("finetune")()
        self.label_aware = strategy.opts.label_aware
        self.loop = loop = TrainingLoop(cfg, SimpleNamespace(protocol="ranking"), strategy, self.harness_model,
                                        AttributeFamily(cfg.loss), setup, CostMeter(setup, 0.0))
        loop.cost.start(0)
        loop.optimizer, _ = strategy.make_optimizer(loop.context)
        loop.increment = type("Increment", (), {"index": 0})()
        self.bare_opt, _ = strategy.make_optimizer(SimpleNamespace(cfg=cfg, model=self.bare_model,
                                                                   device=setup.device))
        self.images = 2 * batch_size
        self.x = setup.to_device(torch.randn(self.images, 3, image_size, image_size))
        self.y = torch.randint(5, (batch_size,)).repeat(2).to(setup.device)
        self.attrs = torch.randint(n_attr, (batch_size,)).repeat(2).to(setup.device)

    def sync(self) -> None:
        if self.setup.device.type == "cuda":
            torch.cuda.synchronize(self.setup.device)

    def seconds(self, step, steps: int) -> float:
        step()                                     # warm-up (allocations, autotuning)
        self.sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        self.sync()
        return time.perf_counter() - start

    def harness_step(self):
        return self.loop.training_step((self.x, self.y, self.attrs))

    def bare_step(self):
        return _bare_step(self.bare_model, self.bare_opt, self.x, self.attrs, self.setup, self.cfg.loss.temperature)

    def describe(self, steps: int, compile: bool) -> dict:
        return {"backbone": self.cfg.model.backbone, "image_size": self.x.shape[-1], "images_per_step": self.images,
                "steps": steps, "device": self.setup.name, "precision": self.setup.precision,
                "channels_last": self.setup.channels_last, "compiled": compile}


def bench_train(backbone: str = "resnet18", image_size: int = 112, batch_size: int = 32, steps: int = 10,
                repeats: int = 3, device: str = "auto", precision: str = "auto", seed: int = 0,
                compile: bool = False) -> dict:
    """Images/s of the harness training step vs a bare loop (``batch_size`` doublets = 2x images).

    ``compile`` compiles both models' backbones in place, as ``train.compile`` does in a run."""
    b = _TrainBench(backbone, image_size, batch_size, device, precision, seed, compile)
    t_harness = t_bare = float("inf")
    for _ in range(repeats):
        t_bare = min(t_bare, b.seconds(b.bare_step, steps))
        t_harness = min(t_harness, b.seconds(b.harness_step, steps))
    images = steps * b.images
    return {
        "name": "train_step_throughput", **b.describe(steps, compile),
        "harness_images_per_s": images / t_harness,
        "bare_images_per_s": images / t_bare,
        "harness_overhead": t_harness / t_bare - 1.0,
    }


def bench_train_ablation(backbone: str = "resnet18", image_size: int = 112, batch_size: int = 32, steps: int = 10,
                         repeats: int = 3, device: str = "auto", precision: str = "auto", seed: int = 0,
                         compile: bool = False) -> dict:
    """Where the harness step's time goes: the bare and harness steps and variants between
    them, timed in alternating order (best of ``repeats``), each as overhead against the bare step.

    * ``bare, harness's features and loss``: the bare step, but the forward also returns the
      feature map and the loss is the harness's (label-aware) doublet InfoNCE;
    * ``bare step on the harness's model``: the bare step with the loop's model and optimizer;
    * ``harness, loss read at once``: the loop reading each loss synchronously;
    * ``harness, step state released``: the loop dropping its references to the step's output,
      features and loss after each step (what the allocator keeps alive between steps)."""
    from cl_fir.losses import doublet_infonce

    b = _TrainBench(backbone, image_size, batch_size, device, precision, seed, compile)
    B = batch_size

    def bare_with_harness_loss():
        with b.setup.autocast():
            z, _ = b.bare_model(b.x, b.attrs, return_features=True)
        loss = doublet_infonce(z[:B], z[B:], b.y[:B] if b.label_aware else None, b.cfg.loss.temperature)
        b.bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        b.bare_opt.step()

    def harness_read_at_once():
        deferred, b.loop.loss_readback.deferred = b.loop.loss_readback.deferred, False
        try:
            b.harness_step()
        finally:
            b.loop.loss_readback.deferred = deferred

    def harness_released():
        b.harness_step()
        b.loop.context.batch = b.loop.context.loss = None
        b.loop.context.loss_terms = {}

    variants = {
        "bare": b.bare_step,
        "bare, harness's features and loss": bare_with_harness_loss,
        "bare step on the harness's model": lambda: _bare_step(b.harness_model, b.loop.optimizer, b.x, b.attrs,
                                                               b.setup, b.cfg.loss.temperature),
        "harness": b.harness_step,
        "harness, loss read at once": harness_read_at_once,
        "harness, step state released": harness_released,
    }
    best = {name: float("inf") for name in variants}
    for r in range(repeats):
        for name in (list(variants) if r % 2 == 0 else list(reversed(variants))):
            best[name] = min(best[name], b.seconds(variants[name], steps))
    images = steps * b.images
    rows = [{"variant": name, "images_per_s": images / t, "overhead_vs_bare": t / best["bare"] - 1.0}
            for name, t in best.items()]
    return {"name": "train_step_ablation", **b.describe(steps, compile), "repeats": repeats, "rows": rows}


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
        if self.decoder == "device":    # the worker reads the file; the batch is decoded on the device
            from cl_fir.data.device_decoding import EncodedReader

            return self.transform(EncodedReader()(self.paths[i])), 0
        if self.decoder == "torchvision":
            import warnings

            with warnings.catch_warnings():   # deprecated in torchvision 0.29 in favour of torchcodec
                warnings.simplefilter("ignore", DeprecationWarning)
                from torchvision.io import ImageReadMode, decode_image, read_file

                img = decode_image(read_file(str(self.paths[i])), mode=ImageReadMode.RGB)
        else:   # the harness's own loading: PIL, at a reduced DCT scale for "pil_draft"
            from cl_fir.data.image_dataset import load_rgb

            draft = self.decoder.startswith("pil_draft")
            img = load_rgb(self.paths[i], self.transform.decode_min_side if draft else None)
        return self.transform(img), 0


def default_worker_counts() -> tuple[int, ...]:
    """0, 1, 2, then doubling up to the cores this process may use (2 on the CI machine)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    counts, w = [0, 1, 2], 4
    while w <= cores:
        counts.append(w)
        w *= 2
    if cores > 2 and cores not in counts:
        counts.append(cores)
    return tuple(counts)


DECODERS = ("pil", "pil_draft", "pil_draft_uint8", "torchvision", "device")


def bench_loader(images: int = 512, source_sizes=(300, 512), crop: int = 224, workers=None,
                 batch_size: int = 64, device: str = "auto") -> dict:
    """Training-transform images/s from JPEGs on disk, per source size, decoder and worker count.

    Decoders: ``pil`` (full-size decode), ``pil_draft`` (the harness's default: JPEG decoded
    at the smallest DCT scale that keeps the shorter side >= the resize target; no change
    for a 300 px source and resize 256, half size for 512 px), torchvision's decoder, and
    ``device`` (``transforms.decode = "device"``: workers read the bytes, each batch is
    decoded and transformed on ``device`` in the main process). ``pil_draft_uint8`` is
    ``pil_draft`` with ``transforms.normalize = "device"``: workers hand over uint8 crops,
    normalised on ``device``. Every row is timed until the batch is ready on ``device``
    (through pinned memory on CUDA, as in training), so the copy counts too."""
    import tempfile
    from pathlib import Path

    from cl_fir.data.transforms import TransformConfig, build_transforms
    from cl_fir.runtime.device import resolve_device

    cfg = TransformConfig(resize=int(crop * 256 / 224), crop=crop)
    transform, _ = build_transforms(cfg)
    device_transform, _ = build_transforms(TransformConfig(**{**cfg.__dict__, "decode": "device"}))
    uint8_transform, _ = build_transforms(TransformConfig(**{**cfg.__dict__, "normalize": "device"}))
    setup = resolve_device(device)
    transforms = {d: {"device": device_transform, "pil_draft_uint8": uint8_transform}.get(d, transform)
                  for d in DECODERS}
    workers = default_worker_counts() if workers is None else tuple(workers)
    rows = []
    for source_size in source_sizes:
        with tempfile.TemporaryDirectory(prefix="cl-fir-bench-") as tmp:
            paths = _write_jpegs(Path(tmp), images, source_size)
            for p in paths:                      # page cache warm for every configuration alike
                p.read_bytes()
            rows += _loader_rows(paths, transforms, source_size, workers, batch_size, setup)
    return {"name": "data_loader", "images": images, "source_sizes": list(source_sizes), "crop": crop,
            "device": setup.name, "rows": rows}


def _loader_rows(paths, transforms: dict, source_size: int, workers, batch_size: int, setup) -> list[dict]:
    from cl_fir.data.device_decoding import collate_images

    rows = []
    for decoder in DECODERS:
        for w in workers:
            loader = torch.utils.data.DataLoader(_JpegDataset(paths, transforms[decoder], decoder),
                                                 batch_size=batch_size, num_workers=w, persistent_workers=False,
                                                 pin_memory=setup.device.type == "cuda", collate_fn=collate_images)
            start = time.perf_counter()
            count = sum(setup.to_device(b[0]).shape[0] for b in loader)
            if setup.device.type == "cuda":
                torch.cuda.synchronize(setup.device)
            elapsed = time.perf_counter() - start
            rows.append({"source_size": source_size, "decoder": decoder, "workers": w,
                         "images_per_s": count / elapsed, "images_per_s_per_worker": count / elapsed / max(w, 1)})
    return rows
