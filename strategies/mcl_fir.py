"""MCL-FIR as the paper describes it (Xiao & Yamasaki, IEEE TMM 2025).

* One shared image encoder, updated across increments.
* One attribute-attention head per increment (every head exists from the start; the
  attribute routes to its increment's head). Old heads are frozen by default, in eval
  mode so their BatchNorm statistics stay put (``freeze_old_heads=false`` keeps training them).
* Doublet InfoNCE on (anchor, positive), temperature from ``[loss]`` (0.3 by default),
  label-aware (same-value items are not negatives) like every other strategy, so that
  comparisons measure the method rather than the loss; ``mcl_fir_paper`` keeps the paper's
  NT-Xent, in which they are negatives.
* An EMA teacher of the whole model (encoder and heads), updated after **every**
  optimizer step (momentum 0.999), always in eval mode, fed a randomly distorted view
  of the batch. The paper makes it once and lets it follow the student across increments
  (``teacher_reset = none``), so by the end of an increment the weights the increment began
  with hold m^steps of it (0.999^12,500 = 4e-6 in the paper's recipe, 0.95^64 = 0.04 on
  synth-4inc). ``copy`` re-copies the student at each increment's start (the EMA then
  follows it again); ``freeze`` re-copies it and holds it fixed for the increment, so the
  teacher is the model as it was before the increment (the ``mcl_fir_teacher_reset`` ablation).
* Distillation from the teacher into the student through the **old increments' heads**:
  for each image, ``kd_old_attributes`` old attributes are drawn and the student's
  embedding of the image under that attribute is pulled towards the teacher's embedding
  of the augmented view (``kd_loss`` = cosine or mse); in the composed family, through the
  old categories' compositors and the shared image encoder (:meth:`StepContext.distillation_pairs`).
  Pooled-feature distillation (MSE between globally pooled encoder maps, the released code's
  only KD term, weight 1e-4 there) is available with ``feature_kd_weight`` (attribute family).

Where the released code differs (docs/strategies.md): it deep-copies the whole network
per task (see ``mcl_fir_isolated``), never updates the EMA teacher, runs it in train mode,
gives it the un-augmented view, and distils 1e-4 x MSE of pooled features only. The
paper gives no loss weights; ``kd_weight = 1`` on the cosine distance is our default
(tuned on synth-4inc; docs/tuning.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from cl_fir.data.views import random_affine_thetas, random_affine_view
from cl_fir.errors import ConfigError
from cl_fir.losses import embedding_distillation, pooled_feature_distillation
from cl_fir.models.ema import EMATeacher
from cl_fir.registry import register_strategy
from cl_fir.strategy import Strategy

#: when the EMA teacher is made from the student (see the module docstring)
TEACHER_RESETS = ("none", "copy", "freeze")


@register_strategy("mcl_fir", families=("attribute", "composed"))
class MCLFIR(Strategy):
    summary = ("shared encoder, one attention head per increment, doublet InfoNCE, "
               "EMA-teacher distillation through old heads (the paper's design)")

    @dataclass
    class Options(Strategy.Options):
        freeze_old_heads: bool = True    # old increments' heads: no gradient, BatchNorm in eval mode
        ema_momentum: float = 0.999      # teacher <- m * teacher + (1 - m) * student, every step
        kd_weight: float = 1.0           # embedding distillation through old heads (paper: unspecified)
        kd_loss: str = "cosine"          # cosine | mse
        kd_old_attributes: int = 1       # old attributes distilled per image; 0 = all of them
        feature_kd_weight: float = 0.0   # pooled-feature MSE (released code: 1e-4, its only KD term)
        teacher_view: str = "augmented"  # augmented | same (what the released code effectively did)
        view_strength: float = 1.0       # scale of the random affine distortion of the teacher's view
        distill_current: bool = False    # also distil the current increment's head
        teacher_reset: str = "none"      # none (paper) | copy: re-copy the student at each increment | freeze: and hold it

    def __init__(self, options=None):
        super().__init__(options)
        o = self.opts
        if o.kd_loss not in ("cosine", "mse"):
            raise ConfigError(f"--opt kd_loss: expected cosine or mse, got {o.kd_loss!r}")
        if o.teacher_view not in ("augmented", "same"):
            raise ConfigError(f"--opt teacher_view: expected augmented or same, got {o.teacher_view!r}")
        if o.teacher_reset not in TEACHER_RESETS:
            raise ConfigError(f"--opt teacher_reset: expected none, copy or freeze, got {o.teacher_reset!r}")
        self.teacher: EMATeacher | None = None

    # ------------------------------------------------------------ layout

    def head_of_attribute(self, scenario):
        heads = [0] * scenario.meta.num_attributes
        for inc in scenario.increments:
            for a in inc.attributes:
                heads[a] = inc.index
        return heads

    def _old_heads(self, ctx):
        """Heads of earlier increments that no attribute of the current increment uses."""
        heads = self.head_of_attribute(ctx.scenario)
        current = {heads[a] for a in ctx.increment.attributes}
        return [ctx.model.heads[h] for h in sorted({heads[a] for a in ctx.old_attributes} - current)]

    def make_teacher(self, ctx) -> EMATeacher | None:
        """The EMA teacher (None: no teacher and no distillation, as the ``mcl_fir_no_ema`` ablation)."""
        return EMATeacher(ctx.model, self.opts.ema_momentum)

    def _kd_attributes(self, ctx) -> list[int]:
        return ctx.old_attributes + (list(ctx.increment.attributes) if self.opts.distill_current else [])

    # ------------------------------------------------------------ hooks

    def before_training_exp(self, ctx):
        if self.opts.feature_kd_weight and not ctx.family.feature_maps:
            raise ConfigError(f"--opt feature_kd_weight: pooled-feature distillation needs the batch's backbone "
                              f"feature maps, which the {ctx.family.name} family does not keep")
        if self.teacher is None or self.opts.teacher_reset != "none":
            self.teacher = self.make_teacher(ctx)
        if self.opts.freeze_old_heads:
            for head in self._old_heads(ctx):
                head.requires_grad_(False)

    def before_training_epoch(self, ctx):
        if self.opts.freeze_old_heads:   # BatchNorm statistics of old heads must not move either
            for head in self._old_heads(ctx):
                head.eval()

    def before_backward(self, ctx):
        kd_attrs = self._kd_attributes(ctx)
        if self.teacher is None or not kd_attrs or (self.opts.kd_weight == 0 and self.opts.feature_kd_weight == 0):
            return
        teacher = self.teacher.module
        inputs = ctx.teacher_inputs(teacher, lambda images: self._view(ctx, images))
        draws = len(kd_attrs) if self.opts.kd_old_attributes == 0 else self.opts.kd_old_attributes
        kd = 0.0
        for k in range(draws):
            attrs = ctx.choose(kd_attrs[k] if self.opts.kd_old_attributes == 0 else kd_attrs)
            pairs = ctx.distillation_pairs(teacher, inputs, attrs)
            kd = kd + sum(embedding_distillation(s, t, self.opts.kd_loss) for s, t in pairs) / len(pairs)
        ctx.add_loss("distillation", self.opts.kd_weight * kd / draws)
        if self.opts.feature_kd_weight:
            ctx.add_loss("feature_distillation",
                         self.opts.feature_kd_weight * pooled_feature_distillation(ctx.batch.features, inputs))

    def _view(self, ctx, images):
        """The teacher's view of a batch: randomly distorted (``teacher_view = augmented``) or as is."""
        if self.opts.teacher_view != "augmented":
            return images
        return random_affine_view(images, thetas=ctx.draw(lambda m: random_affine_thetas(m, self.opts.view_strength)))

    def after_update(self, ctx):
        if self.teacher is not None and self.opts.teacher_reset != "freeze":
            self.teacher.update(ctx.model)

    # ------------------------------------------------------------ state

    def state_dict(self):
        return {"teacher": self.teacher.state_dict() if self.teacher is not None else None}

    def load_state_dict(self, state, ctx):
        if state.get("teacher") is not None:
            self.teacher = self.make_teacher(ctx)
            self.teacher.load_state_dict(state["teacher"])
