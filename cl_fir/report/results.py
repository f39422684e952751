"""Per-increment, per-task metrics of one run; the result matrix is the primary artefact.

Output files number increments from 1 ("after increment 1" is the first row).
"""

from __future__ import annotations

import numpy as np

from cl_fir.evaluation import matrix_metrics


class RunResults:
    def __init__(self, task_names: list[str], task_ids: list[int], task_increment, num_queries, metrics: list[str]):
        self.task_names = list(task_names)
        self.task_ids = list(task_ids)
        self.task_increment = np.asarray(task_increment, dtype=np.int64)
        self.num_queries = np.asarray(num_queries, dtype=np.int64)
        self.metrics = list(metrics)
        self.rows: dict[int, dict[int, dict[str, float]]] = {}

    def record(self, increment: int, results: dict[int, dict[str, float]]) -> None:
        expected = {a for a, t in zip(self.task_ids, self.task_increment) if t <= increment}
        if set(results) != expected:
            raise ValueError(f"increment {increment}: results for tasks {sorted(results)}, expected {sorted(expected)}")
        self.rows[increment] = {a: dict(m) for a, m in results.items()}

    @property
    def increments_done(self) -> int:
        n = 0
        while n in self.rows:
            n += 1
        return n

    @property
    def primary(self) -> str:
        """The primary metric (``matrix.csv``): MAP@all for ranking tasks, triplet accuracy for triplet tasks."""
        return self.metrics[0]

    def matrix(self, metric: str | None = None) -> np.ndarray:
        """``(increments done, tasks)``; NaN where a task is not seen yet."""
        metric = metric or self.primary
        A = np.full((self.increments_done, len(self.task_ids)), np.nan)
        for i in range(A.shape[0]):
            for j, a in enumerate(self.task_ids):
                if a in self.rows[i]:
                    A[i, j] = self.rows[i][a][metric]
        return A

    def seen_columns(self) -> np.ndarray:
        return self.task_increment < self.increments_done

    def derived(self, metric: str | None = None) -> dict[str, float]:
        """Matrix-derived metrics over the increments done so far."""
        if self.increments_done == 0:
            return {}
        cols = self.seen_columns()
        return matrix_metrics.summarise(self.matrix(metric)[:, cols], self.task_increment[cols],
                                        weights=self.num_queries[cols])

    def long_rows(self) -> list[tuple[int, str, str, float]]:
        out = []
        for i in range(self.increments_done):
            for a, name in zip(self.task_ids, self.task_names):
                if a in self.rows[i]:
                    out.extend((i + 1, name, m, self.rows[i][a][m]) for m in self.metrics)
        return out

    def state_dict(self) -> dict:
        return {"rows": {i: {a: dict(m) for a, m in r.items()} for i, r in self.rows.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.rows = {int(i): {int(a): dict(m) for a, m in r.items()} for i, r in state["rows"].items()}


def matrix_csv(matrix: np.ndarray, task_names: list[str]) -> str:
    lines = ["increment," + ",".join(task_names)]
    for i, row in enumerate(matrix):
        lines.append(f"{i + 1}," + ",".join("" if np.isnan(v) else f"{v:.4f}" for v in row))
    return "\n".join(lines) + "\n"


def metrics_csv(rows: list[tuple[int, str, str, float]]) -> str:
    return "increment,task,metric,value\n" + "".join(f"{i},{t},{m},{v:.6f}\n" for i, t, m, v in rows)
