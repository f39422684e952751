"""Starting weights of a backbone: where they come from and how they are loaded.

``model.weights`` (``--weights``) is a local file, or ``builtin:<name>`` for a file shipped
with the package (``cl_fir/weights/<name>.pt``: the synthetic scenarios' pretrained
starting points, made by ``cl-fir pretrain``). A file holds a state dict saved from a timm
or torchvision model of the same architecture (bare, or stored under ``state_dict`` /
``model``). Keys the feature extractor does not use (the classifier, later stages) are
ignored; if no key matches at all the load is refused. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import torch

from cl_fir.errors import ConfigError
from cl_fir.models.backbones import FeatureMapBackbone

BUILTIN_PREFIX = "builtin:"


def builtin_weights() -> dict[str, Path]:
    """Weight files shipped with the package, by name (``builtin:<name>``)."""
    folder = resources.files("cl_fir.weights")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".pt")}


def resolve_weights(spec: str) -> Path:
    """The file behind a ``model.weights`` value."""
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX):]
        shipped = builtin_weights()
        if name not in shipped:
            available = ", ".join(BUILTIN_PREFIX + n for n in sorted(shipped)) or "none"
            raise ConfigError(f"model.weights {spec!r}: no such shipped weights (available: {available}); give a "
                              f"local file instead (`cl-fir pretrain --output FILE` makes one)")
        return shipped[name]
    return Path(spec)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
