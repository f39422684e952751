"""Evaluating after an increment: every task seen so far, with prioritised retrieval's stored
class centroids when ``eval.mode = "prioritized"``.

Under torchrun every rank embeds a share of each evaluation set and rank 0 scores.
"""

from __future__ import annotations

import time

import torch

from cl_fir.engine.class_means import class_means
from cl_fir.errors import ConfigError
from cl_fir.evaluation.evaluator import evaluate_tasks


class IncrementEvaluation:
    def __init__(self, cfg, scenario, setup, dist, cost, num_workers: int):
        if cfg.eval.mode == "prioritized" and not scenario.has_values:
            raise ConfigError(f"eval.mode (--eval-mode) prioritized needs attribute values (ranking protocol); "
                              f"scenario {scenario.name} uses the {scenario.protocol} protocol")
        self.cfg, self.scenario, self.setup, self.dist, self.cost = cfg, scenario, setup, dist, cost
        self.num_workers = num_workers
        #: attribute -> (class centroids (values x D), valid values): prioritised retrieval's stored centroids
        self.task_centroids: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def stores_centroids(self) -> bool:
        return self.cfg.eval.mode == "prioritized"

    def class_means(self, model, increments: list[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """:func:`~cl_fir.engine.class_means.class_means` of ``model`` on the run's devices."""
        return class_means(model, self.scenario, increments, self.setup, self.cfg.eval.batch_size, self.num_workers,
                           self.dist, self.cost)

    def store_centroids(self, own: dict | None, model, increments: list[int]) -> None:
        """Class centroids of the tasks trained in this increment, kept frozen afterwards (for
        MODC's prioritised retrieval, docs/metrics.md): the strategy's ``own`` when it keeps some
        (MODC's online centroids), else the class means of their labelled training images ("stored")."""
        self.task_centroids.update(own if own is not None else self.class_means(model, increments))

    def evaluate(self, model, increment_index: int) -> dict:
        """Metrics of every task seen after increment ``increment_index`` (rank 0; the other ranks
        get none); its time and images are booked as the increment's evaluation cost."""
        start = time.perf_counter()
        tasks = [self.scenario.eval_tasks[a] for a in self.scenario.seen_tasks(increment_index)]
        results, images = evaluate_tasks(model, tasks, self.setup, self.cfg.eval, self.num_workers,
                                         centroids=self.task_centroids, dist=self.dist)
        self.cost.current.eval_seconds += time.perf_counter() - start
        self.cost.current.eval_images += images
        return results
