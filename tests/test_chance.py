"""Chance levels: exact expectations over every ranking, checked by enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from cl_fir.evaluation.chance import (composed_recall_chance, expected_ap, expected_recall, ranking_chance)


def _ap(relevant_ranks: list[int], num_relevant: int, k: int | None = None) -> float:
    """ASEN AP of one ranking, from the 1-based ranks of its relevant candidates."""
    hits, total = 0, 0.0
    for rank in sorted(relevant_ranks):
        hits += 1
        if k is None or rank <= k:
            total += hits / rank
    return total / num_relevant if num_relevant else 0.0


def _average_over_rankings(R: int, N: int, score) -> float:
    """Mean of ``score(ranks of the relevant)`` over every placement of R relevant among N ranks
    (all rankings are equally likely, and only the relevant ranks matter)."""
    placements = list(itertools.combinations(range(1, N + 1), R))
    return sum(score(list(p)) for p in placements) / len(placements)


@pytest.mark.parametrize("R,N", [(1, 1), (1, 5), (2, 5), (3, 7), (7, 7), (0, 4), (4, 9)])
def test_expected_ap_equals_the_mean_over_every_ranking(R, N):
    assert expected_ap(R, N) == pytest.approx(_average_over_rankings(R, N, lambda r: _ap(r, R)), abs=1e-12)
    for k in (1, 3, N):
        assert expected_ap(R, N, k) == pytest.approx(_average_over_rankings(R, N, lambda r: _ap(r, R, k)), abs=1e-12)


@pytest.mark.parametrize("R,N,K", [(1, 5, 1), (2, 6, 3), (3, 8, 2), (0, 4, 2), (5, 5, 1), (2, 4, 10)])
def test_expected_recall_equals_the_mean_over_every_ranking(R, N, K):
    assert expected_recall(R, N, K) == pytest.approx(
        _average_over_rankings(R, N, lambda r: float(min(r, default=math.inf) <= K)), abs=1e-12)


def test_ranking_chance_matches_random_embeddings():
    """Random embeddings rank uniformly: their mean MAP converges to the exact chance level."""
    from cl_fir.evaluation.retrieval import average_precision

    rng = np.random.default_rng(0)
    q_labels, c_labels = rng.integers(0, 4, 30), rng.integers(0, 4, 50)
    maps = [average_precision(rng.normal(size=(30, 8)), q_labels, rng.normal(size=(50, 8)), c_labels).mean()
            for _ in range(400)]
    assert np.mean(maps) == pytest.approx(ranking_chance(q_labels, c_labels), abs=0.01)


def test_composed_chance_leaves_out_the_excluded_reference():
    # gallery of 5; query 0: target 2, reference 0 excluded -> 1 relevant among 4
    assert composed_recall_chance([[2]], [0], 5, 1) == pytest.approx(1 / 4)
    assert composed_recall_chance([[2]], [None], 5, 1) == pytest.approx(1 / 5)
    assert composed_recall_chance([[1, 2]], [None], 5, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))
