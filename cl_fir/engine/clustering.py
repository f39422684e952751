"""Clustering pieces of Divide and Conquer (Sanakoyeu et al., TPAMI 2021), as pure functions.

* :func:`kmeans` -- faiss k-means (niter 100, nredo 1, no subsampling), seeded.
* :func:`valid_clusters` -- which clusters can train a metric loss: at least two values
  that each have at least two rows (the D&C code's acceptance test, "two GT classes with
  two images each").
* :func:`cluster_with_retries` -- up to ``trials`` seeds until every cluster is valid; the
  trial with the most valid clusters otherwise.
* :func:`relabel_by_overlap` -- match a new assignment to the previous one on the same
  rows by linear assignment (scipy), minimising the symmetric difference of the
  clusters (the code) or maximising their IoU (the paper's wording).
* :func:`relabel_by_centroids` -- the same matching when the rows changed (for example an
  old attribute seen again through replay in a later increment): by cosine of centroids.
* :func:`bisect_clusters` -- the progressive division: 2-means inside every cluster,
  children ``2c`` and ``2c + 1``; a cluster whose halves would not both be valid stays
  whole in ``2c`` and ``2c + 1`` is left empty.
"""

from __future__ import annotations

import numpy as np


def kmeans(x: np.ndarray, k: int, seed: int, niter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n,) and centroids (k, d) of faiss k-means; ``k`` is capped at the number of rows."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    k = max(1, min(k, n))
    if k == 1:
        return np.zeros(n, dtype=np.int64), x.mean(axis=0, keepdims=True)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=1, seed=int(seed) % (2 ** 31),
                      max_points_per_centroid=10 ** 7, min_points_per_centroid=1, verbose=False)
    km.train(x)
    _, labels = km.index.search(x, 1)
    return labels[:, 0].astype(np.int64), km.centroids.copy()


def valid_clusters(labels: np.ndarray, values: np.ndarray, k: int, min_values: int = 2) -> np.ndarray:
    """Boolean (k,): cluster c has at least ``min_values`` values with two or more rows."""
    ok = np.zeros(k, dtype=bool)
    for c in range(k):
        _, counts = np.unique(values[labels == c], return_counts=True)
        ok[c] = int((counts >= 2).sum()) >= min_values
    return ok


def cluster_with_retries(x: np.ndarray, values: np.ndarray, k: int, seed: int, trials: int = 30) -> np.ndarray:
    best, best_valid = None, -1
    for trial in range(max(1, trials)):
        labels, _ = kmeans(x, k, seed + trial)
        n_valid = int(valid_clusters(labels, values, k).sum())
        if n_valid > best_valid:
            best, best_valid = labels, n_valid
        if n_valid == k:
            break
    return best


def relabel_by_overlap(new: np.ndarray, previous: np.ndarray, k: int, cost: str = "symdiff") -> np.ndarray:
    """``new`` relabelled so that its clusters keep the ids of the previous clusters they overlap most."""
    a = np.zeros((k, k))
    np.add.at(a, (new, previous), 1)                       # a[i, j] = |new_i & prev_j|
    size_new, size_prev = a.sum(axis=1), a.sum(axis=0)
    if cost == "symdiff":
        c = size_new[:, None] + size_prev[None, :] - 2 * a
    elif cost == "iou":
        union = size_new[:, None] + size_prev[None, :] - a
        c = -np.divide(a, union, out=np.zeros_like(a), where=union > 0)
    else:
        raise ValueError(f"relabel cost must be 'symdiff' or 'iou', got {cost!r}")
    from scipy.optimize import linear_sum_assignment   # here: importing scipy.optimize costs 0.4 s per process

    rows, cols = linear_sum_assignment(c)
    mapping = np.empty(k, dtype=np.int64)
    mapping[rows] = cols
    return mapping[new]


def centroids_of(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """L2-normalised mean of each cluster (zeros for an empty cluster)."""
    out = np.zeros((k, x.shape[1]), dtype=np.float32)
    for c in range(k):
        members = x[labels == c]
        if len(members):
            m = members.mean(axis=0)
            out[c] = m / max(float(np.linalg.norm(m)), 1e-12)
    return out


def relabel_by_centroids(new: np.ndarray, x: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """``new`` relabelled to the stored centroids (k, d) by maximal total cosine similarity."""
    k = stored.shape[0]
    sim = centroids_of(x, new, k) @ stored.T
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-sim)
    mapping = np.empty(k, dtype=np.int64)
    mapping[rows] = cols
    return mapping[new]


def bisect_clusters(x: np.ndarray, labels: np.ndarray, values: np.ndarray, k: int, seed: int,
                    trials: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Children labels in ``0 .. 2k-1`` and a boolean (k,) of the clusters actually split."""
    out = 2 * labels
    split = np.zeros(k, dtype=bool)
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 4:
            continue
        halves = cluster_with_retries(x[idx], values[idx], 2, seed + 1000 * c, trials)
        if valid_clusters(halves, values[idx], 2).all():
            out[idx] = 2 * c + halves
            split[c] = True
    return out, split
