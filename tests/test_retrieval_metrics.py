"""Retrieval metrics against an independent brute-force oracle (pure Python loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cl_fir.evaluation import average_precision, recall_at_k, retrieval_scores


def oracle_ap(q, ql, c, cl, k=None):
    """AP by the definition: rank by decreasing score, ties by candidate index;
    sum precision@i at relevant ranks i <= k; divide by all relevant; 0 if none."""
    out = []
    for qi, lab in zip(q, ql):
        scores = [sum(float(a) * float(b) for a, b in zip(qi, cj)) for cj in c]
        order = sorted(range(len(c)), key=lambda j: (-scores[j], j))
        n_rel = sum(1 for x in cl if x == lab)
        hits, total = 0, 0.0
        for rank, j in enumerate(order, start=1):
            if cl[j] == lab:
                hits += 1
                if k is None or rank <= k:
                    total += hits / rank
        out.append(total / n_rel if n_rel else 0.0)
    return np.asarray(out)


def oracle_recall(q, ql, c, cl, k):
    out = []
    for qi, lab in zip(q, ql):
        scores = [sum(float(a) * float(b) for a, b in zip(qi, cj)) for cj in c]
        order = sorted(range(len(c)), key=lambda j: (-scores[j], j))
        out.append(1.0 if any(cl[j] == lab for j in order[:k]) else 0.0)
    return np.asarray(out)


def integer_embeddings(rng, n, dim, values=3):
    """Small integer entries: exact dot products with many exact ties."""
    return rng.integers(-values, values + 1, size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_ap_matches_oracle_with_ties(seed):
    rng = np.random.default_rng(seed)
    q, c = integer_embeddings(rng, 12, 3, values=1), integer_embeddings(rng, 40, 3, values=1)
    ql, cl = rng.integers(0, 4, 12), rng.integers(0, 4, 40)
    expected = oracle_ap(q, ql, c, cl)
    np.testing.assert_allclose(average_precision(q, ql, c, cl), expected, rtol=0, atol=1e-12)


def test_all_tied_scores_rank_by_candidate_order():
    q = np.zeros((1, 4), np.float32)
    c = np.ones((5, 4), np.float32)
    cl = np.array([0, 1, 0, 1, 1])
    # ranking 0,1,2,3,4 -> relevant (label 1) at ranks 2, 4, 5: (1/2 + 2/4 + 3/5) / 3
    assert average_precision(q, [1], c, cl)[0] == pytest.approx((0.5 + 0.5 + 0.6) / 3, abs=1e-12)


def test_query_without_relevant_candidate_scores_zero_and_counts():
    rng = np.random.default_rng(1)
    q, c = rng.normal(size=(3, 8)), rng.normal(size=(20, 8))
    ql, cl = np.array([0, 1, 9]), rng.integers(0, 2, 20)
    ap = average_precision(q, ql, c, cl)
    assert ap.shape == (3,) and ap[2] == 0.0
    np.testing.assert_allclose(ap, oracle_ap(q, ql, c, cl), atol=1e-12)


def test_perfect_and_worst_rankings():
    c = np.eye(4, dtype=np.float32)
    cl = np.array([0, 1, 2, 3])
    assert np.all(average_precision(c, cl, c, cl) == 1.0)
    # one relevant item ranked last among 4: AP = 1/4
    q = np.array([[0.0, -1.0, -1.0, -2.0]], np.float32)
    assert average_precision(q, [3], c, cl)[0] == pytest.approx(0.25)


@pytest.mark.parametrize("k", [1, 5, 100])
def test_ap_at_k_keeps_the_full_relevant_count_as_divisor(k):
    rng = np.random.default_rng(3)
    q, c = integer_embeddings(rng, 10, 4), integer_embeddings(rng, 150, 4)
    ql, cl = rng.integers(0, 3, 10), rng.integers(0, 3, 150)
    expected = oracle_ap(q, ql, c, cl, k=k)
    np.testing.assert_allclose(average_precision(q, ql, c, cl, k=k), expected, atol=1e-12)
    assert np.all(average_precision(q, ql, c, cl, k=k) <= average_precision(q, ql, c, cl) + 1e-12)


def test_k_larger_than_gallery_equals_map_all():
    rng = np.random.default_rng(4)
    q, c = rng.normal(size=(6, 5)), rng.normal(size=(30, 5))
    ql, cl = rng.integers(0, 3, 6), rng.integers(0, 3, 30)
    np.testing.assert_allclose(average_precision(q, ql, c, cl, k=100), average_precision(q, ql, c, cl))


@pytest.mark.parametrize("k", [1, 3, 10])
def test_recall_at_k_matches_oracle(k):
    rng = np.random.default_rng(5)
    q, c = integer_embeddings(rng, 15, 3, values=1), integer_embeddings(rng, 25, 3, values=1)
    ql, cl = rng.integers(0, 5, 15), rng.integers(0, 5, 25)
    np.testing.assert_array_equal(recall_at_k(q, ql, c, cl, [k])[k], oracle_recall(q, ql, c, cl, k))


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(6)
    q, c = integer_embeddings(rng, 37, 4), integer_embeddings(rng, 53, 4)
    ql, cl = rng.integers(0, 4, 37), rng.integers(0, 4, 53)
    whole = retrieval_scores(q, ql, c, cl, ap_ks=(None, 10), recall_ks=(1, 5))
    for chunk in (1, 53, 60, 53 * 7):   # 1 row per chunk ... several rows per chunk
        part = retrieval_scores(q, ql, c, cl, ap_ks=(None, 10), recall_ks=(1, 5), chunk_elements=chunk)
        for kind in ("ap", "recall"):
            for key in whole[kind]:
                np.testing.assert_array_equal(part[kind][key], whole[kind][key])


def test_accepts_torch_tensors_and_returns_numpy():
    rng = np.random.default_rng(7)
    q, c = rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=(9, 6)).astype(np.float32)
    ql, cl = rng.integers(0, 2, 4), rng.integers(0, 2, 9)
    a = average_precision(torch.from_numpy(q), torch.from_numpy(ql), torch.from_numpy(c), torch.from_numpy(cl))
    assert isinstance(a, np.ndarray)
    np.testing.assert_allclose(a, average_precision(q, ql, c, cl))


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        average_precision(np.zeros((2, 3)), [0, 1], np.zeros((4, 5)), [0, 1, 0, 1])
    with pytest.raises(ValueError):
        average_precision(np.zeros((2, 3)), [0], np.zeros((4, 3)), [0, 1, 0, 1])


def _modc_oracle(q, ql, c, cl, k):
    """MODC's conventions by hand: AP@k over hits found in the top k; recall = found / R."""
    aps, recs = [], []
    for i in range(len(q)):
        scores = sorted(((-float(q[i] @ c[j]), j) for j in range(len(c))))
        rel = [int(cl[j] == ql[i]) for _, j in scores]
        R = sum(rel)
        found, total = 0, 0.0
        for rank, r in enumerate(rel[:k], start=1):
            if r:
                found += 1
                total += found / rank
        aps.append(total / found if found else 0.0)
        recs.append(found / R if R else 0.0)
    return np.array(aps), np.array(recs)


@pytest.mark.parametrize("seed", range(4))
def test_modc_map_and_recall_at_k_match_an_oracle(seed):
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, size=(9, 3)).astype(np.float32)
    c = rng.integers(-2, 3, size=(25, 3)).astype(np.float32)
    ql, cl = rng.integers(4, size=9), rng.integers(5, size=25)      # value 4: never a query's value
    for k in (1, 5, 30):
        got = retrieval_scores(q, ql, c, cl, ap_ks=(), modc_ks=(k,), chunk_elements=50)
        ap, rec = _modc_oracle(q, ql, c, cl, k)
        np.testing.assert_allclose(got["modc_ap"][k], ap, atol=1e-12)
        np.testing.assert_allclose(got["modc_recall"][k], rec, atol=1e-12)
