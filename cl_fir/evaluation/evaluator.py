"""Evaluate a model on the evaluation sets of the tasks seen so far. Metrics are in percent.

Ranking protocol (ASEN; FashionAI, DARN, DeepFashion): each task's queries are ranked
against the candidates of the same attribute, embedded under that attribute's
condition; relevant means same value. MAP@all is the primary metric.

Triplet protocol (CSN; Zappos50k): a test triplet (anchor, far, close) is correct when
the anchor is strictly closer (Euclidean) to the close image than to the far one in that
condition's embedding; triplet accuracy is the primary metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from cl_fir.config import EvalConfig
from cl_fir.data.device_decoding import collate_images
from cl_fir.engine.device import DeviceSetup
from cl_fir.evaluation.embedding_stats import embedding_space_density, kmeans_nmi, spectral_decay
from cl_fir.evaluation.retrieval import composed_recall_at_k, retrieval_scores

from cl_fir.scenario import TripletTask

if TYPE_CHECKING:
    from cl_fir.engine.distributed import DistributedContext
    from cl_fir.scenario import EvalTask

#: Human name of each primary metric (the first of :func:`metric_names`).
METRIC_LABELS = {"map_all": "MAP@all", "triplet_acc": "triplet accuracy", "recall@10": "Recall@10"}

#: Composed retrieval: Recall@K of the papers (FashionIQ reports 10 and 50, Shoes and Fashion200k 1, 10, 50).
COMPOSED_KS = (10, 1, 50)


def metric_names(cfg: EvalConfig, protocol: str = "ranking") -> list[str]:
    """Metrics recorded for every task; the first is the run's primary metric."""
    if protocol == "triplet":
        return ["triplet_acc"]
    if protocol == "composed":
        return [f"recall@{k}" for k in COMPOSED_KS]
    names = ["map_all", f"map@{cfg.map_k}", *[f"recall@{k}" for k in cfg.recall_ks]]
    if cfg.modc_metrics:
        names += [f"modc_map@{cfg.map_k}", f"modc_recall@{cfg.map_k}"]
    if cfg.mode == "prioritized":
        names += [f"{prioritized_prefix(cfg)}{m}" for m in ("map_all", f"map@{cfg.map_k}", f"modc_map@{cfg.map_k}",
                                                           f"modc_recall@{cfg.map_k}")] + ["pl_acc"]
    return names + (list(EMBEDDING_STATS) if cfg.embedding_stats else [])


def prioritized_prefix(cfg: EvalConfig) -> str:
    """Metric-name prefix of prioritised retrieval, naming the query labels it used."""
    return f"prio_{cfg.query_labels}_top{cfg.prio_topk}_"


def priority_inputs(q: torch.Tensor, c: torch.Tensor, true_values, centroids: torch.Tensor, valid: torch.Tensor,
                    query_labels: str, topk: int):
    """``(query class, candidate top-k clusters, pseudo-label accuracy)`` from class centroids
    (values x D, ``valid`` marking values that had training images)."""
    mu = centroids.to(q.device, q.dtype)
    block = torch.where(valid.to(q.device), 0.0, float("-inf"))
    pseudo = (q @ mu.t() + block).argmax(dim=1)
    top = (c @ mu.t() + block).topk(min(topk, int(valid.sum())), dim=1).indices
    truth = torch.as_tensor(np.asarray(true_values), device=q.device).long()
    qclass = truth if query_labels == "known" else pseudo
    return qclass, top, 100.0 * float((pseudo == truth).float().mean())


#: Per-task statistics of the task's evaluation embeddings (queries and candidates, label = value).
EMBEDDING_STATS = ("map@r", "nmi", "esd", "rho@1", "rho@2")


def _embedding_stats(q: torch.Tensor, c: torch.Tensor, task, ap_at_r) -> dict[str, float]:
    """MAP@R (%) and NMI, ESD, spectral decay of the task's query and candidate embeddings together."""
    emb = torch.cat([q, c]).cpu()
    labels = np.concatenate([task.queries.class_ids, task.candidates.class_ids])
    return {"map@r": 100.0 * float(np.mean(ap_at_r)), "nmi": 100.0 * kmeans_nmi(emb, labels),
            "esd": embedding_space_density(emb, labels), "rho@1": spectral_decay(emb, 0),
            "rho@2": spectral_decay(emb, 1)}


def triplet_accuracy(embeddings: torch.Tensor, anchors, far, close) -> float:
    """Percentage of triplets with ||anchor - close|| < ||anchor - far|| (CSN; ties count as wrong)."""
    idx = [torch.as_tensor(x, dtype=torch.long, device=embeddings.device) for x in (anchors, far, close)]
    a, f, c = (embeddings[i] for i in idx)
    correct = torch.linalg.vector_norm(a - c, dim=1) < torch.linalg.vector_norm(a - f, dim=1)
    return 100.0 * int(correct.sum()) / max(correct.numel(), 1)


@torch.inference_mode()
def embed_batches(dataset, forward, setup: DeviceSetup, batch_size: int, num_workers: int,
                  dist: "DistributedContext | None" = None) -> torch.Tensor:
    """``forward(images on the device, *the batch's other fields)`` over ``dataset`` in order,
    as one float32 tensor. Under torchrun each rank embeds a contiguous share and every
    rank gets the whole (sets smaller than the number of ranks are embedded whole by each)."""
    sharded = dist is not None and dist.enabled and len(dataset) >= dist.world_size
    part = Subset(dataset, dist.shard_rows(len(dataset))) if sharded else dataset
    loader = DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=setup.device.type == "cuda", collate_fn=collate_images)
    chunks = []
    for images, *other in loader:
        images = setup.to_device(images)
        with setup.autocast():
            chunks.append(forward(images, *other).float())
    local = torch.cat(chunks)
    return dist.gather_uneven(local) if sharded else local


