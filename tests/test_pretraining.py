"""Pretrained starting points: deterministic pretraining, the weights file, and where runs record it."""

from __future__ import annotations

import json

import pytest
import torch

from cl_fir.errors import ConfigError
from cl_fir.models.backbones import FeatureMapBackbone
from cl_fir.models.weights import builtin_weights, file_sha256, load_local_weights, resolve_weights
from cl_fir.pretraining import LABELS, PretrainConfig, pretrain, render_pretraining_set, save_weights

TINY = PretrainConfig(image_size=32, images=64, epochs=1, batch_size=32, threads=1)


def test_pretraining_is_deterministic_and_loads_as_backbone_weights(tmp_path):
    logs = []
    state, report = pretrain(TINY, log=logs.append)
    again, _ = pretrain(TINY, log=lambda _m: None)
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    assert set(report["held_out_accuracy"]) == set(LABELS) and report["recipe"]["images"] == 64
    digest = save_weights(tmp_path / "w.pt", state, report)
    assert digest == file_sha256(tmp_path / "w.pt")
    backbone = FeatureMapBackbone("test_resnet", 3)
    loaded = load_local_weights(backbone, tmp_path / "w.pt")
    assert loaded["loaded"] == loaded["backbone_tensors"] and not loaded["missing"]   # every stage up to layer3
    assert torch.equal(backbone.body.state_dict()["conv1.0.weight"], state["conv1.0.weight"])


def test_labels_are_other_factors_than_the_attributes():
    images, labels = render_pretraining_set(TINY, 0, 8)
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8
    assert set(labels) == {"garment", "colour", "pattern"}
    from cl_fir.data.synthfashion import ATTRIBUTE_NAMES

    assert not set(labels) & set(ATTRIBUTE_NAMES)


def test_shipped_weights_resolve_and_carry_their_recipe():
    shipped = builtin_weights()
    assert "synthfashion-test_resnet" in shipped
    path = resolve_weights("builtin:synthfashion-test_resnet")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["pretraining"]["recipe"]["arch"] == "test_resnet"
    with pytest.raises(ConfigError, match="no such shipped weights"):
        resolve_weights("builtin:nope")


def test_a_run_records_the_weights_it_started_from(tiny_scenario, tmp_path):
    from cl_fir.runner import execute_run, resolve_config

    run = execute_run(resolve_config("finetune", str(tiny_scenario), {"model.weights": "builtin:synthfashion-test_resnet"},
                                     output_dir=str(tmp_path)), stop_after=1)
    info = json.loads((run / "run.json").read_text())
    weights = info["weights"]
    assert weights["spec"] == "builtin:synthfashion-test_resnet"
    assert weights["sha256"] == file_sha256(resolve_weights("builtin:synthfashion-test_resnet"))
    assert all("chance" in t and t["chance"]["map_all"] > 0 for t in info["tasks"])
