"""Metric-learning and generalisation statistics of an embedding, as pure functions.

Definitions follow Roth et al., ICML 2020 ("Revisiting Training Strategies", as CRT reports
them) and pytorch-metric-learning's MAP@R:

* **NMI**: k-means with as many clusters as labels (fixed seed), then the normalised
  mutual information between clusters and labels (arithmetic-mean normalisation).
* **Embedding space density** (ESD, pi_ratio): mean intra-class cosine distance over the
  mean cosine distance between the L2-normalised class centroids. A class with a single
  sample has no intra-class pair; as in Roth's code it gets the largest finite intra value.
* **Spectral decay** rho@k: singular values s_1 >= ... of the embedding matrix (no
  centring), the k-1 largest dropped, normalised to a distribution p; rho = KL(U || p)
  with U uniform. rho@1 uses all values (Roth's README), rho@2 drops the largest (Roth's
  paper figure); CRT does not say which, so both are reported.
* **MAP@R** is computed in the same ranking pass as MAP@all
  (:func:`cl_fir.evaluation.retrieval.retrieval_scores`).
"""

from __future__ import annotations

import numpy as np
import torch


def _np(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def normalized_mutual_information(assignments, labels) -> float:
    """NMI between two labelings, from their contingency table (arithmetic normalisation)."""
    a = np.unique(np.asarray(assignments), return_inverse=True)[1]
    b = np.unique(np.asarray(labels), return_inverse=True)[1]
    n = a.size
    if n == 0:
        return float("nan")
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1.0)
    pa, pb, pab = table.sum(1) / n, table.sum(0) / n, table / n
    nz = pab > 0
    mi = float((pab[nz] * np.log(pab[nz] / np.outer(pa, pb)[nz])).sum())
    ha = float(-(pa[pa > 0] * np.log(pa[pa > 0])).sum())
    hb = float(-(pb[pb > 0] * np.log(pb[pb > 0])).sum())
    if ha == 0.0 and hb == 0.0:
        return 1.0
    return mi / ((ha + hb) / 2)


def kmeans_nmi(embeddings, labels, seed: int = 0) -> float:
    """NMI of k-means clusters (k = number of distinct labels) against the labels."""
    from sklearn.cluster import KMeans

    x = _np(embeddings)
    labels = np.asarray(labels)
    k = len(np.unique(labels))
    if k < 2 or x.shape[0] <= k:
        return float("nan")
    clusters = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x)
    return normalized_mutual_information(clusters, labels)


def _cosine_distances(x: np.ndarray) -> np.ndarray:
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    return 1.0 - x @ x.T


def embedding_space_density(embeddings, labels) -> float:
    """pi_intra / pi_inter with cosine distances (Roth's ``dists@intra_over_inter``)."""
    x = _np(embeddings)
    labels = np.asarray(labels)
    intra, centroids = [], []
    for value in np.unique(labels):
        members = x[labels == value]
        centroid = members.mean(axis=0)
        centroids.append(centroid / max(np.linalg.norm(centroid), 1e-12))
        d = _cosine_distances(members)
        intra.append(d[~np.eye(len(members), dtype=bool)].mean() if len(members) > 1 else np.nan)
    finite = [v for v in intra if np.isfinite(v)]
    if not finite or len(centroids) < 2:
        return float("nan")
    intra = [v if np.isfinite(v) else max(finite) for v in intra]
    c = np.stack(centroids)
    inter = _cosine_distances(c)[~np.eye(len(c), dtype=bool)].mean()
    return float(np.mean(intra) / max(inter, 1e-8))


def spectral_decay(embeddings, drop_largest: int = 0) -> float:
    """KL(uniform || normalised singular values), after dropping the ``drop_largest`` largest."""
    s = np.linalg.svd(_np(embeddings), compute_uv=False)[drop_largest:]
    s = s[s > 0]
    if s.size == 0:
        return float("nan")
    p = s / s.sum()
    u = np.full(s.size, 1.0 / s.size)
    return float((u * np.log(u / p)).sum())
