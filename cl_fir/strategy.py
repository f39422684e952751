"""Base class of every strategy, and static retraining as a piece any strategy can use.

A strategy is one class in one file under ``strategies/``, registered with
:func:`cl_fir.registry.register_strategy`. It talks to the loop only through hooks named as
in Avalanche (``before_training_exp``, ``before_backward``, ``after_update``,
``after_training_exp``, ...), each called with a :class:`~cl_fir.engine.context.StepContext`:
the run (``cfg``, ``scenario``, ``family``, ``model``, ``increment``, ``epoch``, ``step``), the
step's ``batch`` and ``loss``, and operations that keep the multi-process, host/device, cost
and seed rules out of strategy code (``add_loss``, ``choose``, ``draw``, ``forward``,
``embed``, ``teacher_inputs``, ``distillation_pairs``, ``squared_sample_gradients``, ...). A
strategy owns its loss (:meth:`Strategy.criterion`, the task family's metric loss by default)
and its state, which it saves and restores through :meth:`Strategy.state_dict` /
:meth:`Strategy.load_state_dict`.

Options are a dataclass named ``Options`` on the class, derived from the base class's
(``class Options(Strategy.Options)``); ``--opt key=value`` sets them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from cl_fir.config import RunConfig, apply_section
from cl_fir.engine.context import StepContext
from cl_fir.engine.seeding import Stream
from cl_fir.families import family_of


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

    def head_of_attribute(self, scenario) -> list[int]:
        """Which head embeds each attribute; one shared head by default."""
        return [0] * scenario.meta.num_attributes

    def build_model(self, cfg: RunConfig, scenario) -> torch.nn.Module:
        """The model, built once before training (seeded); every part exists from the start."""
        return family_of(scenario).build_model(cfg, scenario, self.head_of_attribute(scenario))

    # ------------------------------------------------------------ data

    def training_increments(self, ctx: StepContext) -> list[int]:
        """Increments whose training data is used now (default: the current one only)."""
        return [ctx.increment.index]

    def doublets_per_epoch(self, ctx: StepContext, num_increments: int) -> int:
        return ctx.cfg.train.samples_per_epoch

    def training_batches(self, ctx: StepContext, epoch: int):
        """``(dataset, batch_sampler)`` for one epoch: fresh seeded doublets (triplets) from the
        training increments."""
        sources = self.training_increments(ctx)
        dataset, table = ctx.scenario.training_data(sources)
        return dataset, ctx.family.sampler(table, ctx.cfg.train.batch_size, self.doublets_per_epoch(ctx, len(sources)),
                                           ctx.epoch_seed(epoch, Stream.DOUBLETS))

    # ------------------------------------------------------------ optimisation

    def trainable_parameters(self, ctx: StepContext):
        return [p for p in ctx.model.parameters() if p.requires_grad]

    def make_optimizer(self, ctx: StepContext):
        """A fresh optimizer and scheduler per increment (reference code: Adam, StepLR per epoch)."""
        t = ctx.cfg.train
        opt = torch.optim.Adam(parameter_groups(self.trainable_parameters(ctx), t.lr), lr=t.lr,
                               weight_decay=t.weight_decay, fused=ctx.device.type == "cuda" or None)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=t.lr_step, gamma=t.lr_gamma)

    def criterion(self, ctx: StepContext) -> torch.Tensor:
        """The step's loss before the hooks add theirs: the family's metric loss (``[loss]``)."""
        return ctx.metric_loss(self.opts.label_aware)

    def sample_losses(self, ctx: StepContext) -> torch.Tensor:
        """:meth:`criterion` as one term per sample of the batch (doublet, or triplet for the
        composed family), each with the whole batch as its context; their mean is the loss.
        Per-sample gradients are taken of these terms (EWC's empirical Fisher)."""
        return ctx.metric_loss(self.opts.label_aware, per_sample=True)

    # ------------------------------------------------------------ hooks (Avalanche names)

    def before_training_exp(self, ctx: StepContext) -> None: ...
    def before_training_epoch(self, ctx: StepContext) -> None: ...
    def before_forward(self, ctx: StepContext) -> None: ...
    def after_forward(self, ctx: StepContext) -> None: ...
    def before_backward(self, ctx: StepContext) -> None: ...
    def after_backward(self, ctx: StepContext) -> None: ...
    def before_update(self, ctx: StepContext) -> None: ...
    def after_update(self, ctx: StepContext) -> None: ...
    def after_training_iteration(self, ctx: StepContext) -> None: ...
    def after_training_epoch(self, ctx: StepContext) -> None: ...
    def after_training_exp(self, ctx: StepContext) -> None: ...
    def before_eval(self, ctx: StepContext) -> None: ...
    def after_eval(self, ctx: StepContext) -> None: ...

    def model_copies(self, ctx: StepContext) -> list[torch.nn.Module]:
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

    def class_centroids(self, ctx: StepContext) -> dict | None:
        """Centroids the strategy keeps for the tasks trained in this increment (attribute ->
        (values x D, valid values)), used by prioritised retrieval; None: the loop's stored
        class means."""
        return None

    def run_info(self, ctx: StepContext) -> dict | None:
        """What the strategy reports about the run so far, written to run.json as
        ``strategy_info`` after each increment (e.g. which MODC stages ran); None: nothing."""
        return None

    # ------------------------------------------------------------ state

    def forget(self, ctx: StepContext) -> None:
        """Drop what the strategy carried over from earlier increments (teachers, banks, old
        models): :class:`StaticRetraining` calls it when an increment starts again."""

    def state_dict(self) -> dict:
        """Everything the strategy needs to continue after an increment boundary."""
        return {}

    def load_state_dict(self, state: dict, ctx: StepContext) -> None:
        pass


class StaticRetraining(Strategy):
    """Static retraining, for any strategy: put it first among the bases
    (``class MODCStatic(StaticRetraining, MODC)``).

    At every increment the strategy starts again, as a team without continual learning would:
    from the run's initial weights (``restart_from_initial_weights``) and without what it
    carried over (:meth:`Strategy.forget`), on the training data of
    :meth:`training_increments` (every increment seen so far) with :meth:`doublets_per_epoch`
    doublets per epoch (``samples_per_epoch`` per increment trained on: each task gets the same
    budget as in the continual strategies). Override either for another reference (a subset of
    increments, a fixed budget)."""

    #: restart from the weights the run started from at every increment
    restart_from_initial_weights: ClassVar[bool] = True

    def training_increments(self, ctx: StepContext) -> list[int]:
        return list(range(ctx.increment.index + 1))

    def doublets_per_epoch(self, ctx: StepContext, num_increments: int) -> int:
        return ctx.cfg.train.samples_per_epoch * num_increments

    def before_training_exp(self, ctx: StepContext) -> None:
        if self.restart_from_initial_weights:
            ctx.reset_model()
        self.forget(ctx)
        super().before_training_exp(ctx)
