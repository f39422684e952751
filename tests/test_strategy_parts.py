"""Building blocks of the strategies (EMA, views, distillation) and each strategy's own behaviour."""

from __future__ import annotations

from types import SimpleNamespace


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cl_fir.data.views import random_affine_view
from cl_fir.errors import ConfigError
from cl_fir.losses import embedding_distillation, pooled_feature_distillation, similarity_distillation
from cl_fir.models.ema import EMATeacher
from cl_fir.runner import build_loop, resolve_config

# ------------------------------------------------------------------ building blocks


def test_ema_teacher_follows_the_student():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    teacher = EMATeacher(student, momentum=0.9)
    t0 = teacher.module[0].weight.clone()
    with torch.no_grad():
        student[0].weight.add_(1.0)
        student(torch.randn(8, 3))           # moves BN running stats and num_batches_tracked
    teacher.update(student)
    torch.testing.assert_close(teacher.module[0].weight, 0.9 * t0 + 0.1 * student[0].weight)
    torch.testing.assert_close(teacher.module[1].running_mean, 0.1 * student[1].running_mean)
    assert teacher.module[1].num_batches_tracked == student[1].num_batches_tracked
    assert not teacher.module.training and not any(p.requires_grad for p in teacher.module.parameters())
    assert teacher.updates == 1
    with pytest.raises(ValueError):
        EMATeacher(student, momentum=1.0)


def test_augmented_view_is_a_seeded_per_sample_warp():
    x = torch.randn(6, 3, 16, 16)
    torch.manual_seed(1)
    a = random_affine_view(x)
    torch.manual_seed(1)
    b = random_affine_view(x)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.allclose(a, x)
    flips_only = random_affine_view(x, strength=0.0)            # no warp: each sample flipped or not
    for i in range(6):
        assert torch.allclose(flips_only[i], x[i], atol=1e-5) or torch.allclose(flips_only[i], x[i].flip(-1), atol=1e-5)


def test_distillation_losses_against_explicit_formulas():
    torch.manual_seed(2)
    s, t = F.normalize(torch.randn(5, 4), dim=1), F.normalize(torch.randn(5, 4), dim=1)
    expected = sum(1 - float(s[i] @ t[i]) for i in range(5)) / 5
    assert float(embedding_distillation(s, t)) == pytest.approx(expected, abs=1e-6)
    assert float(embedding_distillation(s, t, "mse")) == pytest.approx(float(((s - t) ** 2).mean()), abs=1e-6)
    assert float(embedding_distillation(s, s)) == pytest.approx(0.0, abs=1e-6)
    kl = 0.0
    for i in range(5):
        others = [j for j in range(5) if j != i]
        ps = torch.softmax(torch.tensor([float(s[i] @ s[j]) / 0.5 for j in others]), 0)
        pt = torch.softmax(torch.tensor([float(t[i] @ t[j]) / 0.5 for j in others]), 0)
        kl += float((pt * (pt.log() - ps.log())).sum())
    assert float(similarity_distillation(s, t, 0.5)) == pytest.approx(kl / 5, abs=1e-5)
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert float(pooled_feature_distillation(a, b)) == pytest.approx(
        float(((a.mean((2, 3)) - b.mean((2, 3))) ** 2).mean()), abs=1e-6)


# ------------------------------------------------------------------ strategies on the tiny scenario


def loop_for(name, scenario, **opts):
    cfg = resolve_config(name, str(scenario), strategy_options={k: str(v) for k, v in opts.items()})
    return build_loop(cfg)


