"""EWC: the empirical Fisher (mean of per-sample squared gradients) against an explicit
per-sample loop; the per-sample loss terms against the batch losses; Kirkpatrick's per-task
penalty and online EWC; no Fisher after the last increment."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cl_fir.engine.seeding import Stream
from cl_fir.errors import ConfigError
from cl_fir.losses import (batch_classification_loss, batch_classification_terms, doublet_infonce,
                           doublet_infonce_terms, multi_similarity_loss, multi_similarity_terms,
                           uncertainty_regularised_loss, uncertainty_regularised_terms)
from cl_fir.registry import get_strategy_class
from cl_fir.runner import build_loop, resolve_config


def test_per_sample_terms_average_to_the_batch_losses():
    g = torch.Generator().manual_seed(0)
    a, p = (F.normalize(torch.randn(6, 5, generator=g), dim=1) for _ in range(2))
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    for lab in (None, labels):
        terms = doublet_infonce_terms(a, p, lab, 0.2)
        assert terms.shape == (6,)
        assert float(terms.mean()) == pytest.approx(float(doublet_infonce(a, p, lab, 0.2)), rel=1e-6)
    z, ms_labels = torch.cat([a, p]), labels.repeat(2)
    terms = multi_similarity_terms(z, ms_labels, base=0.5)
    assert terms.shape == (6,)
    assert float(terms.mean()) == pytest.approx(float(multi_similarity_loss(z, ms_labels, base=0.5)), rel=1e-6)
    q, t = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    assert float(batch_classification_terms(q, t).mean()) == pytest.approx(float(batch_classification_loss(q, t)),
                                                                           rel=1e-6)
    noise = (torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g))
    for form in ("code", "paper"):
        terms = uncertainty_regularised_terms(q, t, 0.4, form, noise=noise)
        whole = uncertainty_regularised_loss(q, t, 0.4, form, noise=noise)
        assert float(terms.mean()) == pytest.approx(float(whole), rel=1e-5)


def _loop(scenario, **opts):
    return build_loop(resolve_config("ewc", str(scenario), strategy_options={k: str(v) for k, v in opts.items()},
                                     seed=3))


def _fisher_seeds(loop):
    after = loop.cfg.train.epochs                        # EWC's seeds: the "epoch" after the increment's last
    return loop.epoch_seed(after, Stream.FISHER_BATCHES), loop.epoch_seed(after, Stream.FISHER_AUGMENTATION)


def test_fisher_is_the_mean_of_per_sample_squared_gradients(tiny_scenario):
    loop = _loop(tiny_scenario, fisher_batches=2)
    loop.run(0, 1)
    ewc, ctx = loop.strategy, loop.context
    assert len(ewc.fishers) == 1 and len(ewc.anchors) == 1
    fisher = ewc.fishers[0]
    params = {n: p for n, p in loop.model.named_parameters() if p.requires_grad}
    # the oracle: every sample's term back-propagated alone, from a forward of its batch of its own
    loop.model.eval()
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    batch_mean = {n: torch.zeros_like(p) for n, p in params.items()}
    samples = batches = 0
    B = loop.cfg.train.batch_size
    for batch in loop.seeded_pass_loader([0], 2, B, _fisher_seeds(loop)):
        for i in range(B):
            loop.model.zero_grad(set_to_none=True)
            loop.forward_batch(batch)
            ewc.sample_losses(ctx)[i].backward()
            for n, p in params.items():
                if p.grad is not None:
                    expected[n] += p.grad ** 2
        loop.model.zero_grad(set_to_none=True)
        loop.forward_batch(batch)
        ewc.criterion(ctx).backward()
        for n, p in params.items():
            if p.grad is not None:
                batch_mean[n] += p.grad ** 2
        samples += B
        batches += 1
    loop.model.zero_grad(set_to_none=True)
    assert batches == 2 and set(fisher) == set(params)
    for n in params:
        torch.testing.assert_close(fisher[n], expected[n] / samples, rtol=1e-4, atol=1e-12)
    # not the square of each batch's mean gradient (what was estimated before): far larger
    total = sum(float(f.sum()) for f in fisher.values())
    squared_means = sum(float(f.sum()) for f in batch_mean.values()) / batches
    assert total > 2 * squared_means
    c = loop.cost.increments[0]
    fisher_images = 2 * 2 * B                                          # 2 batches of 2B images
    assert c.images_forwarded == c.optimizer_steps * fisher_images // 2 + fisher_images
    assert c.images_backpropagated - c.optimizer_steps * fisher_images // 2 == fisher_images * B


def test_no_fisher_after_the_last_increment(tiny_scenario):
    loop = _loop(tiny_scenario, fisher_batches=1)
    loop.run()
    assert len(loop.strategy.fishers) == 1                             # after increment 1 of 2 only
    last = loop.cost.increments[-1]
    assert last.images_backpropagated == last.images_forwarded == 2 * loop.cfg.train.batch_size * last.optimizer_steps


class _Stub:
    """Just enough of a step context for EWC's penalty and its bookkeeping after an increment."""

    def __init__(self, increments: int):
        self.model = nn.Linear(2, 1, bias=False)
        self.scenario = SimpleNamespace(increments=list(range(increments)))
        self.increment = SimpleNamespace(index=0)
        self.batch = SimpleNamespace(outputs=torch.zeros(1))
        self.loss = torch.zeros(())

    def add_loss(self, name, value):
        self.loss = self.loss + value


