"""Data division for heads that split the data (Divide and Conquer; Sanakoyeu et al., TPAMI 2021).

When the model's heads set ``divides_data`` (:class:`~cl_fir.models.dnc_head.DivideAndConquerHead`),
the training loop hands every epoch's ``(dataset, batch sampler)`` to
:meth:`DataDivision.group_epoch`, which

1. every ``division_interval`` epochs re-clusters the rows the sampler draws from: per
   attribute, k-means (faiss) on the attribute's unmasked embedding of the un-augmented
   images (or the pooled backbone features, ``cluster_features = "backbone"``), with K the
   attribute's current number of masks; the clusters keep their mask through linear
   assignment against the previous clustering of the same rows (symmetric difference or
   IoU) or, when the rows changed, against the stored centroids;
2. divides (after the first epoch of an increment, while K < K_max): 2-means inside every
   cluster, children ``2c, 2c + 1``, masks copied from the parent (``head.divide``);
3. draws every batch from one cluster: a seeded shuffled round-robin over the clusters that
   can form doublets, and tags each sample with the cluster so the head applies its mask.

**Increments.** Division state is per attribute: an attribute seen for the first time
starts whole (K = 1) and doubles every ``division_interval`` epochs of the increments that
train on it, up to ``max_clusters``; an attribute trained again later (replay, static)
keeps its K and is re-clustered at the start of the increment, matched to its masks by
centroid. A strategy that resets the model (static) resets the division with it.

The clustering pass is counted in the cost (one forward pass per row); it runs inside the
loop's training time.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, Dataset, Subset

from cl_fir.engine.clustering import (bisect_clusters, centroids_of, cluster_with_retries, relabel_by_centroids,
                               relabel_by_overlap)
from cl_fir.engine.seeding import Stream
from cl_fir.evaluation.evaluator import embed_batches
from cl_fir.models.dnc_head import UNMASKED


class GroupTaggedDataset(Dataset):
    """Reads ``(index, tag)`` keys: the wrapped item followed by the tag (the sample's cluster)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, tag = key
        return (*self.dataset[index], tag)


def untransformed_view(dataset):
    """The dataset with evaluation transforms (no augmentation), for the clustering pass."""
    if isinstance(dataset, ConcatDataset):
        return ConcatDataset([untransformed_view(d) for d in dataset.datasets])
    return dataset.eval() if hasattr(dataset, "eval") else dataset


class DataDivision:
    def __init__(self, model):
        if not hasattr(model, "head_for_attribute"):
            raise TypeError(f"head dnc needs the model ({type(model).__name__}) to provide head_for_attribute(a), "
                            f"as RetrievalModel does")
        self.model = model
        self.heads = [m for m in model.modules() if getattr(m, "divides_data", False)]
        lead = self.heads[0]
        self.interval = lead.division_interval
        self.conquer_epoch = lead.conquer_epoch
        self.features_kind = lead.cluster_features
        self.trials = lead.kmeans_trials
        self.increment: int | None = None
        self.clustered_at: int | None = None
        #: attribute -> (dataset rows, cluster of each row) of the last clustering in this increment
        self.assignments: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._tagged: GroupTaggedDataset | None = None

    @classmethod
    def for_model(cls, model) -> "DataDivision | None":
        return cls(model) if any(getattr(m, "divides_data", False) for m in model.modules()) else None

    def head_of(self, attribute: int):
        return self.model.head_for_attribute(attribute)

    # ------------------------------------------------------------ per epoch

    def group_epoch(self, loop, dataset, sampler, epoch: int):
        """``(dataset, sampler)`` whose batches each come from one cluster, tagged with it."""
        for attr in ("table", "rows", "with_groups", "can_draw"):
            if not hasattr(sampler, attr):
                raise TypeError(f"head dnc needs the strategy's batch sampler ({type(sampler).__name__}) to provide "
                                f"{attr!r}, as DoubletBatchSampler and MixedDoubletSampler do")
        conquering = self.conquer_epoch >= 0 and epoch >= self.conquer_epoch
        for head in self.heads:
            head.conquering = conquering
        if self.increment != loop.increment.index:
            self.increment, self.clustered_at, self.assignments = loop.increment.index, None, {}
        if self.clustered_at != epoch and (epoch % self.interval == 0 or not self.assignments):
            self.recluster(loop, dataset, sampler, epoch)
        row_group = np.full(len(dataset), -1, dtype=np.int64)
        for rows, labels in self.assignments.values():
            row_group[rows] = labels
        clusters = [g for g in range(int(row_group.max()) + 1) if sampler.can_draw(row_group, g)] or [0]
        rng = np.random.default_rng(loop.epoch_seed(epoch, Stream.DIVISION_SCHEDULE))
        schedule = np.resize(rng.permutation(clusters), len(sampler))
        if self._tagged is None or self._tagged.dataset is not dataset:   # one object per dataset: the epoch
            self._tagged = GroupTaggedDataset(dataset)                     # loader keeps its workers
        return self._tagged, sampler.with_groups(row_group, schedule)

    def recluster(self, loop, dataset, sampler, epoch: int) -> None:
        start = time.perf_counter()
        table, rows = sampler.table, np.asarray(sampler.rows)
        attributes = np.unique(table.attributes[rows]).tolist()
        if all(int(self.head_of(a).num_clusters[a]) == 0 for a in attributes):   # all start whole: no pass needed
            for a in attributes:
                self.head_of(a).num_clusters[a] = 1
                sel = rows[table.attributes[rows] == a]
                self.assignments[a] = (sel, np.zeros(len(sel), dtype=np.int64))
            self.clustered_at = epoch
            return
        feats = self.features(loop, dataset, rows)
        seed = loop.epoch_seed(epoch, Stream.DIVISION_KMEANS)
        sizes = []
        for a in attributes:
            head = self.head_of(a)
            in_attr = table.attributes[rows] == a
            sel, x, values = rows[in_attr], feats[in_attr], table.values[rows[in_attr]]
            k = int(head.num_clusters[a])
            if k == 0:
                head.num_clusters[a] = k = 1
                labels = np.zeros(len(sel), dtype=np.int64)
            else:
                labels = cluster_with_retries(x, values, k, seed + 7919 * a, self.trials)
                previous = self.assignments.get(a)
                if previous is not None and np.array_equal(previous[0], sel):
                    labels = relabel_by_overlap(labels, previous[1], k, head.relabel)
                elif k > 1:
                    labels = relabel_by_centroids(labels, x, head.centroids[a, :k].cpu().numpy())
                if epoch > 0 and 2 * k <= head.max_clusters:
                    labels, _split = bisect_clusters(x, labels, values, k, seed + 7919 * a + 1, self.trials)
                    head.divide(a)
                    k *= 2
            head.centroids[a, :k] = torch.from_numpy(centroids_of(x, labels, k)).to(head.centroids)
            self.assignments[a] = (sel, labels)
            sizes.append(f"{loop.scenario.meta.names[a]} {int((np.bincount(labels, minlength=k) > 0).sum())}")
        self.clustered_at = epoch
        loop.cost.add_forward_only(len(rows), all_ranks=True)   # its time is the loop's training time
        loop.reporter.log(f"  D&C epoch {epoch + 1}: clusters per attribute: {', '.join(sizes)} "
                          f"({time.perf_counter() - start:.1f} s)")

    def features(self, loop, dataset, rows: np.ndarray) -> np.ndarray:
        """L2-normalised clustering features of ``rows`` in order, from un-augmented images
        (under torchrun each rank embeds a share; every rank gets them all, so every rank
        clusters the same features)."""
        model = self.model
        modes = {m: m.training for m in model.modules()}
        model.eval()

        def forward(images, _values, attrs):
            attrs = attrs.to(images.device)
            f, fmap = model(images, attrs, return_features=True, groups=torch.full_like(attrs, UNMASKED))
            if self.features_kind == "backbone":
                f = fmap.float().mean(dim=(2, 3))
            return F.normalize(f.float(), dim=1)

        try:
            feats = embed_batches(Subset(untransformed_view(dataset), rows.tolist()), forward, loop.setup,
                                  loop.cfg.eval.batch_size, loop.num_workers, loop.dist,
                                  on_wait=loop.cost.add_data_wait)
        finally:
            for m, mode in modes.items():
                m.training = mode
        return feats.cpu().numpy()

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {"increment": self.increment, "clustered_at": self.clustered_at,
                "assignments": {a: (r.copy(), lab.copy()) for a, (r, lab) in self.assignments.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.increment, self.clustered_at = state["increment"], state["clustered_at"]
        self.assignments = {int(a): (np.asarray(r), np.asarray(lab)) for a, (r, lab) in state["assignments"].items()}
