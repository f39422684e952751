"""Shared fixtures: a tiny synthetic scenario that builds and trains in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY_SCENARIO = """
name = "tiny"
description = "tiny synthfashion scenario for tests"
family = "attribute"

[dataset]
reader = "synthfashion"
seed = 7
image_size = 32
train_per_attribute = 16
queries_per_attribute = 8
candidates_per_attribute = 16

[increments]
attributes = {increments}

[model]
backbone = "test_resnet"
feature_index = 3
embed_dim = 16
attr_dim = 8

[transforms]
resize = 32
crop = 32

[train]
epochs = 1
samples_per_epoch = 16
batch_size = 8
lr = 1e-3

[eval]
recall_ks = [1, 5]
map_k = 10
"""


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cache")
    os.environ["CL_FIR_CACHE"] = str(path)   # also seen by CLI runs in subprocesses
    return path


def write_scenario(folder: Path, increments: str, name: str = "tiny.toml", **replace: str) -> Path:
    text = TINY_SCENARIO.replace("{increments}", increments)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def tiny_scenario(tmp_path_factory, cache_dir) -> Path:
    """Two increments of two attributes each."""
    return write_scenario(tmp_path_factory.mktemp("scenarios"), '[["skirt_length", "sleeve_length"], ["coat_length", "pant_length"]]')


@pytest.fixture
def nan_loss_at_step(monkeypatch):
    """``nan_loss_at_step(n)``: from now on, the strategy's n-th loss (1-based, counted over
    the whole run) is NaN; every other loss is untouched."""
    from cl_fir.strategy import Strategy

    original = Strategy.criterion

    def arm(n: int) -> None:
        calls = {"n": 0}

        def exploding(self, ctx):
            calls["n"] += 1
            loss = original(self, ctx)
            return loss * float("nan") if calls["n"] == n else loss

        monkeypatch.setattr(Strategy, "criterion", exploding)

    return arm
