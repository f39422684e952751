"""Base class of every strategy.

A strategy is one class in one file under ``strategies/``, registered with
:func:`cl_fir.registry.register_strategy`. It talks to the loop only through hooks named
as in Avalanche (``before_training_exp``, ``before_backward``,
``after_training_iteration``, ``after_training_exp``, ...), each called with the
:class:`~cl_fir.engine.loop.TrainingLoop`, which exposes the model, the optimizer, the
current increment and mini-batch (``mb_x``, ``mb_y``, ``mb_task``, ``mb_output``) and
the loss. A strategy owns its loss (:meth:`criterion`) and its state, which it saves and
restores through :meth:`state_dict` / :meth:`load_state_dict`.

Options are a dataclass named ``Options`` on the class; ``--opt key=value`` sets them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from cl_fir.config import RunConfig, apply_section
from cl_fir.data.samplers import ComposedBatchSampler, DoubletBatchSampler
from cl_fir.engine.seeding import Stream
from cl_fir.losses import (composed_loss, composed_loss_terms, doublet_infonce, doublet_infonce_terms,
                           multi_similarity_loss, multi_similarity_terms)
from cl_fir.models import build_model
from cl_fir.models.retrieval_model import build_composed_model

if TYPE_CHECKING:
    from cl_fir.engine.loop import TrainingLoop
    from cl_fir.scenario import Scenario


def parameter_groups(params, lr: float) -> list[dict]:
    """Optimizer parameter groups: parameters that carry an ``lr_multiplier`` attribute (D&C's
    masks) get ``lr * lr_multiplier`` in a group of their own."""
    groups: dict[float, list] = {}
    for p in params:
        groups.setdefault(float(getattr(p, "lr_multiplier", 1.0)), []).append(p)
    return [{"params": ps, "lr": lr * m} for m, ps in groups.items()]


class Strategy:
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    families: ClassVar[tuple[str, ...]] = ("attribute",)
    #: True for strategies that train on unlabelled images (``scenario.unlabelled_data``) when a
    #: scenario's label_fraction < 1; the others train on the labelled rows only.
    uses_unlabelled: ClassVar[bool] = False

    @dataclass
    class Options:
        label_aware: bool = True       # in-batch items with the anchor's value are not negatives

    def __init__(self, options: "Strategy.Options | None" = None):
        self.opts = options if options is not None else self.Options()

    @classmethod
    def parse_options(cls, values: dict) -> "Strategy.Options":
        opts = cls.Options()
        apply_section(opts, values, f"--opt (strategy {cls.name})")
        return opts

    @classmethod
    def check_config(cls, opts: "Strategy.Options", cfg: RunConfig) -> None:
        """Refuse (ConfigError) options that do not fit the run's settings, before the run starts."""

    # ------------------------------------------------------------ model layout

    def head_of_attribute(self, scenario: "Scenario") -> list[int]:
        """Which head embeds each attribute; one shared head by default."""
        return [0] * scenario.meta.num_attributes

    def build_model(self, cfg: RunConfig, scenario: "Scenario") -> torch.nn.Module:
        """The model, built once before training (seeded); every part exists from the start."""
        if scenario.protocol == "composed":
            return build_composed_model(cfg.model, scenario, self.head_of_attribute(scenario))
        return build_model(cfg.model, scenario.meta.num_attributes, self.head_of_attribute(scenario))

    # ------------------------------------------------------------ data

    def old_attributes(self, loop: "TrainingLoop") -> list[int]:
        """Attributes learned in increments before the current one."""
        return [a for inc in loop.scenario.increments[: loop.increment.index] for a in inc.attributes]

    def training_increments(self, loop: "TrainingLoop") -> list[int]:
        """Increments whose training data is used now (default: the current one only)."""
        return [loop.increment.index]

    def doublets_per_epoch(self, loop: "TrainingLoop", num_increments: int) -> int:
        return loop.cfg.train.samples_per_epoch

    def training_batches(self, loop: "TrainingLoop", epoch: int):
        """``(dataset, batch_sampler)`` for one epoch: fresh seeded doublets from the training increments."""
        sources = self.training_increments(loop)
        dataset, table = loop.scenario.training_data(sources)
        if loop.scenario.protocol == "composed":
            return dataset, ComposedBatchSampler(table, loop.cfg.train.batch_size,
                                                 self.doublets_per_epoch(loop, len(sources)),
                                                 loop.epoch_seed(epoch, Stream.DOUBLETS))
        sampler = DoubletBatchSampler(table, loop.cfg.train.batch_size, self.doublets_per_epoch(loop, len(sources)),
                                      loop.epoch_seed(epoch, Stream.DOUBLETS))
        return dataset, sampler

    # ------------------------------------------------------------ optimisation

    def trainable_parameters(self, loop: "TrainingLoop"):
        return [p for p in loop.model.parameters() if p.requires_grad]

    def make_optimizer(self, loop: "TrainingLoop"):
        """A fresh optimizer and scheduler per increment (reference code: Adam, StepLR per epoch)."""
        t = loop.cfg.train
        opt = torch.optim.Adam(parameter_groups(self.trainable_parameters(loop), t.lr), lr=t.lr,
                               weight_decay=t.weight_decay, fused=loop.setup.device.type == "cuda" or None)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=t.lr_step, gamma=t.lr_gamma)

    def criterion(self, loop: "TrainingLoop") -> torch.Tensor:
        """The metric loss on the model's output; for models with several branches (ASEN++),
        the weighted sum of the metric loss on each branch's embeddings."""
        branches = loop.mb_branches
        if branches and loop.scenario.protocol != "composed":
            return sum(w * self.metric_loss(loop, out) for w, out in branches)
        return self.metric_loss(loop, loop.mb_output)

    def metric_loss(self, loop: "TrainingLoop", output: torch.Tensor) -> torch.Tensor:
        """The metric loss (``[loss] metric``) on the mini-batch ``[anchors; positives]``.

        ``infonce``: doublet InfoNCE (temperature from ``[loss]``). ``multi_similarity``: the MS
        loss over all 2B embeddings, labelled by value when ``label_aware``, else by doublet.
        """
        B = output.shape[0] // 2
        loss_cfg = loop.cfg.loss
        if loop.scenario.protocol == "composed":   # mb_output = [queries; targets]
            return composed_loss(output[:B], output[B:], loss_cfg, loop.epoch, loop.cfg.train.epochs)
        if loss_cfg.metric == "multi_similarity":
            labels = loop.mb_y if self.opts.label_aware else torch.arange(B, device=loop.mb_y.device).repeat(2)
            return multi_similarity_loss(output, labels, loss_cfg.ms_alpha, loss_cfg.ms_beta,
                                         loss_cfg.ms_base, loss_cfg.ms_epsilon)
        labels = loop.mb_y[:B] if self.opts.label_aware else None
        return doublet_infonce(output[:B], output[B:], labels, loss_cfg.temperature)

    def sample_losses(self, loop: "TrainingLoop") -> torch.Tensor:
        """:meth:`criterion`'s metric loss as one term per sample of the batch (doublet, or
        triplet for the composed family), each with the whole batch as its context; their mean
        is the loss. Per-sample gradients are taken of these terms (EWC's empirical Fisher)."""
        branches = loop.mb_branches
        if branches and loop.scenario.protocol != "composed":
            return sum(w * self.metric_terms(loop, out) for w, out in branches)
        return self.metric_terms(loop, loop.mb_output)

    def metric_terms(self, loop: "TrainingLoop", output: torch.Tensor) -> torch.Tensor:
        """:meth:`metric_loss` per sample (see :meth:`sample_losses`)."""
        B = output.shape[0] // 2
        loss_cfg = loop.cfg.loss
        if loop.scenario.protocol == "composed":
            return composed_loss_terms(output[:B], output[B:], loss_cfg, loop.epoch, loop.cfg.train.epochs)
        if loss_cfg.metric == "multi_similarity":
            labels = loop.mb_y if self.opts.label_aware else torch.arange(B, device=loop.mb_y.device).repeat(2)
            return multi_similarity_terms(output, labels, loss_cfg.ms_alpha, loss_cfg.ms_beta,
                                          loss_cfg.ms_base, loss_cfg.ms_epsilon)
        labels = loop.mb_y[:B] if self.opts.label_aware else None
        return doublet_infonce_terms(output[:B], output[B:], labels, loss_cfg.temperature)

    # ------------------------------------------------------------ hooks (Avalanche names)

    def before_training_exp(self, loop: "TrainingLoop") -> None: ...
    def before_training_epoch(self, loop: "TrainingLoop") -> None: ...
    def before_forward(self, loop: "TrainingLoop") -> None: ...
    def after_forward(self, loop: "TrainingLoop") -> None: ...
    def before_backward(self, loop: "TrainingLoop") -> None: ...
    def after_backward(self, loop: "TrainingLoop") -> None: ...
    def before_update(self, loop: "TrainingLoop") -> None: ...
    def after_update(self, loop: "TrainingLoop") -> None: ...
    def after_training_iteration(self, loop: "TrainingLoop") -> None: ...
    def after_training_epoch(self, loop: "TrainingLoop") -> None: ...
    def after_training_exp(self, loop: "TrainingLoop") -> None: ...
    def before_eval(self, loop: "TrainingLoop") -> None: ...
    def after_eval(self, loop: "TrainingLoop") -> None: ...

    def model_copies(self, loop: "TrainingLoop") -> list[torch.nn.Module]:
        """The other copies of the model this strategy runs (teachers, frozen old models); the
        loop keeps them in the student's training phase (ASEN++'s global-only epochs). By
        default every module held in the strategy's attributes, directly or as the ``module``
        of a holder such as :class:`~cl_fir.models.ema.EMATeacher`."""
        found = []
        for value in vars(self).values():
            value = getattr(value, "module", value)
            if isinstance(value, torch.nn.Module):
                found.append(value)
        return found

    def class_centroids(self, loop: "TrainingLoop") -> dict | None:
        """Centroids the strategy keeps for the tasks trained in this increment (attribute ->
        (values x D, valid values)), used by prioritised retrieval; None: the loop's stored
        class means."""
        return None

    def run_info(self, loop: "TrainingLoop") -> dict | None:
        """What the strategy reports about the run so far, written to run.json as
        ``strategy_info`` after each increment (e.g. which MODC stages ran); None: nothing."""
        return None

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """Everything the strategy needs to continue after an increment boundary."""
        return {}

    def load_state_dict(self, state: dict, loop: "TrainingLoop") -> None:
        pass
