"""MODC: multi-task online deep clustering (ECCV 2022), in the continual setting.

Every formula here is our reconstruction (docs/strategies.md): the MODC main
text is not available, its supplement fixes only the stages. Per increment the epochs go
through the stages of :data:`cl_fir.strategies.modc.clustering.STAGES`, each adding a term:

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

The stages need ``warmup_epochs + supervised_epochs + 3 step_epochs + 1`` epochs (6 by
default). When ``train.epochs`` is smaller (synth-4inc-lf10 has 2), the increment's steps are
shared among the stages in proportion to their epochs (``fit_schedule``, on by default;
off, the run is refused), so every stage runs and a stage can change within an epoch
(:class:`~cl_fir.strategies.modc.clustering.StageSchedule`). run.json records, per increment, how
many steps and images each stage trained on (``strategy_info.modc_stages``).

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

from cl_fir.data.samplers import ChainedBatchSampler, DoubletBatchSampler, MixedDoubletSampler, ViewPairSampler
from cl_fir.engine.seeding import Stream
from cl_fir.errors import ConfigError
from cl_fir.losses import doublet_infonce
from cl_fir.strategies.modc.clustering import STAGES, CentroidBank, StageSchedule, cluster_loss, simsiam_loss, stage_epochs
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

    @dataclass
    class Options(Strategy.Options):
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
        fit_schedule: bool = True         # fewer train.epochs than the stages need: share the steps (false: refuse)

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
        self.schedule: StageSchedule | None = None   # the current increment's stage of every step
        self._update = None                  # (embeddings, classes) for the centroid EMA after the step
        #: on the device, per stage, since the last read (once per epoch): unlabelled images,
        #: confidently pseudo-labelled pairs, old-attribute pseudo-labels used
        self._stats = None
        #: increment -> per stage [steps, images, unlabelled images, pseudo-labelled pairs,
        #: old-attribute pseudo-labels] (run.json's ``strategy_info.modc_stages``)
        self.record: dict[int, list[list[int]]] = {}

    # ------------------------------------------------------------ set-up

    @classmethod
    def check_config(cls, opts, cfg) -> None:
        needed = sum(stage_epochs(opts.warmup_epochs, opts.supervised_epochs, opts.step_epochs))
        if cfg.model.head == "dnc":
            raise ConfigError("strategy modc does not combine with model.head dnc (both divide the data into "
                              "clusters)")
        if not opts.fit_schedule and cfg.train.epochs < needed:
            raise ConfigError(f"train.epochs={cfg.train.epochs} is fewer than the {needed} epochs modc's stages need "
                              f"(warmup_epochs + supervised_epochs + 3 x step_epochs + 1); raise it (--epochs), "
                              f"shorten the stages, or leave --opt fit_schedule=true to share the steps among them")

    def _build_predictor(self, dim: int, device, seed: int) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            hidden = max(8, dim // 4)
            self.predictor = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.predictor.to(device)

    def before_training_exp(self, ctx):
        means = ctx.class_means(self.training_increments(ctx))
        dim = next(iter(means.values()))[0].shape[1]
        if self.bank is None:
            meta = ctx.scenario.meta
            self.bank = CentroidBank(meta.class_offsets, meta.num_values, dim).to(ctx.device)
        for a, (m, valid) in means.items():
            self.bank.set_attribute(a, m, valid)
        if self.predictor is None:
            self._build_predictor(dim, ctx.device, ctx.epoch_seed(0, Stream.MODC_PREDICTOR))
        self._unlabelled = None
        self._stats = torch.zeros(len(STAGES), 3, device=ctx.device)   # read once per epoch, not per step
        o, t = self.opts, ctx.cfg.train
        self.check_config(o, ctx.cfg)
        steps_per_epoch = max(1, self.doublets_per_epoch(ctx, len(self.training_increments(ctx))) // t.batch_size)
        self.schedule = StageSchedule(t.epochs, steps_per_epoch, o.warmup_epochs, o.supervised_epochs, o.step_epochs)
        self.record[ctx.increment.index] = [[0] * 5 for _ in STAGES]
        if not self.schedule.by_epoch:
            shares = ", ".join(f"{name} {n}" for name, n in zip(STAGES, self.schedule.steps_per_stage()))
            ctx.log(f"  modc: train.epochs={t.epochs} is fewer than the {self.schedule.needed} epochs of "
                    f"the stages: steps per stage {shares}")

    def forget(self, ctx):
        """Static retraining (modc_static): fresh centroid banks and predictor, no frozen old model."""
        self.bank = self.predictor = self.old_model = None

    def trainable_parameters(self, ctx):
        return super().trainable_parameters(ctx) + list(self.predictor.parameters())

    def stage(self, ctx) -> int:
        """The stage of the current step."""
        return self.schedule.stage(ctx.epoch, ctx.step)

    def _view_pairs_in_batch(self, batch_size: int, stage: int) -> int:
        """View pairs at the end of each batch of the stage (from semi-supervised step 1 on)."""
        if stage < 2:
            return 0
        return max(1, min(batch_size - 1, int(round(batch_size * self.opts.view_fraction))))

    # ------------------------------------------------------------ data

    def _unlabelled_rows(self, ctx):
        sources = self.training_increments(ctx)
        if any(ctx.scenario.increments[i].unlabelled_table is None for i in sources):
            return None
        if self._unlabelled is None or self._unlabelled[0] != sources:
            dataset, table = ctx.scenario.unlabelled_data(sources)
            self._unlabelled = (sources, UnlabelledItems(dataset, table.attributes), table)
        return self._unlabelled

    def training_batches(self, ctx, epoch):
        """The epoch's batches, stage by stage: labelled doublets (warm-up, supervised), then
        doublets and view pairs (labelled images from step 1, also unlabelled from step 2).
        When a stage runs a whole epoch, its seeds are the epoch's; a fitted schedule chains
        one sampler per run of a stage, each with seeds of its own."""
        sources = self.training_increments(ctx)
        labelled, table = ctx.scenario.training_data(sources)
        segments = self.schedule.segments(epoch)
        unlabelled = self._unlabelled_rows(ctx) if any(s >= 3 for s, _ in segments) else None
        dataset = labelled
        if unlabelled is not None:
            parts = [labelled, unlabelled[1]]
            if self._mixed is None or any(a is not b for a, b in zip(self._mixed.datasets, parts)):
                self._mixed = ConcatDataset(parts)   # one object for every epoch: the loader keeps its workers
            dataset = self._mixed
        n_unlabelled = 0 if unlabelled is None else len(unlabelled[1])
        samplers = [self._stage_sampler(ctx, epoch, stage, steps, table, n_unlabelled,
                                        () if self.schedule.by_epoch else (k,))
                    for k, (stage, steps) in enumerate(segments)]
        return dataset, samplers[0] if len(samplers) == 1 else ChainedBatchSampler(samplers)

    def _stage_sampler(self, ctx, epoch: int, stage: int, steps: int, table, n_unlabelled: int, parts: tuple):
        """``steps`` batches of ``stage``; unlabelled images (dataset rows after the labelled
        table's) join the view pairs from step 2."""
        B = ctx.cfg.train.batch_size
        n_views = self._view_pairs_in_batch(B, stage)
        doublets = DoubletBatchSampler(table, B - n_views, steps * (B - n_views),
                                       ctx.epoch_seed(epoch, Stream.DOUBLETS, *parts),
                                       min_batch_size=1 if n_views else 2)
        if not n_views:
            return doublets
        pool = np.arange(len(table) + (n_unlabelled if stage >= 3 else 0))
        views = ViewPairSampler(pool, n_views, steps, ctx.epoch_seed(epoch, Stream.MODC_VIEW_PAIRS, *parts))
        return MixedDoubletSampler([doublets, views])

    # ------------------------------------------------------------ losses

    def criterion(self, ctx):
        """The stage's terms. Rows take part through boolean masks over the whole batch (the
        losses' ``rows``), never by selecting them: a selection's size is a value the host
        would have to read, a GPU wait each time."""
        o, stage, batch = self.opts, self.stage(ctx), ctx.batch
        B = batch.outputs.shape[0] // 2
        anchors, positives = batch.outputs[:B], batch.outputs[B:]
        y, attrs = batch.labels[:B], batch.tasks[:B]   # the whole batch's
        known = y >= 0
        used = known
        self._stats[stage, 0] += (batch.labels < 0).sum()
        if stage >= 4:                         # steps 3-4: confident pseudo-labels of unlabelled images
            pseudo, conf = self.bank.pseudo_labels(anchors.detach(), attrs, o.cluster_temperature)
            confident = ~known & (conf >= o.confidence)
            y = torch.where(confident, pseudo, y)
            used = known | confident
            self._stats[stage, 1] += confident.sum()
        instance_rows = used if stage >= 4 else known
        loss = doublet_infonce(anchors, positives, y if o.label_aware else None, ctx.cfg.loss.temperature,
                               rows=instance_rows)
        cluster_rows = (used if stage >= 5 else known).repeat(2)
        z, classes, z_attrs = batch.outputs, y.repeat(2), attrs.repeat(2)
        self._update = (z.detach(), torch.where(cluster_rows, classes, -1))
        if stage >= 1 and o.cluster_weight:
            loss = loss + o.cluster_weight * cluster_loss(z, classes, z_attrs, self.bank, o.cluster_temperature,
                                                          rows=cluster_rows)
        n_doublets = B - self._view_pairs_in_batch(B, stage)
        if stage >= 2 and o.ss_weight and n_doublets < B:
            v1, v2 = anchors[n_doublets:], positives[n_doublets:]
            loss = loss + o.ss_weight * simsiam_loss(self.predictor(v1.float()), self.predictor(v2.float()), v1, v2)
        return loss + self._old_attribute_term(ctx)

    def _old_attribute_term(self, ctx) -> torch.Tensor:
        """New images under a random old attribute: pseudo-labelled by the frozen previous model
        and the frozen centroids, held in that cluster by the cluster loss.

        Each process embeds its own anchors; the embeddings are gathered, so the pseudo-labels,
        the confident rows and the loss are the whole batch's, as in one process."""
        old = ctx.old_attributes
        if self.old_model is None or not old or not self.opts.old_pseudo_weight:
            return ctx.batch.outputs.new_zeros(()).float()
        b = ctx.batch.size // 2                            # this process's anchors
        attrs = ctx.choose(old, anchors=True)
        teacher = ctx.forward(self.old_model, ctx.batch.inputs[:b], attrs).float()
        student = ctx.embed(ctx.model, ctx.batch.features[:b], attrs).float()
        teacher, student, every = (ctx.gather(t, anchors=True) for t in (teacher, student, attrs))
        pseudo, conf = self.bank.pseudo_labels(teacher, every, self.opts.cluster_temperature)
        keep = conf >= self.opts.confidence
        self._stats[self.stage(ctx), 2] += keep.sum()
        return self.opts.old_pseudo_weight * cluster_loss(student, pseudo, every, self.bank,
                                                          self.opts.cluster_temperature, rows=keep)

    def after_training_iteration(self, ctx):
        if self._update is not None:
            self.bank.update(*self._update, self.opts.centroid_momentum)
        self._update = None
        counts = self.record[ctx.increment.index][self.stage(ctx)]
        counts[0] += 1
        counts[1] += 2 * ctx.cfg.train.batch_size

    def after_training_epoch(self, ctx):
        stats = self._stats.tolist()              # the epoch's one read of the device counters
        self._stats.zero_()
        record = self.record[ctx.increment.index]
        for counts, (unlabelled, confident, old) in zip(record, stats):
            counts[2] += int(unlabelled)
            counts[3] += int(confident)
            counts[4] += int(old)
        stages = ", ".join(f"{STAGES[s]} {n} steps" for s, n in self.schedule.segments(ctx.epoch))
        parts = [stages]
        pairs = sum(unlabelled for unlabelled, _, _ in stats[4:]) / 2
        if pairs:
            parts.append(f"{sum(c for _, c, _ in stats) / pairs:.0%} of unlabelled pairs pseudo-labelled")
        if self.old_model is not None:
            parts.append(f"{int(sum(o for _, _, o in stats))} old-attribute pseudo-labels used")
        ctx.log("  modc: " + "; ".join(parts))

    def run_info(self, ctx):
        names = ("steps", "images", "unlabelled_images", "pseudo_labelled_pairs", "old_attribute_pseudo_labels")
        return {"modc_stages": [
            {"increment": inc + 1, "stages": {STAGES[s]: dict(zip(names, counts)) for s, counts in enumerate(stages)}}
            for inc, stages in sorted(self.record.items())]}

    def after_training_exp(self, ctx):
        self.bank.freeze(ctx.increment.attributes)        # anchors for the next increment
        self.old_model = copy.deepcopy(ctx.model).requires_grad_(False).eval()

    def class_centroids(self, ctx):
        attrs = {a for i in self.training_increments(ctx) for a in ctx.scenario.increments[i].attributes}
        return {a: tuple(t.cpu() for t in self.bank.attribute_centroids(a)) for a in sorted(attrs)}

    # ------------------------------------------------------------ state

    def state_dict(self):
        return {"bank": self.bank.state_dict() if self.bank is not None else None,
                "predictor": self.predictor.state_dict() if self.predictor is not None else None,
                "old_model": self.old_model.state_dict() if self.old_model is not None else None,
                "record": {inc: [list(c) for c in stages] for inc, stages in self.record.items()},
                "pending": self._stats.cpu() if self._stats is not None else None}

    def load_state_dict(self, state, ctx):
        self.record = {int(inc): [list(c) for c in stages] for inc, stages in state.get("record", {}).items()}
        if state.get("pending") is not None:     # a mid-epoch checkpoint: the epoch's counters so far
            self._stats = state["pending"].to(ctx.device)
        if state.get("bank") is None:
            return
        meta, dim = ctx.scenario.meta, state["bank"]["centroids"].shape[1]
        if self.bank is None:
            self.bank = CentroidBank(meta.class_offsets, meta.num_values, dim).to(ctx.device)
        self.bank.load_state_dict(state["bank"])
        if self.predictor is None:          # kept in place otherwise: the optimizer holds its parameters
            self._build_predictor(dim, ctx.device, 0)
        self.predictor.load_state_dict(state["predictor"])
        if state.get("old_model") is not None:
            self.old_model = copy.deepcopy(ctx.model).requires_grad_(False).eval()
            self.old_model.load_state_dict(state["old_model"])
