"""MCL-FIR as the released code behaves (Dr-LingXiao/MCL-FIR @81ca462; docs/strategies.md).

* A **full independent network per increment** (backbone and head), each a copy of the
  same initial network, trained only on its increment; every attribute is embedded by
  its own increment's network. Nothing is shared, so nothing can be forgotten — this is
  parameter isolation, and its memory grows with every increment: the run's
  ``model_parameters`` (cost.json) counts all the networks.
* The "EMA" teacher is a frozen copy of the **initial** backbone, never updated, run in
  **train mode** (its BatchNorm statistics drift, as in the code) and given the **same**
  view as the student (the code's augmented view is lost to an argument bug).
* Loss: doublet NT-Xent + ``kd_weight`` (1e-4) x MSE between the student's and the
  teacher's globally pooled encoder maps, summed over the anchor and positive images
  (the code sums it over anchor, far and close; doublets have no far image).

Options expose the two bugs (``teacher_train_mode``) so their effect can be measured.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cl_fir.losses import pooled_feature_distillation
from cl_fir.models import RetrievalModel, build_model
from cl_fir.models.routing import route_through
from cl_fir.registry import register_strategy
from cl_fir.strategy import Strategy


class IsolatedNetworks(nn.Module):
    """One complete retrieval network per increment; attributes are routed to theirs."""

    def __init__(self, networks: list[RetrievalModel], network_of_attribute: list[int]):
        super().__init__()
        self.networks = nn.ModuleList(networks)
        self.register_buffer("network_of_attribute", torch.as_tensor(network_of_attribute, dtype=torch.long),
                             persistent=False)
        self.network_of_attribute_host = np.asarray(network_of_attribute, dtype=np.int64)

    def forward(self, images: torch.Tensor, attributes: torch.Tensor, return_features: bool = False,
                groups: torch.Tensor | None = None):
        def run(n, idx):
            grouped = {} if groups is None else {"groups": groups[idx]}
            return self.networks[n](images[idx], attributes[idx], return_features=True, **grouped)

        emb, fmap = route_through(self.network_of_attribute, self.network_of_attribute_host, attributes, run,
                                  len(self.networks))
        return (emb, fmap) if return_features else emb

    def head_for_attribute(self, attribute: int) -> nn.Module:
        return self.networks[int(self.network_of_attribute_host[attribute])].head_for_attribute(attribute)


@register_strategy("mcl_fir_isolated")
class MCLFIRIsolated(Strategy):
    summary = ("the released MCL-FIR code: an independent network per increment, frozen initial backbone "
               "as 'EMA' teacher, 1e-4 pooled-feature KD")

    @dataclass
    class Options(Strategy.Options):
        label_aware: bool = False        # as the released code: same-value items are negatives
        kd_weight: float = 1e-4          # released code: 1e-4 x sum of pooled-feature MSEs
        teacher_train_mode: bool = True  # released code: the frozen teacher runs in train mode

    def __init__(self, options=None):
        super().__init__(options)
        self.teacher: nn.Module | None = None

    def build_model(self, cfg, scenario):
        base = build_model(cfg.model, scenario.meta.num_attributes, [0] * scenario.meta.num_attributes)
        network_of_attribute = [0] * scenario.meta.num_attributes
        for inc in scenario.increments:
            for a in inc.attributes:
                network_of_attribute[a] = inc.index
        return IsolatedNetworks([copy.deepcopy(base) for _ in scenario.increments], network_of_attribute)

    def _make_teacher(self, ctx) -> None:
        # every network starts from the same initial weights; the teacher is that backbone, frozen
        self.teacher = copy.deepcopy(ctx.model.networks[ctx.increment.index].backbone)
        self.teacher.requires_grad_(False)

    def before_training_exp(self, ctx):
        if self.teacher is None:
            self._make_teacher(ctx)
        current = ctx.increment.index
        for i, net in enumerate(ctx.model.networks):
            net.requires_grad_(i == current)

    def before_training_epoch(self, ctx):
        for i, net in enumerate(ctx.model.networks):
            net.train(i == ctx.increment.index)
        self.teacher.train(self.opts.teacher_train_mode)

    def before_backward(self, ctx):
        if not self.opts.kd_weight:
            return
        t_map = ctx.teacher_inputs(self.teacher)    # the backbone's maps of the same view, as in the code
        s_map, B = ctx.batch.features, ctx.batch.size // 2
        kd = pooled_feature_distillation(s_map[:B], t_map[:B]) + pooled_feature_distillation(s_map[B:], t_map[B:])
        ctx.add_loss("feature_distillation", self.opts.kd_weight * kd)

    def state_dict(self):
        return {"teacher": self.teacher.state_dict() if self.teacher is not None else None}

    def load_state_dict(self, state, ctx):
        if state.get("teacher") is not None:
            self.teacher = copy.deepcopy(ctx.model.networks[0].backbone)
            self.teacher.requires_grad_(False)
            self.teacher.load_state_dict(state["teacher"])
