"""Triplet accuracy (CSN protocol) against a plain-Python loop."""

from __future__ import annotations

import math

import numpy as np
import torch

from cl_fir.evaluation.evaluator import triplet_accuracy


def _oracle(emb: np.ndarray, triplets) -> float:
    correct = 0
    for a, f, c in triplets:
        d_close = math.sqrt(sum((x - y) ** 2 for x, y in zip(emb[a], emb[c])))
        d_far = math.sqrt(sum((x - y) ** 2 for x, y in zip(emb[a], emb[f])))
        correct += d_close < d_far
    return 100.0 * correct / len(triplets)


def test_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(30, 5))
    triplets = [tuple(rng.choice(30, size=3, replace=False)) for _ in range(200)]
    a, f, c = (np.asarray(col) for col in zip(*triplets))
    got = triplet_accuracy(torch.as_tensor(emb), a, f, c)
    assert abs(got - _oracle(emb, triplets)) < 1e-9


def test_ties_count_as_wrong():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    # anchor 0: close 1 and far 2 are at the same distance -> wrong; close 1 vs far 3 -> right
    assert triplet_accuracy(emb, [0, 0], [2, 3], [1, 1]) == 50.0
