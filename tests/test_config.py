"""Configuration precedence, coercion and validation messages."""

from __future__ import annotations

import pytest

from cl_fir.config import RunConfig, apply_overrides, parse_assignments
from cl_fir.errors import ConfigError
from cl_fir.runner import resolve_config


def test_precedence_defaults_scenario_cli():
    cfg = resolve_config("finetune", "synth-4inc", {"train.epochs": "5", "model.embed_dim": 32}, seed=3)
    assert cfg.train.epochs == 5 and cfg.model.embed_dim == 32 and cfg.seed == 3
    assert cfg.model.backbone == "test_resnet"       # from the scenario file
    assert cfg.train.weight_decay == 0.0             # dataclass default
    assert cfg.loss.temperature == 0.1               # scenario [loss]


def test_coercion_of_cli_strings():
    cfg = RunConfig(strategy="s", scenario="c")
    apply_overrides(cfg, {"transforms.hflip": "false", "eval.recall_ks": "1,5,20", "model.weights": "none",
                          "model.backbone_kwargs": '{"channels": [8, 16, 32, 64]}'})
    assert cfg.transforms.hflip is False and cfg.eval.recall_ks == [1, 5, 20] and cfg.model.weights is None
    assert cfg.model.backbone_kwargs == {"channels": [8, 16, 32, 64]}


@pytest.mark.parametrize("overrides, message", [
    ({"train.epochs": "two"}, "train epochs: expected an integer"),
    ({"train.epochs": "1.5"}, "expected an integer"),
    ({"train.nope": "1"}, "unknown key 'nope'"),
    ({"nosection.x": "1"}, "expected SECTION.KEY"),
    ({"transforms.hflip": "maybe"}, "expected true or false"),
])
def test_bad_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RunConfig(strategy="s", scenario="c"), overrides)


@pytest.mark.parametrize("overrides, message", [
    ({"train.epochs": 0}, r"train.epochs \(--epochs\): expected an integer >= 1, got 0"),
    ({"train.batch_size": 1}, "batch_size"),
    ({"train.lr": -1}, "train.lr"),
    ({"loss.temperature": 0}, "loss.temperature"),
    ({"eval.split": "train"}, "eval.split"),
])
def test_validation(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("finetune", "synth-4inc", overrides)


def test_strategy_options_and_assignments():
    cfg = resolve_config("finetune", "synth-4inc", strategy_options={"label_aware": "false"})
    assert cfg.strategy_options == {"label_aware": False}
    with pytest.raises(ConfigError, match=r"--opt \(strategy finetune\): unknown key 'nope'"):
        resolve_config("finetune", "synth-4inc", strategy_options={"nope": "1"})
    assert parse_assignments(["a=1", "b = x=y"], "--set") == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_assignments(["novalue"], "--set")
