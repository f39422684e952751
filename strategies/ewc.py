"""Elastic Weight Consolidation (Kirkpatrick et al. 2017) with the retrieval loss.

One shared model, as ``finetune``. After each increment but the last (a Fisher after the
last would never be used), the diagonal empirical Fisher information of every parameter
is estimated as the mean over samples of the squared per-sample gradient: over
``fisher_batches`` fresh batches of the increment's doublets (triplets for the composed
family), each sample's term of the metric loss (its InfoNCE with the whole batch as
negatives, :meth:`Strategy.sample_losses`) is back-propagated alone, with the model in eval
mode so BatchNorm statistics are neither used from the batch nor moved
(:meth:`StepContext.squared_sample_gradients`, which also counts the pass in the cost and
shards it under torchrun).

``penalty`` chooses how increments combine:

* ``per_task`` (Kirkpatrick et al. 2017): every finished increment t keeps its anchor
  theta*_t (the weights at its end) and its Fisher F_t, and the loss gets one penalty per
  increment, ``(lambda / 2) sum_t sum_i F_t,i (theta_i - theta*_t,i)^2``; memory grows by
  two copies of the parameters per increment;
* ``online`` (online EWC, Schwarz et al. 2018, "Progress & Compress"): one Fisher,
  ``F <- fisher_decay * F + F_t``, around the latest anchor only,
  ``(lambda / 2) sum_i F_i (theta_i - theta*_i)^2``; constant memory.
"""

from dataclasses import dataclass

import torch

from cl_fir.engine.seeding import Stream
from cl_fir.errors import ConfigError
from cl_fir.registry import register_strategy
from cl_fir.strategy import Strategy

PENALTIES = ("per_task", "online")


@register_strategy("ewc", families=("attribute", "composed"))
class EWC(Strategy):
    summary = "one shared model; quadratic penalty weighted by the diagonal empirical Fisher of the retrieval loss"

    @dataclass
    class Options(Strategy.Options):
        ewc_lambda: float = 1e5          # chosen on synth-4inc seed 0 among 1e3..1e6 (with a batch-mean Fisher)
        fisher_batches: int = 16         # batches of the finished increment whose samples estimate the Fisher
        fisher_batch_size: int = 0       # doublets per Fisher batch (0: train.batch_size); each sample's
        #                                  backward runs through its whole batch, so the pass costs ~ size^2
        penalty: str = "per_task"        # per_task: an anchor and a Fisher per increment (Kirkpatrick) | online
        fisher_decay: float = 1.0        # penalty=online: weight of the previous Fishers' sum (gamma; 1: plain sum)

    def __init__(self, options=None):
        super().__init__(options)
        o = self.opts
        if o.penalty not in PENALTIES:
            raise ConfigError(f"--opt penalty: expected per_task or online, got {o.penalty!r}")
        if o.penalty == "per_task" and o.fisher_decay != 1.0:
            raise ConfigError(f"--opt fisher_decay={o.fisher_decay} applies to penalty=online only (per_task keeps "
                              f"one Fisher per increment)")
        if not 0.0 <= o.fisher_decay <= 1.0 or o.fisher_batches < 1 or o.fisher_batch_size == 1 \
                or o.fisher_batch_size < 0:
            raise ConfigError("--opt fisher_decay: expected a number in [0, 1]; fisher_batches: an integer >= 1; "
                              "fisher_batch_size: 0 (the training batch size) or an integer >= 2")
        #: one (Fisher, anchor) pair per penalty term: per finished increment (per_task), or one (online)
        self.fishers: list[dict[str, torch.Tensor]] = []
        self.anchors: list[dict[str, torch.Tensor]] = []

    def before_backward(self, ctx):
        if self.fishers and self.opts.ewc_lambda:
            params = dict(ctx.model.named_parameters())
            penalty = sum((f * (params[n] - anchor[n]) ** 2).sum()
                          for fisher, anchor in zip(self.fishers, self.anchors) for n, f in fisher.items())
            ctx.add_loss("ewc", 0.5 * self.opts.ewc_lambda * penalty)

    def after_training_exp(self, ctx):
        if ctx.increment.index == len(ctx.scenario.increments) - 1:
            return                                           # no increment left to protect it in
        fisher = self.estimate_fisher(ctx)
        if self.opts.penalty == "online" and self.fishers:   # one decayed sum, around the latest anchor only
            previous, _ = self.fishers.pop(), self.anchors.pop()
            fisher = {n: self.opts.fisher_decay * previous[n] + f for n, f in fisher.items()}
        self.fishers.append(fisher)
        self.anchors.append({n: p.detach().clone() for n, p in ctx.model.named_parameters() if n in fisher})

    def estimate_fisher(self, ctx) -> dict[str, torch.Tensor]:
        """Diagonal empirical Fisher: the mean over the Fisher batches' samples of each trainable
        parameter's squared per-sample gradient (seeds of the "epoch" after the increment's last)."""
        params = {n: p for n, p in ctx.model.named_parameters() if p.requires_grad}
        after = ctx.cfg.train.epochs
        squares, samples = ctx.squared_sample_gradients(
            params, lambda: self.sample_losses(ctx), self.opts.fisher_batches,
            self.opts.fisher_batch_size or ctx.cfg.train.batch_size,
            (ctx.epoch_seed(after, Stream.FISHER_BATCHES), ctx.epoch_seed(after, Stream.FISHER_AUGMENTATION)))
        return {n: (f / max(samples, 1)).to(params[n].dtype) for n, f in squares.items()}

    def state_dict(self):
        return {"fishers": self.fishers, "anchors": self.anchors}

    def load_state_dict(self, state, ctx):
        self.fishers = [{n: f.to(ctx.device) for n, f in fisher.items()} for fisher in state["fishers"]]
        self.anchors = [{n: a.to(ctx.device) for n, a in anchor.items()} for anchor in state["anchors"]]
