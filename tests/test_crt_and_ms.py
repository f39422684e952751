"""The CRT head and the multi-similarity loss against explicit loops; both in real runs."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from cl_fir.errors import ConfigError
from cl_fir.losses import multi_similarity_loss
from cl_fir.models.crt_head import CodedResidualBranch, CodedResidualHead, similarity_consistency
from cl_fir.runner import execute_run, resolve_config, resume_run


def test_coded_residuals_match_the_definition():
    torch.manual_seed(0)
    branch = CodedResidualBranch(dim=4, num_prototypes=3, out_dim=5)
    x = torch.randn(2, 6, 4)
    got = branch.coded_residuals(x)
    for b in range(2):
        for k in range(3):
            c = branch.prototypes[k]
            expected = sum(F.softplus(x[b, j] @ c) * (x[b, j] - c) for j in range(6))
            torch.testing.assert_close(got[b, k], expected, rtol=1e-5, atol=1e-5)
    mean = CodedResidualBranch(4, 3, 5, residual="mean")
    mean.load_state_dict(branch.state_dict())
    torch.testing.assert_close(mean.coded_residuals(x), got / 6)


def test_embedding_networks_are_per_prototype_and_averaged():
    torch.manual_seed(1)
    branch = CodedResidualBranch(dim=4, num_prototypes=3, out_dim=5)
    x = torch.randn(2, 6, 4)
    r = branch.coded_residuals(x)
    outs = [F.gelu(r[:, k] @ branch.w1[k] + branch.b1[k]) @ branch.w2[k] + branch.b2[k] for k in range(3)]
    torch.testing.assert_close(branch(x), F.normalize(sum(outs) / 3, dim=1))


def test_diversity_and_consistency_losses():
    torch.manual_seed(2)
    branch = CodedResidualBranch(dim=4, num_prototypes=3, out_dim=5)
    c = F.normalize(branch.prototypes.detach(), dim=1)
    pairs = [abs(float(c[i] @ c[j])) for i in range(3) for j in range(3) if i != j]
    assert math.isclose(float(branch.diversity_loss().detach()), sum(pairs) / 6, rel_tol=1e-5)
    f1, f2 = torch.randn(4, 5), torch.randn(4, 3)
    s1 = [[float(F.cosine_similarity(f1[i], f1[j], dim=0)) for j in range(4)] for i in range(4)]
    s2 = [[float(F.cosine_similarity(f2[i], f2[j], dim=0)) for j in range(4)] for i in range(4)]
    expected = sum(abs(s1[i][j] - s2[i][j]) for i in range(4) for j in range(4)) / 16
    assert math.isclose(float(similarity_consistency(f1, f2)), expected, rel_tol=1e-5)


def test_crt_head_is_conditioned_and_records_auxiliary_losses_only_in_training():
    torch.manual_seed(3)
    head = CodedResidualHead(8, num_attributes=3, embed_dim=6, attr_dim=4, num_prototypes=4, second_prototypes=2,
                             second_dim=5)
    fmap = torch.randn(2, 8, 3, 3)
    out0 = head(fmap, torch.tensor([0, 0]))
    out1 = head(fmap, torch.tensor([1, 1]))
    assert out0.shape == (2, 6) and torch.allclose(out0.norm(dim=1), torch.ones(2))
    assert not torch.allclose(out0, out1)
    assert len(head.aux_losses) == 2 and head.aux_losses[0].requires_grad
    head.eval()
    head.aux_losses.clear()
    head(fmap, torch.tensor([0, 1]))
    assert head.aux_losses == []


def _ms_oracle(z, labels, alpha=2.0, beta=50.0, base=1.0, eps=0.1):
    z = F.normalize(z, dim=1)
    n = len(labels)
    total = 0.0
    for i in range(n):
        sims = [float(z[i] @ z[j]) for j in range(n)]
        pos = [sims[j] for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [sims[j] for j in range(n) if labels[j] != labels[i]]
        if not pos or not neg:
            continue
        pos_kept = [s for s in pos if s - eps < max(neg)]
        neg_kept = [s for s in neg if s + eps > min(pos)]
        if not pos_kept or not neg_kept:
            continue
        total += math.log(1 + sum(math.exp(-alpha * (s - base)) for s in pos_kept)) / alpha
        total += math.log(1 + sum(math.exp(beta * (s - base)) for s in neg_kept)) / beta
    return total / n


def test_multi_similarity_loss_matches_a_loop():
    torch.manual_seed(4)
    for _ in range(10):
        z = torch.randn(10, 4)
        labels = torch.randint(0, 3, (10,))
        assert math.isclose(float(multi_similarity_loss(z, labels)), _ms_oracle(z, labels.tolist()),
                            rel_tol=1e-5, abs_tol=1e-7)


@pytest.mark.parametrize("strategy, metric", [("finetune", "multi_similarity"), ("mcl_fir", "infonce")])
def test_runs_with_the_crt_head_resume_exactly(strategy, metric, tiny_scenario, tmp_path):
    kw = dict(overrides={"model.head": "crt", "model.head_kwargs": {"num_prototypes": 4, "second_prototypes": 3,
                                                                      "second_dim": 8},
                         "loss.metric": metric}, seed=5)
    full = execute_run(resolve_config(strategy, str(tiny_scenario), output_dir=str(tmp_path / "a"), **kw))
    split = execute_run(resolve_config(strategy, str(tiny_scenario), output_dir=str(tmp_path / "b"), **kw),
                        stop_after=1)
    resume_run(split)
    assert (split / "matrix.csv").read_text() == (full / "matrix.csv").read_text()
    config = json.loads((full / "config.json").read_text())
    assert config["model"]["head"] == "crt" and config["loss"]["metric"] == metric


def test_bad_head_settings(tiny_scenario):
    from cl_fir.runner import build_loop

    with pytest.raises(ConfigError, match="model.head .--head.: expected one of asen, crt"):
        build_loop(resolve_config("finetune", str(tiny_scenario), {"model.head": "dnc2"}))
    with pytest.raises(ConfigError, match="model.head_kwargs for head 'crt'"):
        build_loop(resolve_config("finetune", str(tiny_scenario), {"model.head": "crt",
                                                                    "model.head_kwargs": {"prototypes": 3}}))
    with pytest.raises(ConfigError, match="loss.metric"):
        resolve_config("finetune", str(tiny_scenario), {"loss.metric": "triplet"})


@pytest.mark.parametrize("strategy, opts", [("lwf", {"kd_old_attributes": 2}), ("mcl_fir_single_head", {}),
                                            ("modc", {})])
def test_head_auxiliary_loss_counts_once_when_strategies_embed_again(strategy, opts, tiny_scenario, monkeypatch):
    """lwf, mcl_fir_single_head and modc embed the batch again through the student's head
    (distillation or pseudo-labels under old attributes); only the student's own forward of
    the batch adds the head's auxiliary loss, once."""
    from cl_fir.registry import get_strategy_class
    from cl_fir.runner import build_loop

    cls = get_strategy_class(strategy)
    seen = []
    original_before, original_after = cls.before_backward, cls.after_backward

    def before_backward(self, ctx):
        original_before(self, ctx)
        head = ctx.model.heads[0]
        expected = head.diversity_weight * head.branch.diversity_loss()
        seen.append([ctx.increment.index, float(ctx.loss.detach()), float(expected.detach())])

    def after_backward(self, ctx):
        seen[-1].append(float(ctx.loss.detach()))
        original_after(self, ctx)

    monkeypatch.setattr(cls, "before_backward", before_backward)
    monkeypatch.setattr(cls, "after_backward", after_backward)
    cfg = resolve_config(strategy, str(tiny_scenario), {"model.head": "crt",
                                                         "model.head_kwargs": {"num_prototypes": 4}},
                         strategy_options={k: str(v) for k, v in opts.items()}, seed=2)
    loop = build_loop(cfg)
    loop.run()
    assert {inc for inc, *_ in seen} == {0, 1}
    for inc, before, expected, after in seen:
        assert after - before == pytest.approx(expected, rel=1e-4, abs=1e-6), (inc, before, expected, after)
