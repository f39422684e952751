"""Evaluate a model on the evaluation sets of the tasks seen so far. Metrics are in percent.

Ranking protocol (ASEN; FashionAI, DARN, DeepFashion): each task's queries are ranked
against the candidates of the same attribute, embedded under that attribute's
condition; relevant means same value. MAP@all is the primary metric.

Triplet protocol (CSN; Zappos50k): a test triplet (anchor, far, close) is correct when
the anchor is strictly closer (Euclidean) to the close image than to the far one in that
condition's embedding; triplet accuracy is the primary metric.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from cl_fir.config import EvalConfig
from cl_fir.data.device_decoding import collate_images
from cl_fir.evaluation import chance
from cl_fir.evaluation.embedding_stats import embedding_space_density, kmeans_nmi, spectral_decay
from cl_fir.evaluation.retrieval import composed_recall_at_k, leave_one_out_ap_at_r, retrieval_scores
from cl_fir.runtime.device import DeviceSetup
from cl_fir.runtime.distributed import DistributedContext
from cl_fir.scenario.tasks import EvalTask, TripletTask

#: Human name of each primary metric (the first of :func:`metric_names`).
METRIC_LABELS = {"map_all": "MAP@all", "triplet_acc": "triplet accuracy", "recall@10": "Recall@10"}

#: Composed retrieval: Recall@K of the papers (FashionIQ reports 10 and 50, Shoes and Fashion200k 1, 10, 50).
COMPOSED_KS = (10, 1, 50)


#: Protocols whose metrics do not depend on ``[eval]``: triplet accuracy (CSN), composed Recall@K.
FIXED_METRICS = {"triplet": ("triplet_acc",), "composed": tuple(f"recall@{k}" for k in COMPOSED_KS)}


def metric_names(cfg: EvalConfig, protocol: str = "ranking") -> list[str]:
    """Metrics recorded for every task; the first is the run's primary metric."""
    if protocol in FIXED_METRICS:
        return list(FIXED_METRICS[protocol])
    names = ["map_all", f"map@{cfg.map_k}", *[f"recall@{k}" for k in cfg.recall_ks]]
    if cfg.modc_metrics:
        names += [f"modc_map@{cfg.map_k}", f"modc_recall@{cfg.map_k}"]
    if cfg.mode == "prioritized":
        names += [f"{prioritized_prefix(cfg)}{m}" for m in ("map_all", f"map@{cfg.map_k}", f"modc_map@{cfg.map_k}",
                                                           f"modc_recall@{cfg.map_k}")] + ["pl_acc"]
    return (names + (list(EMBEDDING_STATS) if cfg.embedding_stats else [])
            + (["map@r_loo"] if cfg.leave_one_out_map_r else []))


def chance_levels(task: EvalTask, cfg: EvalConfig) -> dict[str, float]:
    """The chance level (percent, uniformly random ranking; :mod:`cl_fir.evaluation.chance`) of
    each rank-based metric the task reports: MAP@all, MAP@k and Recall@K for ranking tasks,
    triplet accuracy, or composed Recall@K."""
    if hasattr(task, "gallery"):
        return {f"recall@{k}": 100.0 * chance.composed_recall_chance(task.targets, task.excluded, len(task.gallery), k)
                for k in COMPOSED_KS}
    if isinstance(task, TripletTask):
        return {"triplet_acc": 100.0 * chance.TRIPLET_CHANCE}
    q, c = task.queries.class_ids, task.candidates.class_ids
    out = {"map_all": 100.0 * chance.ranking_chance(q, c), f"map@{cfg.map_k}": 100.0 * chance.ranking_chance(q, c, cfg.map_k)}
    out.update({f"recall@{k}": 100.0 * chance.ranking_recall_chance(q, c, k) for k in cfg.recall_ks})
    return out


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
    """MAP@R (%) of the queries ranked against the candidates (``ap_at_r``), and NMI, ESD,
    spectral decay of the task's query and candidate embeddings together."""
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
                  dist: DistributedContext | None = None,
                  on_wait: Callable[[float], None] | None = None) -> torch.Tensor:
    """``forward(images on the device, *the batch's other fields)`` over ``dataset`` in order,
    as one float32 tensor. Under torchrun each rank embeds a contiguous share and every
    rank gets the whole (sets smaller than the number of ranks are embedded whole by each).
    ``on_wait(seconds)`` is told the time spent waiting for each batch (training-side passes
    book it as data wait)."""
    sharded = dist is not None and dist.enabled and len(dataset) >= dist.world_size
    part = Subset(dataset, dist.shard_rows(len(dataset))) if sharded else dataset
    loader = DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=setup.device.type == "cuda", collate_fn=collate_images)
    chunks = []
    batches = iter(loader)
    while True:
        t0 = time.perf_counter()
        batch = next(batches, None)
        if on_wait is not None:
            on_wait(time.perf_counter() - t0)
        if batch is None:
            break
        images, *other = batch
        images = setup.to_device(images)
        with setup.autocast():
            chunks.append(forward(images, *other).float())
    local = torch.cat(chunks)
    return dist.gather_uneven(local) if sharded else local


