"""timm model factory: any timm architecture by name, hub or local pretrained weights, head sized to the data."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from comp.core.config import ModelConfig
from comp.core.errors import CompError, closest
from comp.model.weights import EXTERNAL_PREFIXES, WEIGHT_SUFFIXES, WeightsSource, find_weights

log = logging.getLogger("comp.model.factory")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NESTED_KEYS = ("model", "state_dict", "model_state_dict", "module")
PREFIXES = ("module.", "_orig_mod.")
COUNTERS = ("num_batches_tracked",)  # BatchNorm step counters: not weights; a file may lack them
MIN_BACKBONE_SHARE = 0.5  # below this share of the backbone from the file, it was saved from another model


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
    """A timm model with an `n_classes` head: hub weights, a local weights file or folder, or random init."""
    return build_model_with_report(cfg, n_classes)[0]


def build_model_with_report(cfg: ModelConfig, n_classes: int) -> tuple[nn.Module, LoadReport | None]:
    """build_model, and what loading model.pretrained_path did (None for hub weights or random init)."""
    if n_classes < 1:
        raise CompError(f"a model needs 1 or more classes, got n_classes={n_classes}")
    check_name(cfg.name)
    kwargs: dict[str, Any] = {"num_classes": n_classes, "drop_rate": cfg.drop_rate}
    if cfg.drop_path_rate is not None:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    source = find_weights(cfg.pretrained_path, name=cfg.name) if cfg.pretrained_path is not None else None
    model = _create(cfg.name, pretrained=cfg.pretrained and source is None, **kwargs)
    return model, (load_weights(model, source) if source is not None else None)


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
        from comp.model.checkpoint import RESAVE, load_problem

        code, reason = load_problem(exc)  # torch's text spans lines: one line here
        if code is not None:
            raise CompError(f"could not read weights from model.pretrained_path {path}: it holds pickled code ({code}) "
                            f"that comp will not run (it loads weights only); {RESAVE}") from exc
        raise CompError(
            f"could not read weights from {path} ({type(exc).__name__}: {reason}); "
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


@dataclass(frozen=True)
class LoadReport:
    """What load_weights did: tensors loaded, head tensors left at random init, file tensors skipped."""

    file: str
    n_loaded: int
    n_model: int  # tensors in the model's state dict
    reinitialised: tuple[str, ...]  # head tensors (another class count, or absent from the file)
    skipped: tuple[str, ...]  # tensors of the file the model does not have
    architecture: str | None = None  # config.json's
    input_hw: tuple[int, int] | None = None  # the size the weights were trained at (reported; image.size rules)
    stripped_prefix: str = ""  # a prefix the file's keys carried ('backbone.', ...)
    head_in_file: bool = True  # the file has a head (of another size when re-initialised)

    def summary(self) -> str:
        """One line: 'loaded 312 of 314 tensors from F (...); re-initialised the head: ...; skipped 0 ...'."""
        about = [s for s in (self.architecture, self.input_hw and f"trained at {self.input_hw[0]}x{self.input_hw[1]}",
                             self.stripped_prefix and f"keys without {self.stripped_prefix!r}") if s]
        why = "its size differs from the file's" if self.head_in_file else "the file has none"
        head = f"re-initialised the head ({why}): {examples(self.reinitialised)}" if self.reinitialised else (
            "kept the file's head")
        skipped = f"skipped {len(self.skipped)} tensors the model lacks" + (
            f" ({examples(self.skipped)})" if self.skipped else "")
        about_text = f" ({', '.join(about)})" if about else ""
        return f"loaded {self.n_loaded} of {self.n_model} tensors from {self.file}{about_text}; {head}; {skipped}"


def examples(keys: tuple[str, ...] | list[str], n: int = 3) -> str:
    """'a, b, c and 5 more'."""
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_weights(model: nn.Module, path: WeightsSource | Path | str) -> LoadReport:
    """Load a local weights file or model folder into `model`; a head of another size is re-initialised.

    Refuses (CompError) weights of another backbone: fewer than half its tensors in the file, a shape that
    differs outside the head, or a backbone tensor the file lacks. Logs the report's summary (INFO).
    """
    source = path if isinstance(path, WeightsSource) else find_weights(path)
    state, fits, stripped = match_weights(model, read_state_dict(source.file), str(source.file))
    model.load_state_dict(fits, strict=False)
    own, heads = model.state_dict(), classifier_prefixes(model)
    reinitialised = tuple(k for k in own if k.startswith(heads) and k not in fits)
    report = LoadReport(
        file=str(source.file), n_loaded=len(fits), n_model=len(own), reinitialised=reinitialised,
        skipped=tuple(k for k in state if k not in own), architecture=source.architecture,
        input_hw=source.input_hw, stripped_prefix=stripped, head_in_file=any(k in state for k in reinitialised),
    )
    log.info("pretrained weights: %s", report.summary())
    return report


def match_weights(model: nn.Module, state: dict[str, torch.Tensor],
                  where: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], str]:
    """(the file's tensors with a wrapper prefix stripped, those that fit `model`, that prefix).

    Raises CompError unless they hold the model's backbone (the head may differ or be absent).
    """
    own = model.state_dict()
    heads = classifier_prefixes(model)
    state, stripped = align_prefix(state, own)
    backbone = [k for k in own if not k.startswith(heads) and not k.endswith(COUNTERS)]
    fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    check_backbone(state, own, fits, backbone, heads, where)
    return state, fits, stripped


def check_backbone(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], fits: Mapping[str, Any],
                   backbone: list[str], heads: tuple[str, ...], where: str) -> None:
    """Raise CompError unless the file holds this model's backbone (the head may differ or be absent)."""
    check = "check model.name matches the model the file was saved from"
    n_named = sum(k in state for k in backbone)
    weights = [k for k in state if not k.endswith(COUNTERS)]
    if backbone and n_named < MIN_BACKBONE_SHARE * len(backbone):
        raise CompError(
            f"weights in {where} hold only {n_named} of this model's {len(backbone)} backbone tensors (model keys "
            f"e.g. {', '.join(backbone[:2])}; file keys e.g. {', '.join(weights[:2]) or 'none'}); {check}")
    wrong = [k for k in state if k in own and k not in fits and not k.startswith(heads)]
    if wrong:
        shapes = "; ".join(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:3])
        raise CompError(f"weights in {where} do not fit this architecture ({len(wrong)} tensors differ in shape, "
                        f"e.g. {shapes}); {check}")
    missing = [k for k in backbone if k not in state]
    if missing:
        raise CompError(f"weights in {where} lack {len(missing)} tensors this model needs, e.g. {missing[:3]}; {check}")


