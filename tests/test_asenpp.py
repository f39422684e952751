"""ASEN++: the crop boxes against a plain-Python port of the code's box rule, the fused
score, the two training stages, and runs that resume exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cl_fir.config import ModelConfig
from cl_fir.errors import ConfigError
from cl_fir.models import build_model
from cl_fir.models.asenpp import attention_boxes
from cl_fir.report.run_dir import load_run
from cl_fir.runner import execute_run, resolve_config, resume_run

TINY = dict(backbone="test_resnet", feature_index=3, embed_dim=16, attr_dim=8, arch="asenpp",
            local_backbone="test_resnet", local_size=16)


def _box_rule(fmap: np.ndarray, threshold: float) -> tuple[float, float, float, float]:
    """The released code's rule, one image at a time with Python loops."""
    H, W = fmap.shape
    lo, hi = fmap.min(), fmap.max()
    fg = [[(fmap[y][x] - lo) / max(hi - lo, 1e-12) >= threshold for x in range(W)] for y in range(H)]
    ys = [y for y in range(H) if any(fg[y])]
    xs = [x for x in range(W) if any(fg[y][x] for y in range(H))]
    y0, y1, x0, x1 = min(ys), max(ys) + 1, min(xs), max(xs) + 1
    side = min(max(y1 - y0, x1 - x0), min(H, W))
    top = min(max((y0 + y1) / 2 - side / 2, 0), H - side)
    left = min(max((x0 + x1) / 2 - side / 2, 0), W - side)
    return left, top, left + side, top + side


@pytest.mark.parametrize("threshold", [0.1, 0.4, 0.8])
def test_boxes_follow_the_reference_rule_and_are_square_and_inside(threshold):
    g = torch.Generator().manual_seed(int(threshold * 10))
    attention = torch.rand(12, 4, 4, generator=g) ** 4           # peaky maps
    attention[0] = 0.0
    attention[0, 0, 3] = 1.0                                       # a corner: the box must shift inward
    H, W = 32, 40
    boxes = attention_boxes(attention, (H, W), threshold)
    up = F.interpolate(attention[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    for i in range(12):
        expected = _box_rule(up[i].numpy(), threshold)
        assert boxes[i].tolist() == pytest.approx(expected, abs=1e-4)
        x1, y1, x2, y2 = boxes[i].tolist()
        assert x2 - x1 == pytest.approx(y2 - y1) and 0 <= x1 and 0 <= y1 and x2 <= W and y2 <= H
    full = attention_boxes(attention, (H, H), 0.0)
    assert torch.allclose(full, torch.tensor([0.0, 0.0, H, H]).expand(12, 4))    # threshold 0: the whole image


def test_retrieval_score_is_the_weighted_sum_of_branch_cosines():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY, fusion_weight=0.7), 3, [0, 0, 0]).eval()
    x, a = torch.randn(5, 3, 32, 32), torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        out = model(x, a)
        g, local = model._branches(model.features(x), a)
    assert out.shape == (5, 32) and torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    expected = 0.7 * (g @ g.t()) + 0.3 * (local @ local.t())
    assert torch.allclose(out @ out.t(), expected, atol=1e-5)
    assert model.heads[0].local.attribute_embedding is model.heads[0].glob.attribute_embedding


def test_stage_one_trains_the_global_branch_alone_then_both_with_alignment():
    torch.manual_seed(1)
    model = build_model(ModelConfig(**TINY, global_only_epochs=1), 2, [0, 1]).train()
    x, a = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    model.set_epoch(0)
    out = model(x, a)
    assert [w for w, _ in model.training_branches] == [1.0] and not model.aux_losses
    assert torch.equal(out[:, 16:], torch.zeros(4, 16))          # retrieval on the global branch alone
    out.sum().backward()
    assert all(p.grad is None for p in model.local_backbone.parameters())
    model.set_epoch(1)
    model(x, a)
    assert [w for w, _ in model.training_branches] == [1.0, 0.1] and len(model.aux_losses) == 1
    model.eval()
    model(x, a)
    assert model.training_branches is None


def test_asenpp_needs_the_attention_head():
    with pytest.raises(ConfigError, match="needs model.head = 'asen'"):
        build_model(ModelConfig(**{**TINY, "head": "crt"}), 2, [0, 0])
    with pytest.raises(ConfigError, match="model.arch"):
        build_model(ModelConfig(**{**TINY, "arch": "asen++"}), 2, [0, 0])


@pytest.mark.parametrize("strategy", ["finetune", "mcl_fir"])
def test_asenpp_runs_and_resumes_exactly(strategy, tiny_scenario, tmp_path):
    over = {f"model.{k}": v for k, v in TINY.items() if k not in ("backbone", "feature_index", "embed_dim", "attr_dim")}
    over.update({"model.global_only_epochs": 1, "train.epochs": 2})
    full = execute_run(resolve_config(strategy, str(tiny_scenario), dict(over), output_dir=str(tmp_path / "a"), seed=5))
    split = execute_run(resolve_config(strategy, str(tiny_scenario), dict(over), output_dir=str(tmp_path / "b"),
                                       seed=5), stop_after=1)
    resume_run(split)
    assert (split / "matrix.csv").read_text() == (full / "matrix.csv").read_text()
    run = load_run(full)
    assert run.complete and np.isfinite(run.matrix[-1]).all()


@pytest.mark.parametrize("strategy, copy_of", [("lwf", lambda s: s.old_model), ("modc", lambda s: s.old_model),
                                               ("mcl_fir", lambda s: s.teacher.module)])
def test_teachers_and_old_models_are_in_the_students_phase(strategy, copy_of, tiny_scenario, monkeypatch):
    """In global-only epochs a copy with its local branch active embeds differently from the
    student with the same weights (cos 0.78 measured), a floor under the distillation."""
    from cl_fir.registry import get_strategy_class
    from cl_fir.runner import build_loop

    cls = get_strategy_class(strategy)
    phases = []
    original = cls.after_forward

    def after_forward(self, ctx):
        if ctx.increment.index > 0:
            phases.append((ctx.model.local_active, copy_of(self).local_active))
        original(self, ctx)

    monkeypatch.setattr(cls, "after_forward", after_forward)
    over = {f"model.{k}": v for k, v in TINY.items() if k not in ("backbone", "feature_index", "embed_dim", "attr_dim")}
    over.update({"model.global_only_epochs": 1, "train.epochs": 2})
    loop = build_loop(resolve_config(strategy, str(tiny_scenario), over, seed=5))
    loop.run()
    assert {student for student, _ in phases} == {False, True}
    assert all(student == copy for student, copy in phases), phases
    model, copy = loop.model, copy_of(loop.strategy)
    x, a = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    copy.load_state_dict(model.state_dict())
    model.eval()
    loop.set_model_epoch(0)
    with torch.no_grad():
        torch.testing.assert_close(model(x, a), copy(x, a))
