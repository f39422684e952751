"""The step context: everything a strategy's hooks see, and the operations they may run.

Every hook of :class:`~cl_fir.strategy.Strategy` receives one :class:`StepContext`. It holds
the run (configuration, scenario, task family, the model being trained, the increment, epoch
and step), the step's :class:`~cl_fir.families.base.Batch` and loss, and a few operations that
keep the run's rules in one place, so a strategy never handles them:

* **several processes** (torchrun): per-sample random values are drawn for the whole batch and
  each process keeps its rows (:meth:`StepContext.choose`, :meth:`StepContext.draw`);
  :meth:`StepContext.gather` assembles the whole batch of a per-sample tensor; the Fisher-like
  pass shards its batches and averages each sample's gradient over processes;
* **the host and the device**: values drawn on the host reach the device without a host wait,
  and the host keeps a copy of attributes, so routing to per-increment heads reads nothing back;
* **cost**: every pass an operation runs (a teacher's forward, an extra head pass, a per-sample
  backward, a class-means pass) is booked in the run's cost; a strategy books nothing itself;
* **precision**: passes run under the run's autocast;
* **seeds**: :meth:`StepContext.epoch_seed` derives a seed from the run seed, the increment,
  the epoch and a named stream (:class:`~cl_fir.engine.seeding.Stream`, registered in one place).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from cl_fir.config import RunConfig
from cl_fir.engine.seeding import Stream, derive_seed
from cl_fir.families import Batch, TaskFamily
from cl_fir.scenario import Increment


class StepContext:
    """What a strategy's hooks receive (see the module docstring). ``batch`` and ``loss`` are
    set from the forward pass of a step to its end (``None`` outside a step)."""

    def __init__(self, loop):
        """``loop``: the :class:`~cl_fir.engine.loop.TrainingLoop` whose hooks receive this context
        (not imported here: the loop imports this module)."""
        self._loop = loop
        #: the step's batch
        self.batch: Batch | None = None
        #: the step's loss so far: the strategy's criterion, then every term added with :meth:`add_loss`
        self.loss: torch.Tensor | None = None
        #: the terms that make up :attr:`loss`, by name (``"metric"``: the criterion's)
        self.loss_terms: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ the run

    @property
    def cfg(self) -> RunConfig:
        return self._loop.cfg

    @property
    def scenario(self):
        return self._loop.scenario

    @property
    def family(self) -> TaskFamily:
        return self._loop.family

    @property
    def model(self) -> nn.Module:
        """The model being trained."""
        return self._loop.model

    @property
    def increment(self) -> Increment:
        """The increment being trained (the last one trained, after training)."""
        return self._loop.increment

    @property
    def epoch(self) -> int:
        """The epoch of the increment (from 0)."""
        return self._loop.epoch

    @property
    def step(self) -> int:
        """The step of the epoch (from 0)."""
        return self._loop.step_in_epoch

    @property
    def device(self) -> torch.device:
        """Where the model lives (for modules and state a strategy makes)."""
        return self._loop.setup.device

    @property
    def old_attributes(self) -> list[int]:
        """Attributes (categories) learned in increments before the current one."""
        return [a for inc in self.scenario.increments[: self.increment.index] for a in inc.attributes]

    def epoch_seed(self, epoch: int, stream: Stream, *parts: int) -> int:
        """The seed of one random stream of one epoch of the current increment; ``parts`` split a
        stream further. A stream has one user: add a member to :class:`Stream` for a new one."""
        return derive_seed(self.cfg.seed, self.increment.index, epoch, stream, *parts)

    def log(self, message: str) -> None:
        """A line in the run's progress output."""
        self._loop.reporter.log(message)

    # ------------------------------------------------------------------ the step's loss

    def add_loss(self, name: str, value: torch.Tensor) -> None:
        """Add a term to the step's loss (``name`` keeps it apart in :attr:`loss_terms`)."""
        self.loss = value if self.loss is None else self.loss + value
        self.loss_terms[name] = value if name not in self.loss_terms else self.loss_terms[name] + value

    def metric_loss(self, label_aware: bool = True, per_sample: bool = False) -> torch.Tensor:
        """The family's metric loss (``[loss]``) on the whole batch's outputs; with ``label_aware``
        same-value items are not negatives (attribute family). ``per_sample``: one term per sample
        of the whole batch, each with the whole batch as context, whose mean is the loss."""
        loss = self.family.metric_terms if per_sample else self.family.metric_loss
        return loss(self.batch, label_aware, self.epoch, self.cfg.train.epochs)

    # ------------------------------------------------------------------ per-sample values

    def choose(self, options: int | Sequence[int], anchors: bool = False) -> torch.Tensor:
        """One of ``options`` (ints) per sample of this process, uniformly, on the device (e.g.
        the old attribute each sample is distilled under); with ``anchors``, one per doublet of
        this process's anchors. An int: that value for every sample, without a draw. The host
        keeps a copy, so routing by the values reads nothing back."""
        setup = self._loop.setup
        if isinstance(options, int):
            n = self.batch.size // 2 if anchors else self.batch.size
            return setup.from_host(torch.full((n,), options))
        options = torch.as_tensor(list(options))
        picked = self._loop.sharding.draw(lambda n: torch.randint(len(options), (n,)), self.batch.size, anchors)
        return setup.from_host(options[picked])

    def draw(self, make: Callable[[int], torch.Tensor], anchors: bool = False) -> torch.Tensor:
        """``make(n)`` (n random values drawn on the host, first dimension n) for this process's
        samples (or anchors), on the device: under torchrun every process draws for the whole
        batch and keeps its rows, so the run draws what one process would."""
        return self._loop.setup.from_host(self._loop.sharding.draw(make, self.batch.size, anchors))

    def gather(self, local: torch.Tensor, anchors: bool = False) -> torch.Tensor:
        """The whole batch of a tensor with one row per sample of this process (or per anchor,
        ``anchors``), in batch order, differentiably (itself in one process)."""
        return self._loop.sharding.gather(local, anchors)

    # ------------------------------------------------------------------ passes (counted in the cost)

    def forward(self, model: nn.Module, images: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """Another model's embeddings of ``images`` under ``attributes`` (a teacher, a frozen
        copy), without gradient; booked as forward-only images."""
        with torch.no_grad(), self._loop.setup.autocast():
            out = model(images, attributes)
        self._loop.cost.add_forward_only(images.shape[0])
        return out

    def embed(self, model: nn.Module, features, attributes: torch.Tensor) -> torch.Tensor:
        """``model``'s heads on feature maps it (or another model) computed, routed by
        ``attributes``: with gradient for the model being trained, without for any other;
        booked as head passes (back-propagated for the model being trained)."""
        trained = model is self.model
        with torch.set_grad_enabled(trained and torch.is_grad_enabled()), self._loop.setup.autocast():
            out = model.embed(features, attributes)
        self._loop.cost.add_head_passes(features.shape[0], backward=trained)
        return out

    def teacher_inputs(self, teacher: nn.Module, view: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """What ``teacher`` computes once per batch for :meth:`distillation_pairs` (attribute
        family: its feature maps of the images, or of ``view(images)``)."""
        return self.family.teacher_inputs(self.batch, teacher, view, self._loop.setup, self._loop.cost)

    def distillation_pairs(self, teacher: nn.Module, inputs, attributes: torch.Tensor
                           ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(student, teacher)]`` embeddings of this process's samples under ``attributes``
        (teacher's detached), from :meth:`teacher_inputs`: the images under other attributes
        (attribute family); the queries under other categories' compositors and the targets
        (composed family)."""
        return self.family.distillation_pairs(self.batch, self.model, teacher, inputs, attributes,
                                              self._loop.setup, self._loop.cost)

    def squared_sample_gradients(self, params: dict[str, nn.Parameter], sample_losses: Callable[[], torch.Tensor],
                                 batches: int, batch_size: int, seeds: tuple[int, int],
                                 increments: Iterable[int] | None = None) -> tuple[dict[str, torch.Tensor], int]:
        """A seeded pass over training data for Fisher-like estimates: ``batches`` fresh batches
        of ``batch_size`` doublets (triplets) of ``increments`` (default: the current one), drawn
        with ``seeds = (batch seed, augmentation seed)``; for each, ``sample_losses()`` (one term
        per sample of the whole batch, e.g. ``lambda: ctx.metric_loss(per_sample=True)``) and
        each sample's gradient of its term. Returns the sum over samples of each parameter's
        squared gradient (float32; summed per batch, then over batches) and the number of
        samples. The model runs in evaluation mode (BatchNorm statistics neither used from the
        batch nor moved), without strategy hooks or updates; under torchrun each process
        forwards its share of a batch and every sample's gradient is averaged over processes."""
        increments = [self.increment.index] if increments is None else list(increments)
        return self._loop.squared_sample_gradients(params, sample_losses, batches, batch_size, seeds, increments)

    def class_means(self, increments: list[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """attribute -> (unit-norm mean embedding of each value's labelled training images of
        ``increments`` under the current model (values x D), which values have images)."""
        return self._loop.evaluation.class_means(self.model, increments)

    # ------------------------------------------------------------------ the run's state

    def reset_model(self) -> None:
        """Restore the weights the run started from."""
        self._loop.reset_model()

    def count_stored_images(self, n: int) -> None:
        """Report how many images the strategy keeps in memory now (a replay buffer)."""
        self._loop.cost.current.stored_images = int(n)
