"""Continual-learning metrics derived from the result matrix, as pure functions.

``A[i, j]`` is the metric on task j after increment i (NaN where task j is not seen
yet); ``task_increment[j]`` is the increment in which task j is learned. With several
tasks per increment (e.g. two attributes), "old tasks after increment k" are those
with ``task_increment[j] < k``.

* average incremental metric = mean over rows i of (mean over seen tasks of A[i, j]);
* forgetting of task j after increment k = max over i in [t_j, k) of A[i, j] - A[k, j]
  (the maximum over *earlier rows only*, as Chaudhry et al., FACIL and Continuum),
  averaged over old tasks;
* BWT after increment k = mean over old tasks of A[k, j] - A[t_j, j];
* final mean = mean of the last row over all tasks, unweighted or weighted (e.g. by
  query count, which is what the MCL-FIR code reports as MeanAP).
"""

from __future__ import annotations

import numpy as np


def _check(matrix, task_increment) -> tuple[np.ndarray, np.ndarray]:
    A = np.asarray(matrix, dtype=np.float64)
    t = np.asarray(task_increment, dtype=np.int64)
    if A.ndim != 2 or A.shape[1] != t.shape[0]:
        raise ValueError(f"matrix must be (increments, tasks) with one increment per task; got {A.shape}, {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= A.shape[0]):
        raise ValueError("task_increment must index rows of the matrix")
    seen = np.arange(A.shape[0])[:, None] >= t[None, :]
    if np.any(~np.isfinite(A[seen])):
        raise ValueError("every seen cell (row >= the task's increment) must be a finite number")
    return A, t


def seen_mean_curve(matrix, task_increment) -> np.ndarray:
    """Mean over seen tasks after each increment (the forgetting curve)."""
    A, t = _check(matrix, task_increment)
    return np.asarray([A[i, t <= i].mean() for i in range(A.shape[0])])


def average_incremental(matrix, task_increment) -> float:
    return float(seen_mean_curve(matrix, task_increment).mean())


def forgetting_per_task(matrix, task_increment, k: int | None = None) -> np.ndarray:
    """Forgetting of every task after increment ``k`` (default: the last); NaN if not old."""
    A, t = _check(matrix, task_increment)
    k = A.shape[0] - 1 if k is None else k
    out = np.full(A.shape[1], np.nan)
    for j in np.flatnonzero(t < k):
        out[j] = A[t[j]:k, j].max() - A[k, j]
    return out


def forgetting(matrix, task_increment, k: int | None = None) -> float:
    """Average forgetting over old tasks after increment ``k``; NaN when there is none."""
    f = forgetting_per_task(matrix, task_increment, k)
    return float(np.nanmean(f)) if np.any(np.isfinite(f)) else float("nan")


def backward_transfer(matrix, task_increment, k: int | None = None) -> float:
    A, t = _check(matrix, task_increment)
    k = A.shape[0] - 1 if k is None else k
    old = np.flatnonzero(t < k)
    if old.size == 0:
        return float("nan")
    return float(np.mean([A[k, j] - A[t[j], j] for j in old]))


def final_mean(matrix, task_increment, weights=None) -> float:
    """Mean of the last row over all tasks; ``weights`` (e.g. query counts) make it weighted."""
    A, _ = _check(matrix, task_increment)
    last = A[-1]
    if weights is None:
        return float(last.mean())
    w = np.asarray(weights, dtype=np.float64)
    return float((last * w).sum() / w.sum())


def summarise(matrix, task_increment, weights=None) -> dict[str, float]:
    """All derived metrics of one matrix."""
    return {
        "avg_incremental": average_incremental(matrix, task_increment),
        "final": final_mean(matrix, task_increment),
        "final_weighted": final_mean(matrix, task_increment, weights) if weights is not None else float("nan"),
        "forgetting": forgetting(matrix, task_increment),
        "bwt": backward_transfer(matrix, task_increment),
    }
