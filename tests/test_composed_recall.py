"""Composed-retrieval Recall@K against a brute-force oracle."""

from __future__ import annotations

import numpy as np
import pytest

from cl_fir.evaluation.retrieval import composed_recall_at_k


def _oracle(q, g, targets, excluded, k):
    hits = []
    for i in range(len(q)):
        scores = [(float(q[i] @ g[j]), j) for j in range(len(g)) if j != excluded[i]]
        ranked = [j for _, j in sorted(scores, key=lambda s: (-s[0], s[1]))]
        hits.append(float(any(j in set(targets[i]) - {excluded[i]} for j in ranked[:k])))
    return np.array(hits)


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_oracle_with_exclusions_ties_and_several_targets(seed):
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, size=(13, 3)).astype(np.float32)      # small integers: many ties
    g = rng.integers(-2, 3, size=(20, 3)).astype(np.float32)
    targets = [list(rng.choice(20, size=rng.integers(0, 4), replace=False)) for _ in range(13)]
    excluded = [int(rng.integers(20)) if rng.random() < 0.7 else None for _ in range(13)]
    got = composed_recall_at_k(q, g, targets, excluded, ks=(1, 5, 10, 20), chunk_elements=45)
    for k in (1, 5, 10, 20):
        np.testing.assert_array_equal(got[k], _oracle(q, g, targets, excluded, k))


def test_the_reference_never_counts_and_is_removed_from_the_ranking():
    g = np.eye(3, dtype=np.float32)
    q = np.array([[1.0, 0.5, 0.0]], dtype=np.float32)             # closest to item 0, then item 1
    assert composed_recall_at_k(q, g, [[1]], [None], ks=(1,))[1][0] == 0
    assert composed_recall_at_k(q, g, [[1]], [0], ks=(1,))[1][0] == 1   # reference 0 removed: item 1 first
    assert composed_recall_at_k(q, g, [[0]], [0], ks=(3,))[3][0] == 0   # a target equal to the reference: no hit
    with pytest.raises(ValueError, match="one target list"):
        composed_recall_at_k(q, g, [], [], ks=(1,))