def align_prefix(state: dict[str, torch.Tensor], own: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """Strip a wrapper prefix ('backbone.', 'model.') from the file's keys when that matches more of them."""
    def matches(keys: Any) -> int:
        return sum(k in own for k in keys)

    best, best_n = "", matches(state)
    if best_n >= MIN_BACKBONE_SHARE * len(own):
        return state, ""
    for prefix in sorted({".".join(k.split(".")[:depth]) + "." for k in state for depth in (1, 2) if k.count(".") > depth}):
        n = matches(k[len(prefix):] for k in state if k.startswith(prefix))
        if n > best_n:
            best, best_n = prefix, n
    if not best:
        return state, ""
    return {(k[len(best):] if k.startswith(best) else k): v for k, v in state.items()}, best  # the rest: skipped


def resolve_norm(cfg: ModelConfig) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std): model.mean/std when set, else a weights folder's config.json, else timm's config of model.name,
    else ImageNet's."""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    try:
        pretrained = timm.models.get_pretrained_cfg(cfg.name)
    except (RuntimeError, ValueError, KeyError):  # unknown name: build_model reports it
        pretrained = None
    if pretrained is not None:
        mean = tuple(float(v) for v in pretrained.mean) if len(pretrained.mean) == 3 else mean
        std = tuple(float(v) for v in pretrained.std) if len(pretrained.std) == 3 else std
    folder = folder_source(cfg) if not (cfg.mean and cfg.std) else None
    if folder is not None:
        mean, std = folder.norm("mean") or mean, folder.norm("std") or std
    return (tuple(cfg.mean) if cfg.mean else mean), (tuple(cfg.std) if cfg.std else std)


def folder_source(cfg: ModelConfig) -> WeightsSource | None:
    """model.pretrained_path's WeightsSource when it is a model folder, else None.

    A folder that is gone is an error, not a silent switch to timm's normalisation: predictions must be
    normalised as training was.
    """
    if cfg.pretrained_path is None:
        return None
    path = Path(cfg.pretrained_path).expanduser()
    if path.is_dir():
        return find_weights(path)
    if not path.exists() and path.suffix not in WEIGHT_SUFFIXES:
        raise CompError(f"model.pretrained_path {str(path)!r} does not exist; the normalisation of a weights folder "
                        "comes from its config.json: restore the folder, or set model.mean and model.std to the "
                        "values training used")
    return None


@dataclass(frozen=True)
class WeightsStatus:
    """Can build_model get the configured weights here: ok, one line saying which and where."""

    ok: bool
    message: str
    fetchable: bool = False  # hub weights not cached yet that a machine with internet downloads


def pretrained_status(cfg: ModelConfig) -> tuple[bool, str]:
    """(ok, one line): are the weights model.* asks for reachable here? Reads headers and caches; downloads nothing."""
    status = weights_status(cfg)
    return status.ok, status.message


