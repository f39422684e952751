"""What a task family is: the part of training that differs between attribute-specific and
composed retrieval, behind one interface, so the loop and the strategies never compare
family names.

A family supplies the model (:meth:`TaskFamily.build_model`), the batch sampler
(:meth:`TaskFamily.sampler`), the batch layout over processes (:attr:`TaskFamily.paired`),
moving a loader batch to the device and the forward pass (:meth:`TaskFamily.load`,
:meth:`TaskFamily.forward`), the metric loss on the batch (:meth:`TaskFamily.metric_loss`,
chosen by name from the loss registry) and the pairs a strategy distils
(:meth:`TaskFamily.teacher_inputs`, :meth:`TaskFamily.distillation_pairs`).

Passes a family runs for a strategy (a teacher's, an extra head pass) are booked on ``cost``,
any object with the two methods of :class:`~cl_fir.engine.cost.CostMeter` named in
:class:`PassCounter`; so the cost rules of a pass sit next to the pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Protocol, Sequence

import torch
from torch import nn

from cl_fir.config import LossConfig, RunConfig
from cl_fir.losses import MetricLoss, build_loss
from cl_fir.runtime.device import DeviceSetup


class PassCounter(Protocol):
    def add_forward_only(self, n: int, backbone_only: bool = False, all_ranks: bool = False) -> None: ...
    def add_head_passes(self, n: int, backward: bool = True) -> None: ...


@dataclass(eq=False)
class Batch:
    """One training step's batch, as a strategy's hooks see it.

    ``outputs``, ``labels`` and ``tasks`` are the whole batch's: under torchrun gathered from
    every process (``outputs`` differentiably), so a loss over in-batch negatives sees every
    process's samples. ``inputs``, ``features``, ``local_outputs`` and ``local_tasks`` are this
    process's samples (the whole batch in one process): per-sample terms (distillation) go on
    them. Attribute family: ``outputs = [anchors; positives]``. Composed family: ``inputs`` are
    the reference images, ``targets`` the target images, ``texts`` the modification texts,
    ``outputs = [queries; targets]`` and ``features`` / ``text_features`` the references' image
    and text features before composition.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    local_tasks: torch.Tensor
    groups: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    texts: list[str] | None = None
    features: torch.Tensor | None = None
    text_features: torch.Tensor | None = None
    outputs: torch.Tensor | None = None
    local_outputs: torch.Tensor | None = None
    #: ``[(weight, embeddings)]`` per branch of models with several (ASEN++), else None
    branches: list[tuple[float, torch.Tensor]] | None = None
    #: the heads' auxiliary losses recorded by the student's forward of the batch (CRT's diversity, ...)
    aux: torch.Tensor | None = None
    #: the whole batch's ``local_tasks``, gathered on first use (see :attr:`tasks`)
    gather_tasks: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    _tasks: torch.Tensor | None = field(default=None, repr=False)

    @property
    def tasks(self) -> torch.Tensor:
        """The attribute (category) of every sample of the whole batch."""
        if self._tasks is None:
            self._tasks = self.local_tasks if self.gather_tasks is None else self.gather_tasks(self.local_tasks)
        return self._tasks

    @property
    def size(self) -> int:
        """This process's samples (images of the attribute family, triplets of the composed one)."""
        return self.inputs.shape[0]


class TaskFamily:
    """Base of :class:`~cl_fir.families.attribute.AttributeFamily` and
    :class:`~cl_fir.families.composed.ComposedFamily`; one instance per run (it holds the run's
    metric loss)."""

    name: ClassVar[str] = ""
    #: batch layout: True for doublets ``[a_1..a_B, p_1..p_B]`` (a process keeps its anchors and
    #: their positives), False for one row per sample (a process keeps a contiguous slice)
    paired: ClassVar[bool] = True
    #: the batch's ``features`` are the backbone's feature maps (teacher inputs are feature maps too)
    feature_maps: ClassVar[bool] = True

    def __init__(self, loss: LossConfig):
        self.loss: MetricLoss = build_loss(self.name, loss)

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Refuse settings the family cannot train with (an unknown metric loss, its bad options)."""
        build_loss(cls.name, cfg.loss)

    @staticmethod
    def build_model(cfg: RunConfig, scenario, head_of_task: Sequence[int]) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def sampler(table, batch_size: int, samples: int, seed: int):
        """Seeded batches of ``samples`` doublets (triplets) of ``table``'s rows."""
        raise NotImplementedError

    def load(self, raw, setup: DeviceSetup, rank: int) -> Batch:
        """A loader batch on the device (this process's share; ``rank`` numbers composed targets)."""
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: Batch, setup: DeviceSetup) -> int:
        """Run the model on the batch: sets ``features``, ``outputs`` (this process's), ``branches``;
        returns the number of images forwarded."""
        raise NotImplementedError

    def metric_loss(self, batch: Batch, label_aware: bool, epoch: int, epochs: int) -> torch.Tensor:
        """The metric loss on the (gathered) batch."""
        raise NotImplementedError

    def metric_terms(self, batch: Batch, label_aware: bool, epoch: int, epochs: int) -> torch.Tensor:
        """:meth:`metric_loss` as one term per sample of the whole batch; their mean is the loss."""
        raise NotImplementedError

    def teacher_inputs(self, batch: Batch, teacher: nn.Module, view, setup: DeviceSetup, cost: PassCounter):
        """What ``teacher`` needs of this process's samples, for :meth:`distillation_pairs` under any
        number of attributes; ``view(images)`` (or None) distorts the images it sees."""
        raise NotImplementedError

    def distillation_pairs(self, batch: Batch, student: nn.Module, teacher: nn.Module, inputs,
                           attributes: torch.Tensor, setup: DeviceSetup,
                           cost: PassCounter) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(student embeddings, teacher embeddings)]`` of this process's samples under
        ``attributes`` (one per sample), the teacher's detached."""
        raise NotImplementedError
