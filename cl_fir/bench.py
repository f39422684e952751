"""Benchmarks, reported as ratios against a reference run side by side in one process.

Implemented now: exact MAP@all of the harness vs a straightforward per-query NumPy
implementation in the style of ASEN's scorer, on FashionAI-test-sized random
embeddings (3,600 queries x 14,400 candidates split over 8 attributes, 128-d). Train
throughput and data-loader benchmarks come with the performance work.
"""

from __future__ import annotations

import time

import numpy as np

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
        tasks.append((q.astype(np.float32), ql, c.astype(np.float32), cl))
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