def state_of(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_mcl_fir_heads_routing_frozen_old_head_and_live_teacher(tiny_scenario):
    loop = loop_for("mcl_fir", tiny_scenario, ema_momentum=0.5)
    model = loop.model
    assert len(model.heads) == 2 and model.head_of_attribute.tolist()[:4] == [0, 0, 1, 1]
    loop.run(0, 1)
    head0 = state_of(model.heads[0])
    teacher = loop.strategy.teacher
    assert teacher.updates == loop.iteration > 0
    loop.run(1, 2)
    after = state_of(model.heads[0])
    assert all(torch.equal(head0[k], after[k]) for k in head0), "old head (weights or BN stats) changed"
    t_bb, s_bb = teacher.module.backbone.state_dict(), model.backbone.state_dict()
    init = loop.initial_state
    key = next(k for k in t_bb if k.endswith("weight"))
    assert not torch.equal(t_bb[key], init["backbone." + key])   # the EMA really moved ...
    assert not torch.equal(t_bb[key], s_bb[key])                  # ... and lags the student
    c = loop.cost.increments
    assert c[0].extra_forward_images == 0 and c[1].extra_forward_images == c[1].images_forwarded
    assert c[1].extra_head_passes == 2 * c[1].images_forwarded   # teacher head + student head per image


@pytest.mark.parametrize("reset", ["copy", "freeze"])
def test_mcl_fir_teacher_reset_re_anchors_the_teacher_at_each_increment(reset, tiny_scenario, monkeypatch):
    """``copy``: the teacher starts each increment as the student and follows it; ``freeze``: it
    stays the model as it was when the increment began. With ``none`` (mcl_fir's default) it
    follows the student across increments (see the test above)."""
    loop = loop_for("mcl_fir", tiny_scenario, ema_momentum=0.5, teacher_reset=reset)
    loop.run(0, 1)
    start = state_of(loop.model)
    teachers = []
    original = type(loop.strategy).before_training_epoch

    def spy(self, ctx):
        teachers.append(state_of(self.teacher.module))
        original(self, ctx)

    monkeypatch.setattr(type(loop.strategy), "before_training_epoch", spy)
    steps_before = loop.iteration
    loop.run(1, 2)
    assert all(torch.equal(teachers[0][k], v) for k, v in start.items())        # a copy of the student
    teacher = loop.strategy.teacher
    final = state_of(teacher.module)
    if reset == "freeze":
        assert teacher.updates == 0 and all(torch.equal(final[k], v) for k, v in start.items())
    else:
        assert teacher.updates == loop.iteration - steps_before > 0
        assert not all(torch.equal(final[k], v) for k, v in start.items())


def test_mcl_fir_teacher_reset_ablation_is_mcl_fir_with_a_frozen_teacher():
    from cl_fir.registry import get_strategy_class

    cls = get_strategy_class("mcl_fir_teacher_reset")
    assert cls.Options().teacher_reset == "freeze" and issubclass(cls, get_strategy_class("mcl_fir"))
    with pytest.raises(ConfigError, match="teacher_reset"):
        cls(cls.parse_options({"teacher_reset": "reset"}))


def test_mcl_fir_rejects_bad_options(tiny_scenario):
    with pytest.raises(ConfigError, match="kd_loss"):
        loop_for("mcl_fir", tiny_scenario, kd_loss="l1")


def test_isolated_networks_do_not_share_or_change(tiny_scenario):
    loop = loop_for("mcl_fir_isolated", tiny_scenario)
    nets = loop.model.networks
    assert len(nets) == 2
    single = sum(p.numel() for p in nets[0].parameters())
    assert loop.cost.parameters == 2 * single                     # memory grows with increments
    torch.testing.assert_close(state_of(nets[0])["backbone.body.conv1.0.weight"],
                               state_of(nets[1])["backbone.body.conv1.0.weight"])   # same initial copy
    loop.run(0, 1)
    net0 = state_of(nets[0])
    loop.run(1, 2)
    assert all(torch.equal(net0[k], v) for k, v in state_of(nets[0]).items())
    assert loop.cost.increments[1].extra_forward_images == loop.cost.increments[1].images_forwarded


def test_lwf_keeps_a_frozen_copy_and_distils(tiny_scenario):
    loop = loop_for("lwf", tiny_scenario)
    loop.run(0, 1)
    old = loop.strategy.old_model
    assert old is not None and not old.training and not any(p.requires_grad for p in old.parameters())
    frozen = state_of(old)
    loop.run(1, 2)
    assert loop.cost.increments[1].extra_forward_images == loop.cost.increments[1].images_forwarded
    assert all(torch.equal(frozen[k], v) for k, v in state_of(old).items())   # used as a teacher, never trained
    assert loop.strategy.old_model is not old                                  # replaced by the newest copy


def test_ewc_fisher_anchor_and_penalty(tiny_scenario):
    loop = loop_for("ewc", tiny_scenario, fisher_batches=2)
    loop.run(0, 1)
    ewc = loop.strategy
    fisher, anchor = ewc.fishers[0], ewc.anchors[0]
    assert fisher and set(fisher) == set(anchor)
    assert all((f >= 0).all() for f in fisher.values()) and any(f.sum() > 0 for f in fisher.values())
    # the penalty is zero at the anchor and positive away from it
    ctx = loop.context
    ctx.batch, ctx.loss, ctx.loss_terms = SimpleNamespace(outputs=torch.zeros(1)), None, {}
    ewc.before_backward(ctx)
    assert float(ctx.loss_terms["ewc"].detach()) == 0.0
    name = next(n for n, f in fisher.items() if f.sum() > 0)
    with torch.no_grad():
        dict(loop.model.named_parameters())[name].add_(1.0)
    ctx.loss, ctx.loss_terms = None, {}
    ewc.before_backward(ctx)
    assert float(ctx.loss.detach()) == pytest.approx(0.5 * ewc.opts.ewc_lambda * float(fisher[name].sum()), rel=1e-4)
    c = loop.cost.increments[0]
    assert c.images_backpropagated > c.images_forwarded > c.optimizer_steps * 16


def test_replay_buffer_is_class_balanced_and_mixed_into_batches(tiny_scenario):
    loop = loop_for("replay", tiny_scenario, buffer_size=32, replay_fraction=0.5)
    loop.run(0, 1)
    buf = loop.strategy.buffer
    sizes = {c: len(v) for c, v in buf.items()}
    assert sum(sizes.values()) <= 32 and len(set(sizes.values())) == 1 and min(sizes.values()) >= 2
    assert loop.cost.increments[0].stored_images == sum(sizes.values())
    loop.increment = loop.scenario.increments[1]
    dataset, sampler = loop.strategy.training_batches(loop.context, 0)
    n_first = len(loop.scenario.increments[0].train_table)
    batch = next(iter(sampler))
    B = loop.cfg.train.batch_size
    assert len(batch) == 2 * B
    old_rows = [i for i in batch if i < n_first]
    assert len(old_rows) == 2 * round(B * 0.5)                   # anchors and positives from the buffer
    with pytest.raises(ConfigError, match="buffer_size"):
        bad = loop_for("replay", tiny_scenario, buffer_size=4)
        bad.run(0, 1)


def test_static_restarts_from_the_initial_weights(tiny_scenario):
    loop = loop_for("static", tiny_scenario)
    loop.run(0, 1)
    assert loop.strategy.training_increments(loop.context) == [0]
    loop.increment = loop.scenario.increments[1]
    assert loop.strategy.training_increments(loop.context) == [0, 1]
    loop.strategy.before_training_exp(loop.context)
    now = loop.model.state_dict()
    assert all(torch.equal(now[k].cpu(), v) for k, v in loop.initial_state.items())
