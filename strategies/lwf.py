"""Learning without Forgetting for embeddings (Li & Hoiem 2017, adapted to retrieval).

One shared model, as ``finetune``. At the end of each increment a frozen copy of the
model is kept. While training a new increment, each image is also embedded under
``kd_old_attributes`` randomly drawn old attributes by both the frozen copy and the
student, and the student is pulled towards the copy: ``kd_mode = embedding`` (1 - cos
of each embedding) or ``similarity`` (KL between the in-batch similarity distributions,
i.e. the relational structure of the old embedding space). Avalanche's LwF plugin does a
softmax-KL over embedding dimensions, which is meaningless for retrieval
(it assumes class logits); this is the embedding version.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from cl_fir.composed_distillation import composed_pairs
from cl_fir.errors import ConfigError
from cl_fir.losses import embedding_distillation, similarity_distillation
from cl_fir.registry import register_strategy
from cl_fir.strategy import Strategy


@register_strategy("lwf", families=("attribute", "composed"))
class LwF(Strategy):
    summary = "one shared model; distil the previous increment's embeddings of old attributes on new data"

    @dataclass
    class Options:
        label_aware: bool = True         # in-batch items with the anchor's value are not negatives
        kd_weight: float = 1.0           # weight of the distillation term
        kd_mode: str = "embedding"       # embedding (1 - cos) | similarity (in-batch relational KL)
        kd_temperature: float = 0.1      # for kd_mode = similarity
        kd_old_attributes: int = 1       # old attributes drawn per image

    def __init__(self, options=None):
        super().__init__(options)
        if self.opts.kd_mode not in ("embedding", "similarity"):
            raise ConfigError(f"--opt kd_mode: expected embedding or similarity, got {self.opts.kd_mode!r}")
        self.old_model = None

    def before_backward(self, loop):
        old = self.old_attributes(loop)
        if self.old_model is None or not old or not self.opts.kd_weight:
            return
        if loop.scenario.protocol == "composed":
            self._composed_kd(loop, old)
            return
        x = loop.mb_x
        kd = loop.mb_output.new_zeros(())
        for _ in range(self.opts.kd_old_attributes):
            attrs = loop.per_sample_choice(old)
            with loop.setup.autocast():
                with torch.no_grad():
                    target = self.old_model(x, attrs)
                student = loop.model.embed(loop.mb_features, attrs)
            if self.opts.kd_mode == "embedding":
                kd = kd + embedding_distillation(student, target)
            else:
                kd = kd + similarity_distillation(student, target, self.opts.kd_temperature)
            loop.cost.add_forward_only(x.shape[0])
            loop.cost.add_head_passes(x.shape[0])
        loop.loss = loop.loss + self.opts.kd_weight * kd / self.opts.kd_old_attributes

    def _composed_kd(self, loop, old):
        """Queries under old categories' compositors and targets, pulled towards the frozen copy."""
        attrs = loop.per_sample_choice(old)
        kd = loop.mb_output.new_zeros(())
        for student, target in composed_pairs(loop, self.old_model, attrs, loop.mb_x, loop.mb_target_x):
            if self.opts.kd_mode == "embedding":
                kd = kd + embedding_distillation(student, target)
            else:
                kd = kd + similarity_distillation(student, target, self.opts.kd_temperature)
        loop.loss = loop.loss + self.opts.kd_weight * kd / 2

    def after_training_exp(self, loop):
        self.old_model = self._frozen_copy(loop.model)

    @staticmethod
    def _frozen_copy(model):
        old = copy.deepcopy(model)
        old.requires_grad_(False)
        return old.eval()

    def state_dict(self):
        return {"old_model": self.old_model.state_dict() if self.old_model is not None else None}

    def load_state_dict(self, state, loop):
        if state.get("old_model") is not None:
            self.old_model = self._frozen_copy(loop.model)
            self.old_model.load_state_dict(state["old_model"])
