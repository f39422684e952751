"""Building the model a run trains from its ``[model]`` settings: the heads by name, the
single-backbone and ASEN++ attribute models, and the composed model."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from cl_fir.config import ModelConfig
from cl_fir.errors import ConfigError
from cl_fir.models.backbones import FeatureMapBackbone
from cl_fir.models.dnc_head import BASE_HEADS, DivideAndConquerHead
from cl_fir.models.retrieval_model import RetrievalModel


#: ``model.head`` -> head class; every head maps (feature map, attribute) to an L2-normalised embedding.
HEADS = {**BASE_HEADS, "dnc": DivideAndConquerHead}


def build_head(cfg: ModelConfig, in_channels: int, num_attributes: int) -> nn.Module:
    if cfg.head not in HEADS:
        raise ConfigError(f"model.head (--head): expected one of {', '.join(HEADS)}, got {cfg.head!r}")
    try:
        return HEADS[cfg.head](in_channels, num_attributes, cfg.embed_dim, cfg.attr_dim, **cfg.head_kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.head_kwargs for head {cfg.head!r}: {exc}") from None


def build_composed_model(cfg: ModelConfig, scenario, head_of_task: Sequence[int]):
    """Image encoder + GRU text encoder (vocabulary of every training caption) + one TIRG
    compositor per head, for ``family = "composed"`` scenarios."""
    from cl_fir.models.composed_model import ComposedRetrievalModel
    from cl_fir.models.text_encoder import Vocabulary

    backbone = FeatureMapBackbone(cfg.backbone, cfg.feature_index, **cfg.backbone_kwargs)
    num_heads = max(head_of_task) + 1 if len(head_of_task) else 1
    vocabulary = Vocabulary.build(scenario.training_texts())
    text = None
    if cfg.text_encoder == "sentence-transformer":
        from cl_fir.models.text_encoder import SentenceTransformerTextEncoder

        if not cfg.text_checkpoint:
            raise ConfigError("model.text_encoder = 'sentence-transformer' needs model.text_checkpoint = FOLDER "
                              "(a sentence-transformers model saved on this machine)")
        text = SentenceTransformerTextEncoder(cfg.text_checkpoint, cfg.embed_dim, cfg.text_lr_multiplier)
    elif cfg.text_encoder != "gru":
        raise ConfigError(f"model.text_encoder: expected gru or sentence-transformer, got {cfg.text_encoder!r}")
    return ComposedRetrievalModel(backbone, vocabulary, cfg.embed_dim, num_heads, head_of_task,
                                  word_dim=cfg.attr_dim, text_hidden=cfg.embed_dim, text_encoder=text)


def build_model(cfg: ModelConfig, num_attributes: int, head_of_attribute: Sequence[int]) -> RetrievalModel:
    backbone = FeatureMapBackbone(cfg.backbone, cfg.feature_index, **cfg.backbone_kwargs)
    num_heads = max(head_of_attribute) + 1 if len(head_of_attribute) else 1
    if cfg.arch == "asenpp":
        return _build_asenpp(cfg, backbone, num_attributes, head_of_attribute, num_heads)
    if cfg.arch != "single":
        raise ConfigError(f"model.arch: expected single or asenpp, got {cfg.arch!r}")
    heads = [build_head(cfg, backbone.out_channels, num_attributes) for _ in range(num_heads)]
    return RetrievalModel(backbone, heads, head_of_attribute)


def _build_asenpp(cfg: ModelConfig, backbone, num_attributes: int, head_of_attribute, num_heads: int):
    from cl_fir.models.asenpp import AsenPlusPlusHead, AsenPlusPlusModel

    if cfg.head != "asen":
        raise ConfigError(f"model.arch = 'asenpp' needs model.head = 'asen' (its attention map gives the local "
                          f"crop), got {cfg.head!r}")
    if not 0.0 < cfg.fusion_weight < 1.0 or not 0.0 <= cfg.crop_threshold <= 1.0 or cfg.local_size < 8:
        raise ConfigError("model.fusion_weight: expected (0, 1); model.crop_threshold: [0, 1]; "
                          "model.local_size: an integer >= 8")
    local = FeatureMapBackbone(cfg.local_backbone, cfg.local_feature_index, **cfg.local_backbone_kwargs)
    heads = [AsenPlusPlusHead(build_head(cfg, backbone.out_channels, num_attributes),
                              build_head(cfg, local.out_channels, num_attributes)) for _ in range(num_heads)]
    return AsenPlusPlusModel(backbone, heads, head_of_attribute, local, cfg.local_size, cfg.crop_threshold,
                             cfg.fusion_weight, cfg.local_loss_weight, cfg.align_weight, cfg.global_only_epochs)
