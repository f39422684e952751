"""Elastic Weight Consolidation (Kirkpatrick et al. 2017) with the retrieval loss.

One shared model, as ``finetune``. After each increment the diagonal (empirical) Fisher
information of every parameter is estimated from squared gradients of the doublet
InfoNCE loss over ``fisher_batches`` fresh batches of that increment (model in eval mode,
so BatchNorm statistics are not touched); Fishers accumulate over increments
(``fisher_decay`` < 1 gives online EWC). While training later increments the loss gets
``(lambda / 2) * sum_i F_i (theta_i - theta*_i)^2`` with theta* the weights at the end of
the previous increment. The Fisher passes are counted in the training cost; under
torchrun each rank forwards its share of every Fisher batch and the gradients are averaged,
so every rank squares the whole batch's gradient, as one process does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cl_fir.data.samplers import ComposedBatchSampler, DoubletBatchSampler
from cl_fir.engine.seeding import Stream
from cl_fir.registry import register_strategy
from cl_fir.strategy import Strategy


@register_strategy("ewc", families=("attribute", "composed"))
class EWC(Strategy):
    summary = "one shared model; quadratic penalty weighted by the diagonal Fisher of the retrieval loss"

    @dataclass
    class Options:
        label_aware: bool = True         # in-batch items with the anchor's value are not negatives
        ewc_lambda: float = 1e5          # chosen on synth-4inc seed 0 among 1e3..1e6
        fisher_batches: int = 16         # batches of the finished increment used to estimate the Fisher
        fisher_decay: float = 1.0        # 1: sum the Fishers of all increments; < 1: online EWC

    def __init__(self, options=None):
        super().__init__(options)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def before_backward(self, loop):
        if not self.fisher or not self.opts.ewc_lambda:
            return
        penalty = loop.mb_output.new_zeros(())
        for name, p in loop.model.named_parameters():
            if name in self.fisher:
                penalty = penalty + (self.fisher[name] * (p - self.anchor[name]) ** 2).sum()
        loop.loss = loop.loss + 0.5 * self.opts.ewc_lambda * penalty

    def after_training_exp(self, loop):
        fisher = self._estimate_fisher(loop)
        for name, f in fisher.items():
            self.fisher[name] = self.opts.fisher_decay * self.fisher.get(name, 0) + f
        self.anchor = {n: p.detach().clone() for n, p in loop.model.named_parameters() if n in self.fisher}

    def _estimate_fisher(self, loop) -> dict[str, torch.Tensor]:
        model = loop.model
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        dataset, table = loop.scenario.training_data([loop.increment.index])
        t = loop.cfg.train
        make = ComposedBatchSampler if loop.scenario.protocol == "composed" else DoubletBatchSampler
        sampler = make(table, t.batch_size, t.batch_size * self.opts.fisher_batches, loop.epoch_seed(t.epochs, Stream.FISHER_BATCHES))
        was_training = model.training
        model.eval()
        batches = 0
        try:
            # under torchrun each rank forwards its share; the gradients are the whole batch's on every rank
            for batch in loop.seeded_loader(dataset, sampler, loop.epoch_seed(t.epochs, Stream.FISHER_AUGMENTATION),
                                            shard=loop.batch_shard):
                images = loop.gradient_pass(batch, self.criterion)
                for n, p in params.items():
                    if p.grad is not None:
                        fisher[n] += p.grad.detach().float() ** 2
                batches += 1
                loop.cost.add_gradient_pass(images)
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        return {n: f / max(batches, 1) for n, f in fisher.items()}

    def state_dict(self):
        return {"fisher": self.fisher, "anchor": self.anchor}

    def load_state_dict(self, state, loop):
        device = loop.setup.device
        self.fisher = {n: f.to(device) for n, f in state["fisher"].items()}
        self.anchor = {n: a.to(device) for n, a in state["anchor"].items()}
