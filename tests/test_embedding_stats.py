"""MAP@R, NMI, embedding space density and spectral decay against plain-Python loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cl_fir.evaluation.embedding_stats import (embedding_space_density, kmeans_nmi, normalized_mutual_information,
                                               spectral_decay)
from cl_fir.evaluation.retrieval import leave_one_out_ap_at_r, retrieval_scores


def _map_at_r_oracle(q, ql, c, cl):
    out = []
    for qi, lab in zip(q, ql):
        sims = [sum(a * b for a, b in zip(qi, ci)) for ci in c]
        order = sorted(range(len(c)), key=lambda j: (-sims[j], j))
        r = sum(1 for x in cl if x == lab)
        if r == 0:
            out.append(0.0)
            continue
        hits, total = 0, 0.0
        for rank, j in enumerate(order[:r], start=1):
            if cl[j] == lab:
                hits += 1
                total += hits / rank
        out.append(total / r)
    return np.asarray(out)


def _leave_one_out_oracle(x, labels):
    """pytorch-metric-learning's layout: each item against all the others; lone labels left out."""
    out = []
    for i, (xi, lab) in enumerate(zip(x, labels)):
        others = [j for j in range(len(x)) if j != i]
        sims = {j: sum(a * b for a, b in zip(xi, x[j])) for j in others}
        order = sorted(others, key=lambda j: (-sims[j], j))
        r = sum(1 for j in others if labels[j] == lab)
        if r == 0:
            out.append(math.nan)
            continue
        hits, total = 0, 0.0
        for rank, j in enumerate(order[:r], start=1):
            if labels[j] == lab:
                hits += 1
                total += hits / rank
        out.append(total / r)
    return np.asarray(out)


def test_leave_one_out_map_at_r_matches_a_loop():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(25, 4))
    labels = rng.integers(0, 4, 25)
    labels[7] = 9                                                   # a lone label: left out (NaN)
    x[3] = x[5]                                                     # an exact tie: broken by position
    got = leave_one_out_ap_at_r(x, labels, chunk_elements=60)
    want = _leave_one_out_oracle(x.tolist(), labels.tolist())
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert np.isnan(got[7]) and np.isfinite(np.delete(got, 7)).all()
    np.testing.assert_allclose(leave_one_out_ap_at_r(x.astype(np.float32), labels), want, atol=1e-5)


def test_map_at_r_matches_a_loop():
    rng = np.random.default_rng(1)
    q, c = rng.normal(size=(12, 4)), rng.normal(size=(30, 4))
    ql, cl = rng.integers(0, 4, 12), rng.integers(0, 5, 30)     # label 4 only in candidates; some queries may miss
    got = retrieval_scores(q, ql, c, cl, ap_ks=(), ap_at_r=True, chunk_elements=64)["ap@r"]
    np.testing.assert_allclose(got, _map_at_r_oracle(q.tolist(), ql.tolist(), c.tolist(), cl.tolist()), atol=1e-12)


def _nmi_oracle(a, b):
    n = len(a)
    ca, cb = sorted(set(a)), sorted(set(b))
    pa = {x: a.count(x) / n for x in ca}
    pb = {y: b.count(y) / n for y in cb}
    mi = 0.0
    for x in ca:
        for y in cb:
            pxy = sum(1 for i in range(n) if a[i] == x and b[i] == y) / n
            if pxy:
                mi += pxy * math.log(pxy / (pa[x] * pb[y]))
    ha = -sum(p * math.log(p) for p in pa.values())
    hb = -sum(p * math.log(p) for p in pb.values())
    return mi / ((ha + hb) / 2)


def test_nmi_matches_the_definition_and_sklearn():
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(2)
    for _ in range(20):
        a, b = rng.integers(0, 4, 40).tolist(), rng.integers(0, 3, 40).tolist()
        got = normalized_mutual_information(a, b)
        assert abs(got - _nmi_oracle(a, b)) < 1e-12
        assert abs(got - normalized_mutual_info_score(b, a)) < 1e-12


def test_kmeans_nmi_finds_separated_clusters():
    rng = np.random.default_rng(3)
    centres = np.eye(4) * 10
    labels = np.repeat(np.arange(4), 25)
    emb = centres[labels] + rng.normal(scale=0.1, size=(100, 4))
    assert kmeans_nmi(emb, labels) == pytest.approx(1.0)
    assert math.isnan(kmeans_nmi(emb, np.zeros(100)))


def _esd_oracle(x, labels):
    def cos_d(u, v):
        return 1 - sum(a * b for a, b in zip(u, v)) / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))

    classes = sorted(set(labels))
    intra = {}
    cents = []
    for k in classes:
        m = [x[i] for i in range(len(x)) if labels[i] == k]
        pairs = [cos_d(m[i], m[j]) for i in range(len(m)) for j in range(len(m)) if i != j]
        intra[k] = sum(pairs) / len(pairs) if pairs else None
        mean = [sum(col) / len(m) for col in zip(*m)]
        norm = math.sqrt(sum(v * v for v in mean))
        cents.append([v / norm for v in mean])
    finite = [v for v in intra.values() if v is not None]
    intra_mean = sum(v if v is not None else max(finite) for v in intra.values()) / len(classes)
    inter = [cos_d(cents[i], cents[j]) for i in range(len(cents)) for j in range(len(cents)) if i != j]
    return intra_mean / (sum(inter) / len(inter))


def test_embedding_space_density_matches_a_loop():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(25, 3))
    labels = rng.integers(0, 4, 25)
    labels[0] = 9                                    # a singleton class
    got = embedding_space_density(x, labels)
    assert abs(got - _esd_oracle(x.tolist(), labels.tolist())) < 1e-9


def test_spectral_decay():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 6))
    s = np.linalg.svd(x, compute_uv=False)
    for drop in (0, 1):
        kept = s[drop:]
        p = kept / kept.sum()
        expected = sum((1 / len(kept)) * math.log((1 / len(kept)) / pi) for pi in p)
        assert abs(spectral_decay(x, drop) - expected) < 1e-12
    assert spectral_decay(np.eye(6), 0) == pytest.approx(0.0, abs=1e-12)     # flat spectrum: no decay
    rank_one = np.outer(rng.normal(size=40), rng.normal(size=6)) + 1e-6 * rng.normal(size=(40, 6))
    assert spectral_decay(rank_one, 0) > 5
