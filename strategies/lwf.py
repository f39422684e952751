"""Learning without Forgetting for embeddings (Li & Hoiem 2017, adapted to retrieval).

One shared model, as ``finetune``. At the end of each increment a frozen copy of the model is
kept. While training a new increment, the batch is also embedded under ``kd_old_attributes``
randomly drawn old attributes (categories) per sample, by both the frozen copy and the student
(:meth:`StepContext.distillation_pairs`: through the old heads in the attribute family, the old
compositors and the shared image encoder in the composed one), and the student is pulled
towards the copy: ``kd_mode = embedding`` (1 - cos of each embedding) or ``similarity`` (KL
between the in-batch similarity distributions, i.e. the relational structure of the old
embedding space). Avalanche's LwF plugin does a softmax-KL over embedding dimensions, which is
meaningless for retrieval (it assumes class logits); this is the embedding version.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from cl_fir.errors import ConfigError
from cl_fir.losses import embedding_distillation, similarity_distillation
from cl_fir.registry import register_strategy
from cl_fir.strategy import Strategy


@register_strategy("lwf", families=("attribute", "composed"))
class LwF(Strategy):
    summary = "one shared model; distil the previous increment's embeddings of old attributes on new data"

    @dataclass
    class Options(Strategy.Options):
        kd_weight: float = 1.0           # weight of the distillation term
        kd_mode: str = "embedding"       # embedding (1 - cos) | similarity (in-batch relational KL)
        kd_temperature: float = 0.1      # for kd_mode = similarity
        kd_old_attributes: int = 1       # old attributes drawn per image

    def __init__(self, options=None):
        super().__init__(options)
        if self.opts.kd_mode not in ("embedding", "similarity"):
            raise ConfigError(f"--opt kd_mode: expected embedding or similarity, got {self.opts.kd_mode!r}")
        self.old_model = None

    def before_backward(self, ctx):
        old = ctx.old_attributes
        if self.old_model is None or not old or not self.opts.kd_weight:
            return
        inputs = ctx.teacher_inputs(self.old_model)
        kd = 0.0
        for _ in range(self.opts.kd_old_attributes):
            pairs = ctx.distillation_pairs(self.old_model, inputs, ctx.choose(old))
            kd = kd + sum(self._distance(s, t) for s, t in pairs) / len(pairs)
        ctx.add_loss("distillation", self.opts.kd_weight * kd / self.opts.kd_old_attributes)

    def _distance(self, student, teacher):
        if self.opts.kd_mode == "embedding":
            return embedding_distillation(student, teacher)
        return similarity_distillation(student, teacher, self.opts.kd_temperature)

    def after_training_exp(self, ctx):
        self.old_model = self._frozen_copy(ctx.model)

    @staticmethod
    def _frozen_copy(model):
        old = copy.deepcopy(model)
        old.requires_grad_(False)
        return old.eval()

    def state_dict(self):
        return {"old_model": self.old_model.state_dict() if self.old_model is not None else None}

    def load_state_dict(self, state, ctx):
        if state.get("old_model") is not None:
            self.old_model = self._frozen_copy(ctx.model)
            self.old_model.load_state_dict(state["old_model"])
