"""timm backbones that return one feature map; built without weights (never downloaded).

Starting weights are loaded afterwards from a file (:mod:`cl_fir.models.weights`).
"""

from __future__ import annotations

import torch
from torch import nn

from cl_fir.errors import ConfigError


class FeatureMapBackbone(nn.Module):
    """A timm model cut at one stage; ``forward`` returns ``(B, C, H, W)``."""

    def __init__(self, name: str, feature_index: int, **kwargs):
        super().__init__()
        import timm

        if name not in timm.list_models():
            raise ConfigError(f"model.backbone: unknown timm architecture {name!r}")
        try:
            self.body = timm.create_model(name, pretrained=False, features_only=True,
                                          out_indices=(feature_index,), **kwargs)
        except (IndexError, ValueError, TypeError, AssertionError) as exc:
            raise ConfigError(
                f"model.backbone {name!r} with feature_index={feature_index} and kwargs {kwargs}: {exc}"
            ) from None
        self.out_channels = int(self.body.feature_info.channels()[-1])
        self.reduction = int(self.body.feature_info.reduction()[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[-1]