class _Tagged(Dataset):
    """A dataset's items cut to their first ``keep`` fields, followed by ``tag`` (the
    attribute or task to embed them under)."""

    def __init__(self, dataset, tag: int, keep: int):
        self.dataset, self.tag, self.keep = dataset, tag, keep

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return (*self.dataset[index][:self.keep], self.tag)


def embed_under_attributes(model, sets: list[tuple], setup: DeviceSetup, batch_size: int, num_workers: int,
                           dist: DistributedContext | None = None,
                           on_wait: Callable[[float], None] | None = None) -> list[torch.Tensor]:
    """The embeddings of each ``(dataset, attribute)`` in ``sets``, in one pass of one loader
    over all of them (:func:`embed_batches`); batches may mix attributes, which the model
    routes as in training. One loader per evaluation instead of one per query or candidate
    set: its workers start, and its pipeline fills, once (with 2 workers on 2 CPU cores an
    evaluation of 8 tasks took 3x as long as without workers, nearly all of it start-up).
    In evaluation mode a sample's embedding does not depend on the rest of its batch."""
    whole = ConcatDataset([_Tagged(d, a, keep=1) for d, a in sets])   # (image, attribute)

    def forward(images, attributes):
        return model(images, setup.from_host(attributes))     # routed by the host's copy of the attributes

    embedded = embed_batches(whole, forward, setup, batch_size, num_workers, dist, on_wait)
    return list(embedded.split([len(d) for d, _ in sets]))


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


def embed_composed(model, tasks: list, setup: DeviceSetup, batch_size: int, num_workers: int,
                   dist: DistributedContext | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(queries, gallery)`` embeddings of each composed task: every gallery in one loader
    pass (targets are embedded alike for all tasks), every query (reference image + text,
    through its task's compositor) in a second."""
    galleries = embed_batches(ConcatDataset([t.gallery for t in tasks]), lambda images, *_: model.embed_target(images),
                              setup, batch_size, num_workers, dist).split([len(t.gallery) for t in tasks])

    def compose(images, texts, task_ids):
        return model.embed_query(images, list(texts), setup.from_host(task_ids))

    tagged = ConcatDataset([_Tagged(t.queries, t.attribute, keep=2) for t in tasks])   # (image, text, task)
    queries = embed_batches(tagged, compose, setup, batch_size, num_workers, dist)
    queries = queries.split([len(t.queries) for t in tasks])
    return list(zip(queries, galleries))


def evaluate_tasks(model, tasks: Iterable[EvalTask], setup: DeviceSetup, cfg: EvalConfig,
                   num_workers: int = 0, centroids: dict | None = None,
                   dist: DistributedContext | None = None) -> tuple[dict[int, dict[str, float]], int]:
    """Metrics per task (keyed by attribute id) and the number of images embedded.

    Under torchrun (``dist``) every rank must call it: each embeds a share of every set and
    rank 0 alone computes the metrics (the other ranks return no results)."""
    was_training = model.training
    model.eval()
    results: dict[int, dict[str, float]] = {}
    images = 0
    scoring = dist is None or dist.is_main
    tasks = list(tasks)
    try:
        # every image set of the ranking and triplet tasks, embedded in one pass, in task order
        sets = [(s, t.attribute) for t in tasks if not hasattr(t, "gallery")
                for s in ((t.images,) if isinstance(t, TripletTask) else (t.queries, t.candidates))]
        embedded = iter(embed_under_attributes(model, sets, setup, cfg.batch_size, num_workers, dist) if sets else [])
        composed = [t for t in tasks if hasattr(t, "gallery")]   # cl_fir.scenario.composed.ComposedTask
        composed_embedded = iter(embed_composed(model, composed, setup, cfg.batch_size, num_workers, dist)
                                 if composed else [])
        for task in tasks:
            if hasattr(task, "gallery"):   # Recall@K against the gallery, the reference removed from its ranking
                q, g = next(composed_embedded)
                images += q.shape[0] + g.shape[0]
                if scoring:
                    hits = composed_recall_at_k(q, g, task.targets, task.excluded, COMPOSED_KS)
                    results[task.attribute] = {f"recall@{k}": 100.0 * float(hits[k].mean()) for k in COMPOSED_KS}
                continue
            if isinstance(task, TripletTask):
                emb = next(embedded)
                images += emb.shape[0]
                if scoring:
                    results[task.attribute] = {"triplet_acc": triplet_accuracy(emb, task.anchors, task.far,
                                                                               task.close)}
                continue
            q, c = next(embedded), next(embedded)
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
            if cfg.leave_one_out_map_r:        # pytorch-metric-learning's layout: one set, each item vs the rest
                labels = np.concatenate([task.queries.class_ids, task.candidates.class_ids])
                row["map@r_loo"] = 100.0 * float(np.nanmean(leave_one_out_ap_at_r(torch.cat([q, c]), labels)))
            if cfg.mode == "prioritized":
                row.update(_prioritized(q, c, task, cfg, centroids[task.attribute]))
            results[task.attribute] = row
    finally:
        model.train(was_training)
    return results, images
