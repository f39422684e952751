"""timm backbones that return one feature map; never downloaded.

Weights come only from a local file (``--weights PATH``): a state dict saved from a timm
or torchvision model of the same architecture (a bare state dict, or one stored under
``state_dict`` / ``model``). Keys the feature extractor does not use (the classifier,
later stages) are ignored; if no key matches at all the load is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from cl_fir.errors import ConfigError

# Belt and braces: even a misconfigured call must not reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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


def load_local_weights(backbone: FeatureMapBackbone, path: str | Path) -> dict:
    """Load a local checkpoint into the backbone; returns a short report."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--weights {path}: file not found")
    if path.stat().st_size == 0:
        raise ConfigError(f"--weights {path}: empty file (0 bytes)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0].rstrip(".")[:200]
        raise ConfigError(f"--weights {path}: not a readable torch checkpoint, truncated or damaged? "
                          f"({type(exc).__name__}: {first})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"--weights {path}: expected a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    own = backbone.body.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ConfigError(
            f"--weights {path}: no parameter matches the backbone (e.g. expected keys like {next(iter(own))!r})"
        )
    backbone.body.load_state_dict(matched, strict=False)
    return {"file": str(path), "loaded": len(matched), "backbone_tensors": len(own),
            "missing": sorted(set(own) - set(matched))[:10]}
