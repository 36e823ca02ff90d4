"""timm model factory: any timm architecture by name, hub or local pretrained weights, head sized to the data."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from comp.config import ModelConfig
from comp.errors import CompError, closest

log = logging.getLogger("comp.models")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NESTED_KEYS = ("model", "state_dict", "model_state_dict", "module")
PREFIXES = ("module.", "_orig_mod.")
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")
EXTERNAL_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


def check_name(name: str) -> None:
    """Raise CompError when timm has no model `name`, listing the closest names it has."""
    if timm.is_model(name) or name.startswith(EXTERNAL_PREFIXES):  # hub/local configs: timm resolves them
        return
    known = timm.list_models()
    hits = closest(name, known, n=5) or closest(name.split(".")[0], known, n=5)
    hint = f"; closest timm models: {', '.join(hits)}" if hits else ""
    raise CompError(
        f"model.name {name!r} is not a timm model{hint}. "
        "See `python -c 'import timm; print(timm.list_models(\"*resnet*\"))'` for the full list"
    )


def build_model(cfg: ModelConfig, n_classes: int) -> nn.Module:
    """A timm model with an `n_classes` head: hub weights, a local weights file, or random init."""
    if n_classes < 1:
        raise CompError(f"a model needs 1 or more classes, got n_classes={n_classes}")
    check_name(cfg.name)
    kwargs: dict[str, Any] = {"num_classes": n_classes, "drop_rate": cfg.drop_rate}
    if cfg.drop_path_rate is not None:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    from_hub = cfg.pretrained and cfg.pretrained_path is None
    model = _create(cfg.name, pretrained=from_hub, **kwargs)
    if cfg.pretrained_path is not None:
        load_weights(model, cfg.pretrained_path)
    return model


def _create(name: str, *, pretrained: bool, **kwargs: Any) -> nn.Module:
    """timm.create_model, with its failures turned into errors the user can act on."""
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:  # an architecture that does not take drop_path_rate, ...
        raise CompError(
            f"timm model {name!r} rejected the arguments {sorted(kwargs)}: {exc}; "
            "unset model.drop_path_rate (or drop_rate) for this architecture"
        ) from exc
    except (OSError, RuntimeError, ValueError) as exc:
        if not pretrained:
            raise
        raise CompError(
            f"could not fetch pretrained weights for {name!r} ({type(exc).__name__}: {exc}); "
            "on a machine without internet set model.pretrained_path to a local weights file, "
            "or model.pretrained=false to train from scratch"
        ) from exc


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """A flat state dict from a .safetensors file or a torch checkpoint (weights_only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CompError(f"model.pretrained_path {str(path)!r} does not exist; point it at a .pth/.pt/.safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, corrupt file, wrong format
        raise CompError(
            f"could not read weights from {path} ({type(exc).__name__}: {exc}); "
            f"save them with torch.save(model.state_dict()) or safetensors (suffixes {', '.join(WEIGHT_SUFFIXES)})"
        ) from exc
    return _flatten(obj, path)


def _flatten(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap {"model": {...}} style checkpoints and strip DataParallel/compile prefixes."""
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        inner = next((obj[k] for k in NESTED_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise CompError(
                f"{path} holds no state dict: top-level keys are {sorted(map(str, obj))[:10]}; "
                f"expected tensors, or one of {', '.join(NESTED_KEYS)} holding them"
            )
        obj = inner
    if not isinstance(obj, Mapping):
        raise CompError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    out = {}
    for key, value in obj.items():
        for prefix in PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _is_state_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the model's classification head (e.g. ('fc.',) or ('head.fc.',))."""
    names: list[str] = []
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        names = [n for n, m in model.named_modules() if m is head and n]
    if not names:
        declared = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
        names = [declared] if isinstance(declared, str) else list(declared)
    return tuple(f"{n}." for n in names)


def load_weights(model: nn.Module, path: Path | str) -> nn.Module:
    """Load a local weights file into `model`; a head of another size is dropped and re-initialised."""
    state = read_state_dict(path)
    own = model.state_dict()
    heads = classifier_prefixes(model)
    mismatched = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    wrong = [k for k in mismatched if not k.startswith(heads)]
    if wrong:
        shapes = "; ".join(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:3])
        raise CompError(
            f"weights in {path} do not fit this architecture ({len(wrong)} tensors differ in shape, e.g. {shapes}); "
            "check model.name matches the model the file was saved from"
        )
    if mismatched:
        log.info("%s: head size differs, re-initialising %s", path, ", ".join(mismatched))
        state = {k: v for k, v in state.items() if k not in mismatched}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in mismatched]
    if missing:
        raise CompError(
            f"weights in {path} lack {len(missing)} tensors this model needs, e.g. {missing[:3]}; "
            "check model.name matches the model the file was saved from"
        )
    if unexpected:
        log.warning("%s: ignored %d tensors the model does not have, e.g. %s", path, len(unexpected), unexpected[:3])
    log.info("loaded %d tensors from %s", len(state) - len(unexpected), path)
    return model


def resolve_norm(cfg: ModelConfig) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std): from config when set, else the model's pretrained config, else ImageNet's."""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    try:
        pretrained = timm.models.get_pretrained_cfg(cfg.name)
    except (RuntimeError, ValueError, KeyError):  # unknown name: build_model reports it
        pretrained = None
    if pretrained is not None:
        mean = tuple(float(v) for v in pretrained.mean) if len(pretrained.mean) == 3 else mean
        std = tuple(float(v) for v in pretrained.std) if len(pretrained.std) == 3 else std
    return (tuple(cfg.mean) if cfg.mean else mean), (tuple(cfg.std) if cfg.std else std)
