"""Starting weights of a backbone: where they come from and how they are loaded.

``model.weights`` (``--weights``) is one of:

* a local file: a state dict saved from a timm or torchvision model of the same
  architecture (bare, or stored under ``state_dict`` / ``model``);
* ``builtin:<name>``: a file shipped with the package (``cl_fir/weights/<name>.pt``: the
  synthetic scenarios' pretrained starting points, made by ``cl-fir pretrain``);
* ``timm:<tag>``: timm's own pretrained weights (e.g. ``timm:resnet50.a1_in1k``), loaded the
  way ``timm.create_model(tag, pretrained=True)`` does, through the Hugging Face hub cache:
  downloaded once where there is a network, read from the cache afterwards (and with
  ``HF_HUB_OFFLINE=1``). The architecture in the tag must be the scenario's
  ``model.backbone``.

Keys the feature extractor does not use (the classifier, later stages) are ignored; if no
key matches at all the load is refused. Only a ``timm:`` tag ever reaches the network.
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


TIMM_PREFIX = "timm:"


def timm_weights(tag: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict of timm's pretrained ``tag`` and where it came from (the cached file and
    its sha256); one-line errors for an unknown tag and for weights that are neither cached
    nor downloadable."""
    import timm

    if not timm.is_model_pretrained(tag) and "." not in tag:
        raise ConfigError(f"model.weights timm:{tag}: expected a timm pretrained tag such as resnet50.a1_in1k "
                          f"(timm.list_pretrained() lists them)")
    try:
        model = timm.create_model(tag, pretrained=True, num_classes=0)
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "No pretrained" in str(exc):
            raise ConfigError(f"model.weights timm:{tag}: timm has no such pretrained tag "
                              f"(timm.list_pretrained() lists them)") from None
        raise
    except Exception as exc:  # noqa: BLE001 - hub errors (offline, not cached, network) differ by version
        from huggingface_hub.constants import HF_HUB_CACHE

        raise ConfigError(f"model.weights timm:{tag}: the weights are not in timm's cache ({HF_HUB_CACHE}) and could "
                          f"not be downloaded ({type(exc).__name__}); download them once where there is a network, "
                          f"or pass a local file with --weights FILE") from None
    source = {"tag": tag}
    hub_id = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for name in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(hub_id, name)
            if isinstance(cached, str):
                source.update(file=cached, sha256=file_sha256(cached))
                break
    return model.state_dict(), source


def resolve_weights(spec: str) -> Path:
    """The file behind a ``model.weights`` value (``builtin:`` or a path; ``timm:`` tags are
    loaded by :func:`load_weights`)."""
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


def load_weights(backbone: FeatureMapBackbone, spec: str) -> dict:
    """Load ``model.weights`` into the backbone; returns what was loaded, from where (and its sha256)."""
    if spec.startswith(TIMM_PREFIX):
        state, source = timm_weights(spec[len(TIMM_PREFIX):])
        return {"spec": spec, **source, **_load_state(backbone, state, f"model.weights {spec}")}
    path = resolve_weights(spec)
    return {"spec": spec, **load_local_weights(backbone, path), "sha256": file_sha256(path)}


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
    return {"file": str(path), **_load_state(backbone, state, f"--weights {path}")}


def _load_state(backbone: FeatureMapBackbone, state: dict, where: str) -> dict:
    """Copy the tensors whose names and shapes match the backbone's (timm or torchvision keys)."""
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    own = backbone.body.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ConfigError(f"{where}: no parameter matches the backbone (e.g. expected keys like {next(iter(own))!r})")
    backbone.body.load_state_dict(matched, strict=False)
    return {"loaded": len(matched), "backbone_tensors": len(own), "missing": sorted(set(own) - set(matched))[:10]}