def _finish_increments(penalty, fishers, anchors, **opts):
    cls = get_strategy_class("ewc")
    ewc = cls(cls.parse_options({"penalty": penalty, "ewc_lambda": 2.0, **opts}))
    ctx = _Stub(len(fishers))               # the scenario ends with the last increment given
    for t, (f, a) in enumerate(zip(fishers, anchors)):
        ctx.increment.index = t
        with torch.no_grad():
            ctx.model.weight.copy_(a)
        ewc.estimate_fisher = lambda _ctx, f=f: {"weight": f.clone()}
        ewc.after_training_exp(ctx)
    return ewc, ctx


def test_per_task_penalty_keeps_an_anchor_and_a_fisher_per_increment_and_online_ewc_one():
    fishers = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.5]]), torch.tensor([[9.0, 9.0]])]
    anchors = [torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, -1.0]]), torch.tensor([[5.0, 5.0]])]
    theta = torch.tensor([[1.0, 1.0]])
    ewc, ctx = _finish_increments("per_task", fishers, anchors)
    assert len(ewc.fishers) == 2                                       # nothing after the last increment
    with torch.no_grad():
        ctx.model.weight.copy_(theta)
    ewc.before_backward(ctx)
    expected = sum(float((f * (theta - a) ** 2).sum()) for f, a in zip(fishers[:2], anchors[:2]))
    assert float(ctx.loss.detach()) == pytest.approx(0.5 * 2.0 * expected)

    online, ctx = _finish_increments("online", fishers, anchors, fisher_decay=0.5)
    assert len(online.fishers) == 1
    torch.testing.assert_close(online.fishers[0]["weight"], 0.5 * fishers[0] + fishers[1])   # not the last one
    torch.testing.assert_close(online.anchors[0]["weight"], anchors[1])
    with torch.no_grad():
        ctx.model.weight.copy_(theta)
    online.before_backward(ctx)
    expected = float(((0.5 * fishers[0] + fishers[1]) * (theta - anchors[1]) ** 2).sum())
    assert float(ctx.loss.detach()) == pytest.approx(0.5 * 2.0 * expected)


def test_ewc_refuses_a_decay_without_online_ewc():
    cls = get_strategy_class("ewc")
    with pytest.raises(ConfigError, match="fisher_decay=0.9 applies to penalty=online"):
        cls(cls.parse_options({"fisher_decay": 0.9}))
    with pytest.raises(ConfigError, match="--opt penalty"):
        cls(cls.parse_options({"penalty": "kirkpatrick"}))


def test_fisher_batches_can_be_smaller_than_training_batches(tiny_scenario):
    """Each sample's backward runs through its whole batch: fisher_batch_size bounds that cost."""
    loop = _loop(tiny_scenario, fisher_batches=3, fisher_batch_size=2)
    loop.increment = loop.scenario.increments[0]
    loop.cost.start(0)
    sizes, forward = [], loop.forward_batch
    loop.forward_batch = lambda raw: sizes.append(len(raw[1])) or forward(raw)
    loop.strategy.estimate_fisher(loop.context)
    assert sizes == [4, 4, 4]                                   # 2 doublets per Fisher batch, 3 batches
    cls = get_strategy_class("ewc")
    with pytest.raises(ConfigError, match="fisher_batch_size"):
        cls(cls.parse_options({"fisher_batch_size": 1}))