def embed_dataset(model, dataset, attribute: int, setup: DeviceSetup, batch_size: int, num_workers: int,
                  dist: "DistributedContext | None" = None) -> torch.Tensor:
    """Embeddings of ``dataset``'s images under ``attribute`` (:func:`embed_batches`)."""
    def forward(images, *_):
        return model(images, torch.full((images.shape[0],), attribute, dtype=torch.long, device=images.device))

    return embed_batches(dataset, forward, setup, batch_size, num_workers, dist)


def _prioritized(q, c, task, cfg: EvalConfig, centroid: tuple) -> dict[str, float]:
    """MODC's prioritised ranking with the task's stored class centroids."""
    values = np.asarray(task.queries.table.values)
    qclass, top, acc = priority_inputs(q, c, values, *centroid, cfg.query_labels, cfg.prio_topk)
    k = cfg.map_k
    s = retrieval_scores(q, task.queries.class_ids, c, task.candidates.class_ids, ap_ks=(None, k),
                         modc_ks=(k,), priority=(qclass, top))
    p = prioritized_prefix(cfg)
    return {f"{p}map_all": 100.0 * float(s["ap"][None].mean()), f"{p}map@{k}": 100.0 * float(s["ap"][k].mean()),
            f"{p}modc_map@{k}": 100.0 * float(s["modc_ap"][k].mean()),
            f"{p}modc_recall@{k}": 100.0 * float(s["modc_recall"][k].mean()), "pl_acc": acc}


@torch.inference_mode()
def _evaluate_composed(model, task, setup: DeviceSetup, cfg: EvalConfig, num_workers: int, dist=None):
    """Recall@K of the task's queries (reference image + text, through the task's compositor)
    against its gallery, the reference removed from its own ranking."""
    gallery = embed_batches(task.gallery, lambda images, *_: model.embed_target(images), setup, cfg.batch_size,
                            num_workers, dist)

    def compose(images, texts):
        tasks = torch.full((images.shape[0],), task.attribute, dtype=torch.long, device=images.device)
        return model.embed_query(images, list(texts), tasks)

    queries = embed_batches(task.queries, compose, setup, cfg.batch_size, num_workers, dist)
    images = len(task.gallery) + len(task.queries)
    if dist is not None and not dist.is_main:
        return None, images
    hits = composed_recall_at_k(queries, gallery, task.targets, task.excluded, COMPOSED_KS)
    return {f"recall@{k}": 100.0 * float(hits[k].mean()) for k in COMPOSED_KS}, images


def evaluate_tasks(model, tasks: Iterable["EvalTask"], setup: DeviceSetup, cfg: EvalConfig,
                   num_workers: int = 0, centroids: dict | None = None,
                   dist: "DistributedContext | None" = None) -> tuple[dict[int, dict[str, float]], int]:
    """Metrics per task (keyed by attribute id) and the number of images embedded.

    Under torchrun (``dist``) every rank must call it: each embeds a share of every set and
    rank 0 alone computes the metrics (the other ranks return no results)."""
    was_training = model.training
    model.eval()
    results: dict[int, dict[str, float]] = {}
    images = 0
    scoring = dist is None or dist.is_main
    try:
        for task in tasks:
            if hasattr(task, "gallery"):   # composed retrieval (cl_fir.composed_scenario.ComposedTask)
                row, n = _evaluate_composed(model, task, setup, cfg, num_workers, dist)
                images += n
                if scoring:
                    results[task.attribute] = row
                continue
            if isinstance(task, TripletTask):
                emb = embed_dataset(model, task.images, task.attribute, setup, cfg.batch_size, num_workers, dist)
                images += emb.shape[0]
                if scoring:
                    results[task.attribute] = {"triplet_acc": triplet_accuracy(emb, task.anchors, task.far,
                                                                               task.close)}
                continue
            q = embed_dataset(model, task.queries, task.attribute, setup, cfg.batch_size, num_workers, dist)
            c = embed_dataset(model, task.candidates, task.attribute, setup, cfg.batch_size, num_workers, dist)
            images += q.shape[0] + c.shape[0]
            if not scoring:
                continue
            scores = retrieval_scores(q, task.queries.class_ids, c, task.candidates.class_ids,
                                      ap_ks=(None, cfg.map_k), recall_ks=tuple(cfg.recall_ks),
                                      ap_at_r=cfg.embedding_stats, modc_ks=(cfg.map_k,) if cfg.modc_metrics else ())
            row = {"map_all": 100.0 * float(scores["ap"][None].mean()),
                   f"map@{cfg.map_k}": 100.0 * float(scores["ap"][cfg.map_k].mean())}
            row.update({f"recall@{k}": 100.0 * float(scores["recall"][k].mean()) for k in cfg.recall_ks})
            if cfg.modc_metrics:
                row[f"modc_map@{cfg.map_k}"] = 100.0 * float(scores["modc_ap"][cfg.map_k].mean())
                row[f"modc_recall@{cfg.map_k}"] = 100.0 * float(scores["modc_recall"][cfg.map_k].mean())
            if cfg.embedding_stats:
                row.update(_embedding_stats(q, c, task, scores["ap@r"]))
            if cfg.mode == "prioritized":
                row.update(_prioritized(q, c, task, cfg, centroids[task.attribute]))
            results[task.attribute] = row
    finally:
        model.train(was_training)
    return results, images
