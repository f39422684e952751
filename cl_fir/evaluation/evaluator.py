"""Evaluate a model on the query/candidate sets of the tasks seen so far.

Attribute-specific protocol (ASEN): each task's queries are ranked against the
candidates of the same attribute, embedded under that attribute's condition; relevant
means same value. Metrics are in percent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import torch
from torch.utils.data import DataLoader

from cl_fir.config import EvalConfig
from cl_fir.engine.device import DeviceSetup
from cl_fir.evaluation.retrieval import retrieval_scores

if TYPE_CHECKING:
    from cl_fir.scenario import EvalTask


def metric_names(cfg: EvalConfig) -> list[str]:
    return ["map_all", f"map@{cfg.map_k}", *[f"recall@{k}" for k in cfg.recall_ks]]


@torch.inference_mode()
def embed_dataset(model, dataset, attribute: int, setup: DeviceSetup, batch_size: int, num_workers: int) -> torch.Tensor:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=setup.device.type == "cuda")
    chunks = []
    for images, _ in loader:
        images = setup.to_device(images)
        attrs = torch.full((images.shape[0],), attribute, dtype=torch.long, device=setup.device)
        with setup.autocast():
            chunks.append(model(images, attrs).float())
    return torch.cat(chunks)


def evaluate_tasks(model, tasks: Iterable["EvalTask"], setup: DeviceSetup, cfg: EvalConfig,
                   num_workers: int = 0) -> tuple[dict[int, dict[str, float]], int]:
    """Metrics per task (keyed by attribute id) and the number of images embedded."""
    was_training = model.training
    model.eval()
    results: dict[int, dict[str, float]] = {}
    images = 0
    try:
        for task in tasks:
            q = embed_dataset(model, task.queries, task.attribute, setup, cfg.batch_size, num_workers)
            c = embed_dataset(model, task.candidates, task.attribute, setup, cfg.batch_size, num_workers)
            images += q.shape[0] + c.shape[0]
            scores = retrieval_scores(q, task.queries.class_ids, c, task.candidates.class_ids,
                                      ap_ks=(None, cfg.map_k), recall_ks=tuple(cfg.recall_ks))
            row = {"map_all": 100.0 * float(scores["ap"][None].mean()),
                   f"map@{cfg.map_k}": 100.0 * float(scores["ap"][cfg.map_k].mean())}
            row.update({f"recall@{k}": 100.0 * float(scores["recall"][k].mean()) for k in cfg.recall_ks})
            results[task.attribute] = row
    finally:
        model.train(was_training)
    return results, images
