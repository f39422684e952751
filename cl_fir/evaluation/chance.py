"""Chance level: the expected value of a metric when the ranking is uniformly random.

A MAP of 25 means little on its own: with 4 values per attribute, random embeddings already
score about 25. Every task therefore reports its chance level beside its metric, computed
exactly from the layout of its queries and candidates (random embeddings give a uniformly
random ranking, ties having probability zero):

* **AP over the whole list** (MAP@all, ASEN protocol) of a query with ``R`` relevant among
  ``N`` candidates. A relevant candidate sits at rank ``k`` with probability ``1/N``, and then
  the other ``R - 1`` relevant ones fill each of the ``k - 1`` ranks above it with probability
  ``(R - 1)/(N - 1)``, so
  ``E[AP] = (1/R) sum_k R/N * (1 + (k - 1)(R - 1)/(N - 1)) / k
  = (1/N) * (H_N + (R - 1)/(N - 1) * (N - H_N))``, with ``H_N`` the N-th harmonic number;
  0 when ``R = 0`` (such queries count as 0, as in the ASEN scorer).
* **AP@k** with the ASEN divisor (all ``R`` relevant): the same sum stopped at rank ``k``.
* **Recall@K**: at least one of ``R`` relevant in the top ``K`` of ``N``:
  ``1 - C(N - R, K) / C(N, K)``.
* **Triplet accuracy** (ties count as wrong): 1/2.

Values are fractions here; the evaluator's tables are in percent.
"""

from __future__ import annotations

from collections import Counter
from math import comb
from typing import Sequence

import numpy as np


def expected_ap(num_relevant: int, num_candidates: int, k: int | None = None) -> float:
    """E[AP] (ASEN divisor: all ``num_relevant``) of a uniformly random ranking, over the
    whole list or (``k``) its top ``k``."""
    R, N = int(num_relevant), int(num_candidates)
    if R <= 0 or N <= 0:
        return 0.0
    depth = N if k is None else min(int(k), N)
    ranks = np.arange(1, depth + 1, dtype=np.float64)
    others = (R - 1) / (N - 1) if N > 1 else 0.0
    return float(np.sum(1.0 / ranks + (ranks - 1) / ranks * others) / N)


def expected_recall(num_relevant: int, num_candidates: int, k: int) -> float:
    """Probability that a uniformly random ranking of ``num_candidates`` puts one of the
    ``num_relevant`` relevant candidates in its top ``k``."""
    R, N, K = int(num_relevant), int(num_candidates), min(int(k), int(num_candidates))
    if R <= 0 or N <= 0:
        return 0.0
    return 1.0 - comb(N - R, K) / comb(N, K)


def ranking_chance(query_labels: Sequence[int], candidate_labels: Sequence[int], k: int | None = None) -> float:
    """Chance MAP@all (``k=None``) or MAP@k of a query/candidate layout (relevant = same label)."""
    counts = Counter(np.asarray(candidate_labels).tolist())
    n = len(candidate_labels)
    per_value = {v: expected_ap(counts.get(v, 0), n, k) for v in set(np.asarray(query_labels).tolist())}
    return float(np.mean([per_value[v] for v in np.asarray(query_labels).tolist()])) if len(query_labels) else 0.0


def ranking_recall_chance(query_labels: Sequence[int], candidate_labels: Sequence[int], k: int) -> float:
    counts = Counter(np.asarray(candidate_labels).tolist())
    n = len(candidate_labels)
    return float(np.mean([expected_recall(counts.get(v, 0), n, k) for v in np.asarray(query_labels).tolist()])) \
        if len(query_labels) else 0.0


def composed_recall_chance(targets: Sequence[Sequence[int]], excluded: Sequence[int | None], gallery_size: int,
                           k: int) -> float:
    """Chance Recall@K of composed queries: each query ranks the gallery without its excluded
    item; it is correct when one of its targets is in the top K."""
    if not len(targets):
        return 0.0
    values = []
    for t, ex in zip(targets, excluded):
        ranked = gallery_size - (1 if ex is not None else 0)
        hits = len({int(i) for i in t} - ({int(ex)} if ex is not None else set()))
        values.append(expected_recall(hits, ranked, k))
    return float(np.mean(values))


TRIPLET_CHANCE = 0.5
