"""Backbone without downloads, the attribute-conditioned head, multi-head routing, local weights."""

from __future__ import annotations

import pytest
import timm
import torch

from cl_fir.config import ModelConfig
from cl_fir.errors import ConfigError
from cl_fir.models import build_model
from cl_fir.models.backbones import FeatureMapBackbone
from cl_fir.models.weights import load_local_weights
from cl_fir.models.heads import AttributeAttentionHead

CFG = ModelConfig(backbone="test_resnet", feature_index=3, embed_dim=16, attr_dim=8)


def test_head_outputs_unit_vectors_and_depends_on_the_attribute():
    torch.manual_seed(0)
    head = AttributeAttentionHead(in_channels=12, num_attributes=3, embed_dim=8, attr_dim=4).eval()
    fmap = torch.randn(5, 12, 4, 4)
    out, attn = head(fmap, torch.zeros(5, dtype=torch.long), return_attention=True)
    assert out.shape == (5, 8)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    assert attn.shape == (5, 4, 4)
    torch.testing.assert_close(attn.flatten(1).sum(1), torch.ones(5))
    other = head(fmap, torch.ones(5, dtype=torch.long))
    assert not torch.allclose(out, other)


def test_multi_head_routing_equals_calling_each_head():
    torch.manual_seed(0)
    model = build_model(CFG, num_attributes=4, head_of_attribute=[0, 0, 1, 1]).eval()
    assert len(model.heads) == 2
    x = torch.randn(6, 3, 32, 32)
    attrs = torch.tensor([0, 2, 1, 3, 2, 0])
    out = model(x, attrs)
    fmap = model.features(x)
    for i, a in enumerate(attrs.tolist()):
        head = model.heads[0 if a < 2 else 1]
        torch.testing.assert_close(out[i], head(fmap[i:i + 1], attrs[i:i + 1])[0])


def test_single_head_model():
    model = build_model(CFG, num_attributes=3, head_of_attribute=[0, 0, 0]).eval()
    assert len(model.heads) == 1
    assert model(torch.randn(2, 3, 32, 32), torch.tensor([0, 2])).shape == (2, 16)


def test_unknown_backbone_and_bad_stage_are_config_errors():
    with pytest.raises(ConfigError, match="unknown timm architecture"):
        FeatureMapBackbone("not_a_model", 3)
    with pytest.raises(ConfigError, match="feature_index"):
        FeatureMapBackbone("test_resnet", 9)


def test_local_weights_load_from_a_full_timm_checkpoint(tmp_path):
    torch.manual_seed(1)
    full = timm.create_model("test_resnet", pretrained=False)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": full.state_dict()}, path)
    bb = FeatureMapBackbone("test_resnet", 3)
    report = load_local_weights(bb, path)
    assert report["loaded"] == report["backbone_tensors"]
    torch.testing.assert_close(bb.body.state_dict()["conv1.0.weight"], full.state_dict()["conv1.0.weight"])


def test_local_weights_errors(tmp_path):
    bb = FeatureMapBackbone("test_resnet", 3)
    with pytest.raises(ConfigError, match="file not found"):
        load_local_weights(bb, tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable torch checkpoint"):
        load_local_weights(bb, tmp_path / "junk.pth")
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="no parameter matches"):
        load_local_weights(bb, tmp_path / "other.pth")