def check_pretrained(cfg: ModelConfig, *, fetch: bool = True) -> str:
    """Raise CompError unless build_model can get the configured weights; return the status line.

    A local file or folder must also hold model.name's backbone (shapes compared, nothing loaded). With
    `fetch`, hub weights not cached yet are downloaded now (once, before any fold trains), so a machine
    without internet fails here, not in fold 0.
    """
    status = weights_status(cfg)
    if status.ok:
        if cfg.pretrained_path is not None:
            check_weights_fit(cfg)
        return status.message
    if not (fetch and status.fetchable):
        raise CompError(status.message)
    _create(cfg.name, pretrained=True)  # a CompError naming pretrained_path / pretrained=false when it cannot
    return f"{cfg.name}: pretrained weights fetched into the local cache"


def check_weights_fit(cfg: ModelConfig) -> None:
    """Raise CompError unless model.pretrained_path holds model.name's backbone; compares shapes, loads no model."""
    source = find_weights(cfg.pretrained_path, name=cfg.name)
    match_weights(shape_model(cfg.name), weight_shapes(source.file), str(source.file))


def shape_model(name: str) -> nn.Module:
    """model.name built without weights: on the meta device (no memory, no init) where the architecture allows."""
    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False)
    except Exception:  # an architecture whose constructor computes on tensors (.item(), numpy): build it for real
        return timm.create_model(name, pretrained=False)


def weight_shapes(file: Path) -> dict[str, torch.Tensor]:
    """The file's tensors as empty meta tensors of their shapes: the header alone for safetensors."""
    if file.suffix != ".safetensors":
        return read_state_dict(file)
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        shapes = {k: torch.empty(handle.get_slice(k).get_shape(), device="meta") for k in handle.keys()}
    return _flatten(shapes, file)


def weights_status(cfg: ModelConfig) -> WeightsStatus:
    """pretrained_status's answer, with whether a download could still get hub weights."""
    try:
        check_name(cfg.name)
        if cfg.pretrained_path is not None:  # build_model loads it whatever model.pretrained says
            source = find_weights(cfg.pretrained_path, name=cfg.name)
            about = "; ".join(s for s in (peek_weights(source.file), source.describe()) if s)
            return WeightsStatus(True, f"{cfg.name}: pretrained weights from {source.file} ({about})")
    except CompError as exc:
        return WeightsStatus(False, str(exc))
    if not cfg.pretrained:
        return WeightsStatus(True, f"{cfg.name}: training from scratch (model.pretrained: false)")
    return hub_status(cfg.name)


def peek_weights(file: Path) -> str:
    """'314 tensors' from a safetensors header, or a torch file's size; CompError when it cannot be read."""
    if not os.access(file, os.R_OK):
        raise CompError(f"model.pretrained_path file {file} is not readable; check its permissions")
    if file.suffix != ".safetensors":
        size = file.stat().st_size
        if size == 0:
            raise CompError(f"model.pretrained_path file {file} is empty; download or save it again")
        return f"{size / 1e6:.1f} MB"
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            return f"{len(list(handle.keys()))} tensors"
    except Exception as exc:  # a truncated header, another format: safetensors raises several kinds
        raise CompError(f"{file} is not a readable safetensors file ({type(exc).__name__}: {exc}); "
                        "download or save it again") from exc


def hub_status(name: str) -> WeightsStatus:
    """Are timm's hub weights for `name` (or a local-dir: folder) on this machine already?"""
    from comp.model._hub_cache import cached_weights, hub_location, hub_offline

    if name.startswith("local-dir:"):
        folder = Path(name.split(":", 1)[1]).expanduser()
        if (folder / "config.json").is_file():
            return WeightsStatus(True, f"{name}: timm reads the model folder {folder}")
        return WeightsStatus(False, f"model.name {name!r}: {folder / 'config.json'} does not exist; point "
                                    "local-dir: at a timm model folder")
    repo, _, url = hub_location(name)
    if not (repo or url):
        return WeightsStatus(False, f"timm has no pretrained weights for {name!r}; set model.pretrained=false to "
                                    "train from scratch, or model.pretrained_path to a weights file or folder")
    hit = cached_weights(name)
    if hit:
        return WeightsStatus(True, f"{name}: pretrained weights cached at {hit}")
    offline = hub_offline()
    why = "HF_HUB_OFFLINE is set" if offline else "this machine may have no internet"
    return WeightsStatus(False, f"{name}: pretrained weights ({repo or url}) are not cached: {why}; set "
                                "model.pretrained_path to a local weights file or folder, or model.pretrained=false",
                         fetchable=not offline)
