"""MODC: multi-task online deep clustering (ECCV 2022), in the continual setting.

Every formula here is our reconstruction (reference/modc_asenpp.md 1.4): the MODC main
text is not available, its supplement fixes only the stages. Per increment the epochs go
through the stages of :data:`cl_fir.online_clustering.STAGES`, each adding a term:

* warm-up: the instance-level loss (the baseline's metric loss, label-aware InfoNCE) on
  labelled doublets;
* supervised: + the cluster-level loss, a softmax over the centroids of the sample's
  attribute (one centroid per attribute value, tau_c), centroids updated online by a
  per-batch EMA of labelled embeddings;
* semi-supervised step 1: + SimSiam self-supervision on two views of labelled images;
  step 2: + on unlabelled images; step 3: + the instance loss on unlabelled images with
  confident pseudo-labels (nearest centroid); step 4: + the cluster loss on them, which
  then also feed the centroid EMA.

A batch then holds ``1 - view_fraction`` labelled doublets and ``view_fraction`` view
pairs (two augmentations of one image, labelled from step 1, unlabelled from step 2).

Continual extension (rehearsal-free): the centroid banks grow with each increment; old
attributes' centroids are frozen as anchors. Each new image is also embedded under a random
old attribute; the frozen previous model and the frozen centroids give its pseudo-label,
and the cluster loss holds the student's embedding in that cluster
(``old_pseudo_weight``). The centroids are exported to prioritised retrieval.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from cl_fir.data.samplers import DoubletBatchSampler, MixedDoubletSampler, ViewPairSampler
from cl_fir.engine.seeding import Stream
from cl_fir.errors import ConfigError
from cl_fir.losses import doublet_infonce
from cl_fir.online_clustering import STAGES, CentroidBank, cluster_loss, modc_stage, simsiam_loss
from cl_fir.registry import register_strategy
from cl_fir.strategy import Strategy


class UnlabelledItems(Dataset):
    """Unlabelled images as training items ``(image, -1, attribute)``."""

    def __init__(self, dataset, attributes: np.ndarray):
        self.dataset, self.attributes = dataset, attributes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index][0], -1, int(self.attributes[index])


@register_strategy("modc")
class MODC(Strategy):
    summary = "online deep clustering: per-value centroid banks, cluster loss, SimSiam and pseudo-labels (semi-supervised)"
    uses_unlabelled = True
    #: True for the static-retraining variant (modc_static)
    retrain = False

    @dataclass
    class Options:
        label_aware: bool = True          # in-batch items with the anchor's value are not negatives
        warmup_epochs: int = 1            # instance loss only
        supervised_epochs: int = 1        # + cluster loss
        step_epochs: int = 1              # epochs of each semi-supervised step 1-3 (step 4 runs to the end)
        view_fraction: float = 0.5        # share of a batch's pairs that are two views of one image (from step 1)
        cluster_weight: float = 1.0
        ss_weight: float = 1.0
        cluster_temperature: float = 0.1  # tau_c of the centroid softmax (also the pseudo-label confidence)
        centroid_momentum: float = 0.9    # EMA of the centroids per batch
        confidence: float = 0.5           # pseudo-labels below this softmax probability are not used
        old_pseudo_weight: float = 1.0    # cluster loss of new images under old attributes (continual part)

    def __init__(self, options=None):
        super().__init__(options)
        o = self.opts
        if min(o.warmup_epochs, o.supervised_epochs) < 0 or o.step_epochs < 1:
            raise ConfigError("--opt warmup_epochs / supervised_epochs: expected integers >= 0; step_epochs >= 1")
        if not 0.0 < o.view_fraction < 1.0:
            raise ConfigError(f"--opt view_fraction: expected a number in (0, 1), got {o.view_fraction}")
        if not 0.0 <= o.centroid_momentum < 1.0 or not 0.0 <= o.confidence <= 1.0:
            raise ConfigError("--opt centroid_momentum: expected [0, 1); confidence: expected [0, 1]")
        self.bank: CentroidBank | None = None
        self.predictor: nn.Module | None = None
        self.old_model: nn.Module | None = None
        self._unlabelled = None              # (increments, dataset, table) of the current increment
        self._mixed: ConcatDataset | None = None   # labelled then unlabelled images (steps 2-4)
        self._n_doublets = 0                 # the batch's first pairs are doublets, the rest view pairs
        self._update = None                  # (embeddings, classes) for the centroid EMA after the step
        self._stats = None                   # on the device: unlabelled rows seen, confident, old-attribute rows used

    # ------------------------------------------------------------ set-up

    def _check(self, loop) -> None:
        if loop.division is not None:
            raise ConfigError("strategy modc does not combine with head dnc (both divide the data into clusters)")

    def _build_predictor(self, dim: int, device, seed: int) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            hidden = max(8, dim // 4)
            self.predictor = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.predictor.to(device)

    def before_training_exp(self, loop):
        self._check(loop)
        if self.retrain:
            loop.reset_model()
        means = loop.class_means(self.training_increments(loop))
        dim = next(iter(means.values()))[0].shape[1]
        if self.bank is None or self.retrain:
            meta = loop.scenario.meta
            self.bank = CentroidBank(meta.class_offsets, meta.num_values, dim).to(loop.setup.device)
        for a, (m, valid) in means.items():
            self.bank.set_attribute(a, m, valid)
        if self.predictor is None or self.retrain:
            self._build_predictor(dim, loop.setup.device, loop.epoch_seed(0, Stream.MODC_PREDICTOR))
        self._unlabelled = None
        self._stats = torch.zeros(3, device=loop.setup.device)   # read once per epoch, not per step
        last = modc_stage(loop.cfg.train.epochs - 1, self.opts.warmup_epochs, self.opts.supervised_epochs,
                          self.opts.step_epochs)
        if last < len(STAGES) - 1:
            loop.reporter.log(f"  modc: train.epochs={loop.cfg.train.epochs} reaches stage {STAGES[last]} only "
                              f"(the full schedule needs {self.opts.warmup_epochs + self.opts.supervised_epochs + 3 * self.opts.step_epochs + 1})")

    def trainable_parameters(self, loop):
        return super().trainable_parameters(loop) + list(self.predictor.parameters())

    def stage(self, loop) -> int:
        return modc_stage(loop.epoch, self.opts.warmup_epochs, self.opts.supervised_epochs, self.opts.step_epochs)

    # ------------------------------------------------------------ data

    def _unlabelled_rows(self, loop):
        sources = self.training_increments(loop)
        if any(loop.scenario.increments[i].unlabelled_table is None for i in sources):
            return None
        if self._unlabelled is None or self._unlabelled[0] != sources:
            dataset, table = loop.scenario.unlabelled_data(sources)
            self._unlabelled = (sources, UnlabelledItems(dataset, table.attributes), table)
        return self._unlabelled

    def training_batches(self, loop, epoch):
        stage = self.stage(loop)
        sources = self.training_increments(loop)
        labelled, table = loop.scenario.training_data(sources)
        unlabelled = self._unlabelled_rows(loop) if stage >= 3 else None
        B = loop.cfg.train.batch_size
        if stage < 2:
            self._n_doublets = B
            return super().training_batches(loop, epoch)
        pool = [np.arange(len(table))]
        dataset = labelled
        if unlabelled is not None:
            pool.append(len(table) + np.arange(len(unlabelled[1])))
            parts = [labelled, unlabelled[1]]
            if self._mixed is None or any(a is not b for a, b in zip(self._mixed.datasets, parts)):
                self._mixed = ConcatDataset(parts)   # one object for every epoch: the loader keeps its workers
            dataset = self._mixed
        n_views = max(1, min(B - 1, int(round(B * self.opts.view_fraction))))
        self._n_doublets = B - n_views
        steps = max(1, self.doublets_per_epoch(loop, len(sources)) // B)
        samplers = [DoubletBatchSampler(table, self._n_doublets, steps * self._n_doublets, loop.epoch_seed(epoch, Stream.DOUBLETS),
                                        min_batch_size=1),
                    ViewPairSampler(np.concatenate(pool), n_views, steps, loop.epoch_seed(epoch, Stream.MODC_VIEW_PAIRS))]
        return dataset, MixedDoubletSampler(samplers)

    # ------------------------------------------------------------ losses

    def criterion(self, loop):
        """The stage's terms. Rows take part through boolean masks over the whole batch (the
        losses' ``rows``), never by selecting them: a selection's size is a value the host
        would have to read, a GPU wait each time."""
        o, stage = self.opts, self.stage(loop)
        B = loop.mb_output.shape[0] // 2
        anchors, positives = loop.mb_output[:B], loop.mb_output[B:]
        y, attrs = loop.mb_y[:B], loop.dist.gather_pairs(loop.mb_task)[:B]   # the whole batch's
        known = y >= 0
        used = known
        if stage >= 4:                         # steps 3-4: confident pseudo-labels of unlabelled images
            pseudo, conf = self.bank.pseudo_labels(anchors.detach(), attrs, o.cluster_temperature)
            confident = ~known & (conf >= o.confidence)
            y = torch.where(confident, pseudo, y)
            used = known | confident
            self._stats[:2] += torch.stack([(~known).sum(), confident.sum()])
        instance_rows = used if stage >= 4 else known
        loss = doublet_infonce(anchors, positives, y if o.label_aware else None, loop.cfg.loss.temperature,
                               rows=instance_rows)
        cluster_rows = (used if stage >= 5 else known).repeat(2)
        z, classes, z_attrs = loop.mb_output, y.repeat(2), attrs.repeat(2)
        self._update = (z.detach(), torch.where(cluster_rows, classes, -1))
        if stage >= 1 and o.cluster_weight:
            loss = loss + o.cluster_weight * cluster_loss(z, classes, z_attrs, self.bank, o.cluster_temperature,
                                                          rows=cluster_rows)
        if stage >= 2 and o.ss_weight and self._n_doublets < B:
            v1, v2 = anchors[self._n_doublets:], positives[self._n_doublets:]
            loss = loss + o.ss_weight * simsiam_loss(self.predictor(v1.float()), self.predictor(v2.float()), v1, v2)
        return loss + self._old_attribute_term(loop, B)

    def _old_attribute_term(self, loop, B: int) -> torch.Tensor:
        """New images under a random old attribute: pseudo-labelled by the frozen previous model
        and the frozen centroids, held in that cluster by the cluster loss.

        Under torchrun each rank embeds its own anchors; the embeddings are gathered, so
        the pseudo-labels, the confident rows and the loss are the whole batch's, as in one
        process."""
        old = self.old_attributes(loop)
        if self.old_model is None or not old or not self.opts.old_pseudo_weight:
            return loop.mb_output.new_zeros(()).float()
        b = loop.mb_x.shape[0] // 2                        # this rank's anchors (B in one process)
        x = loop.mb_x[:b]
        # drawn and cut on the host (one copy each, kept by the host: routing reads nothing back)
        drawn = torch.as_tensor(old)[torch.randint(len(old), (B,))]
        every = loop.setup.from_host(drawn)
        attrs = loop.setup.from_host(drawn[loop.dist.local_rows(2 * b, paired=True)[:b]])
        with loop.setup.autocast():
            with torch.no_grad():
                teacher = self.old_model(x, attrs).float()
            student = loop.model.embed(loop.mb_features[:b], attrs).float()
        loop.cost.add_forward_only(b)
        loop.cost.add_head_passes(b)
        teacher, student = loop.dist.gather_rows(teacher), loop.dist.gather_rows(student)
        pseudo, conf = self.bank.pseudo_labels(teacher, every, self.opts.cluster_temperature)
        keep = conf >= self.opts.confidence
        self._stats[2] += keep.sum()
        return self.opts.old_pseudo_weight * cluster_loss(student, pseudo, every, self.bank,
                                                          self.opts.cluster_temperature, rows=keep)

    def after_training_iteration(self, loop):
        if self._update is not None:
            self.bank.update(*self._update, self.opts.centroid_momentum)
        self._update = None

    def after_training_epoch(self, loop):
        seen, confident, old = self._stats.tolist()
        parts = [f"stage {STAGES[self.stage(loop)]}"]
        if seen:
            parts.append(f"{confident / seen:.0%} of unlabelled pairs pseudo-labelled")
        if self.old_model is not None:
            parts.append(f"{int(old)} old-attribute pseudo-labels used")
        loop.reporter.log("  modc: " + ", ".join(parts))
        self._stats.zero_()

    def after_training_exp(self, loop):
        if not self.retrain:
            self.bank.freeze(loop.increment.attributes)
            self.old_model = copy.deepcopy(loop.model).requires_grad_(False).eval()

    def class_centroids(self, loop):
        attrs = {a for i in self.training_increments(loop) for a in loop.scenario.increments[i].attributes}
        return {a: tuple(t.cpu() for t in self.bank.attribute_centroids(a)) for a in sorted(attrs)}

    # ------------------------------------------------------------ state

    def state_dict(self):
        return {"bank": self.bank.state_dict() if self.bank is not None else None,
                "predictor": self.predictor.state_dict() if self.predictor is not None else None,
                "old_model": self.old_model.state_dict() if self.old_model is not None else None}

    def load_state_dict(self, state, loop):
        if state.get("bank") is None:
            return
        meta, dim = loop.scenario.meta, state["bank"]["centroids"].shape[1]
        if self.bank is None:
            self.bank = CentroidBank(meta.class_offsets, meta.num_values, dim).to(loop.setup.device)
        self.bank.load_state_dict(state["bank"])
        if self.predictor is None:          # kept in place otherwise: the optimizer holds its parameters
            self._build_predictor(dim, loop.setup.device, 0)
        self.predictor.load_state_dict(state["predictor"])
        if state.get("old_model") is not None:
            self.old_model = copy.deepcopy(loop.model).requires_grad_(False).eval()
            self.old_model.load_state_dict(state["old_model"])
