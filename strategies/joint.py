"""Joint training at a given budget: the reference a cost claim is measured against.

``static`` retrains from the initial weights at *every* increment, so its cost grows with
the number of increments and any one-pass strategy costs about 2/(n+1) of it by
construction: that ratio is arithmetic, not a measurement. ``joint`` is the other
reference: **one** model trained from the initial weights on all the tasks seen so far, at
the last increment only (``train_at = "last"``, the default; ``"every"`` also trains at each
earlier increment, as static does), with a total budget of ``doublets`` (0: static's budget
at that increment, ``n x epochs x samples_per_epoch``), spread over the scenario's epochs.
Before the last increment it trains nothing, so its earlier matrix rows are the initial
model's and mean nothing: compare reads only its final row and its cost.

Run at several budgets (``cl-fir budget``), it gives a **budget curve**, the metric of joint
training against its training FLOPs, and ``compare`` places every continual strategy on
it: the joint metric at the strategy's FLOPs, and the FLOPs joint needs to reach the
strategy's metric (docs/metrics.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cl_fir.errors import ConfigError
from cl_fir.registry import register_strategy
from cl_fir.strategy import StaticRetraining

TRAIN_AT = ("last", "every")


class _Idle:
    """The scheduler of an increment joint does not train in: it never steps (torch warns when
    a scheduler steps before its optimizer ever has)."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


class _NoBatches:
    """A batch sampler with no batches: an increment joint does not train in."""

    def __len__(self) -> int:
        return 0

    def __iter__(self):
        return iter(())


@register_strategy("joint", families=("attribute", "composed"))
class JointTraining(StaticRetraining):
    summary = ("one model trained from the initial weights on all seen tasks at the last increment, at a given "
               "budget (the budget-curve reference)")

    @dataclass
    class Options(StaticRetraining.Options):
        doublets: int = 0                # total doublets of one training (0: static's budget at that increment)
        train_at: str = "last"           # last: train once, at the last increment | every: at each, as static

    def __init__(self, options=None):
        super().__init__(options)
        if self.opts.train_at not in TRAIN_AT:
            raise ConfigError(f"--opt train_at: expected last or every, got {self.opts.train_at!r}")
        if self.opts.doublets < 0:
            raise ConfigError(f"--opt doublets: expected 0 (static's budget) or a number of doublets, "
                              f"got {self.opts.doublets}")

    def trains_now(self, ctx) -> bool:
        return self.opts.train_at == "every" or ctx.increment.index == len(ctx.scenario.increments) - 1

    def doublets_per_epoch(self, ctx, num_increments):
        if not self.opts.doublets:
            return super().doublets_per_epoch(ctx, num_increments)
        return max(ctx.cfg.train.batch_size, math.ceil(self.opts.doublets / ctx.cfg.train.epochs))

    def training_batches(self, ctx, epoch: int):
        dataset, sampler = super().training_batches(ctx, epoch)
        return (dataset, sampler) if self.trains_now(ctx) else (dataset, _NoBatches())

    def make_optimizer(self, ctx):
        optimizer, scheduler = super().make_optimizer(ctx)
        return optimizer, (scheduler if self.trains_now(ctx) else _Idle(scheduler))

    def before_training_exp(self, ctx):
        if self.trains_now(ctx):   # restart from the initial weights (StaticRetraining)
            super().before_training_exp(ctx)
