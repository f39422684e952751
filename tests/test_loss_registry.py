"""Metric losses as registered objects: a new loss is one class in one file, chosen with
``[loss] metric`` and configured through its ``Options`` (``[loss] options`` for its own fields);
wrong names and options are refused in one line."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from cl_fir.config import LossConfig
from cl_fir.errors import ConfigError
from cl_fir.losses import LOSSES, MetricLoss, build_loss, loss_names, register_loss
from cl_fir.report.run_dir import load_run
from cl_fir.runner import execute_run, resolve_config


@pytest.fixture
def margin_loss():
    @register_loss("cosine_margin")
    class CosineMargin(MetricLoss):
        """Each pair's distance above a margin (no negatives): the smallest possible loss file."""

        @dataclass
        class Options:
            margin: float = 0.1          # pairs closer than this cost nothing

        def check(self):
            self.require(0 <= self.opts.margin < 2, "options.margin", "a number in [0, 2)", self.opts.margin)

        def terms(self, embeddings, labels=None, *, epoch=0, epochs=1):
            B = embeddings.shape[0] // 2
            return torch.relu(1 - (embeddings[:B] * embeddings[B:]).sum(1) - self.opts.margin)

        def __call__(self, embeddings, labels=None, *, epoch=0, epochs=1):
            return self.terms(embeddings, labels).mean()

    yield CosineMargin
    LOSSES.pop(("attribute", "cosine_margin"))


def test_the_shipped_losses_are_registered_per_family():
    assert {"infonce", "multi_similarity"} <= set(loss_names("attribute"))
    assert {"infonce", "uncertainty"} <= set(loss_names("composed"))
    loss = build_loss("attribute", LossConfig(temperature=0.2))
    assert loss.opts.temperature == 0.2                    # a field named like a [loss] key reads it


def test_a_registered_loss_is_chosen_configured_and_trained_with(margin_loss, tiny_scenario, tmp_path):
    loss = build_loss("attribute", LossConfig(metric="cosine_margin", options={"margin": 0.3}))
    assert isinstance(loss, margin_loss) and loss.opts.margin == 0.3
    z = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    assert float(loss(z)) == pytest.approx(float(loss.terms(z).mean()))
    with pytest.raises(ConfigError, match="loss.options .loss 'cosine_margin'.*nope"):
        build_loss("attribute", LossConfig(metric="cosine_margin", options={"nope": 1}))
    with pytest.raises(ConfigError, match=r"loss.options.margin: expected a number in \[0, 2\), got 5"):
        build_loss("attribute", LossConfig(metric="cosine_margin", options={"margin": 5}))
    with pytest.raises(ConfigError, match="loss.metric: expected .*cosine_margin.*infonce.* got 'nope'"):
        resolve_config("finetune", str(tiny_scenario), {"loss.metric": "nope"})
    cfg = resolve_config("finetune", str(tiny_scenario), {"loss.metric": "cosine_margin", "train.epochs": 1},
                         output_dir=str(tmp_path), seed=1)
    cfg.loss.options = {"margin": 0.2}
    run = load_run(execute_run(cfg))
    assert run.complete and torch.isfinite(torch.as_tensor(run.matrix[1])).all()
