"""Typed, validated, immutable configuration: defaults < comp.yaml < experiments/<exp>.yaml < --set.

One `Config` object holds the competition (data, metric, submission, folds) and the
experiment (model, image, augment, train, tta, tune). It is resolved once per command and
written beside every output with its hash; nothing mutates it afterwards.
"""

from __future__ import annotations

import copy
import types
import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from comp.errors import CompError, did_you_mean
from comp.metrics import METRICS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Strict):
    train_csv: str = "data/train.csv"
    test_csv: str | None = "data/test.csv"
    image_root: str = "data/images"
    id_col: str = "id"
    image_col: str = "path"
    label_col: str = "label"
    group_col: str | None = None
    bbox_cols: tuple[str, str, str, str] | None = None
    classes: tuple[Any, ...] | None = None  # explicit class order; default: sorted labels


class SubmissionConfig(Strict):
    id_col: str = "id"
    target_col: str = "label"
    kind: Literal["label", "probabilities"] = "label"
    sample_csv: str | None = None


class FoldsConfig(Strict):
    k: int = 5
    seed: int = 42
    stratify: tuple[str, ...] = ()  # extra columns stratified with the label, e.g. (gender,)

    @field_validator("k")
    @classmethod
    def _k(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"folds.k must be 2 or more, got {v}")
        return v


class ModelConfig(Strict):
    name: str = "resnet18"
    pretrained: bool = True
    pretrained_path: str | None = None  # local .pth/.pt/.safetensors; overrides the hub
    drop_rate: float = 0.0
    drop_path_rate: float | None = None
    mean: tuple[float, float, float] | None = None  # default: the model's pretrained config
    std: tuple[float, float, float] | None = None


class ImageConfig(Strict):
    size: int | tuple[int, int] = 224  # int or (height, width)
    bbox_margin: float = 0.1  # fraction of the box added on each side before cropping
    cache: bool = True  # decode/crop/resize once into a uint8 memory-mapped cache
    cache_scale: float = 1.14  # cached images are this much larger than the input

    @property
    def hw(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)


class AugmentConfig(Strict):
    preset: Literal["none", "light", "medium", "heavy"] = "light"
    transforms: tuple[dict[str, Any], ...] = ()  # albumentations list; replaces the preset
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0


class TrainConfig(Strict):
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3.0e-4
    weight_decay: float = 0.01
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9
    scheduler: Literal["cosine", "onecycle", "step", "none"] = "cosine"
    warmup_epochs: float = 1.0
    step_size: int = 3
    step_gamma: float = 0.1
    loss: Literal["ce", "focal", "f1", "weighted_ce"] = "ce"
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    sampler: Literal["balanced", "sqrt"] | None = None
    sample_ratio: float = 1.0  # samples drawn per epoch by the sampler / training rows
    early_stopping: int | None = 5  # epochs without improvement; None = off
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    ema: bool = False
    ema_decay: float = 0.999
    seed: int = 42
    grad_accum: int = 1
    clip_grad: float | None = None
    compile: bool = False
    channels_last: bool = True  # applied on CUDA only
    num_workers: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    sync_bn: bool = False  # SyncBatchNorm across DDP ranks (torchrun); no effect in one process

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML reads `amp: off` as false

    @model_validator(mode="after")
    def _positive(self) -> "TrainConfig":
        for key in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, key) < 1:
                raise ValueError(f"train.{key} must be 1 or more, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be positive, got {self.lr}")
        return self


class TTAConfig(Strict):
    transforms: str = "hflip"  # none | hflip | flip | d4 | multiscale | five_crop
    merge: Literal["mean", "gmean"] = "mean"


class TuneConfig(Strict):
    trials: int = 20
    timeout: float | None = None
    folds: tuple[int, ...] | Literal["all"] = (0,)
    space: dict[str, dict[str, Any]] = {}
    pruner: Literal["median", "hyperband", "none"] = "median"
    epochs: int | None = None  # train.epochs during tuning; None = the experiment's
    seed: int | None = None  # TPE sampler seed; None = train.seed
    n_startup_trials: int = 10  # random trials before TPE models the results


RUN_PLACE_KEYS = ("train.device", "train.num_workers")


class Config(Strict):
    data: DataConfig = DataConfig()
    metric: str = "macro_f1"
    submission: SubmissionConfig = SubmissionConfig()
    folds: FoldsConfig = FoldsConfig()
    model: ModelConfig = ModelConfig()
    image: ImageConfig = ImageConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    tta: TTAConfig = TTAConfig()
    tune: TuneConfig = TuneConfig()
    competition: str | None = None  # the Kaggle competition slug (`comp submit`)
    code_competition: bool = False  # scored by a notebook: submit through `comp export`

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}{did_you_mean(v, METRICS)} (known: {', '.join(METRICS)})")
        return v

    def hash(self, sections: tuple[str, ...] | None = None, *, ignore: tuple[str, ...] = ()) -> str:
        """A short stable hash of the whole config, or of some top-level sections, less `ignore` keys."""
        dumped = self.model_dump(mode="json")
        if sections is not None:
            dumped = {s: dumped[s] for s in sections}
        for dotted in ignore:
            section, key = dotted.split(".")
            dumped.get(section, {}).pop(key, None)
        blob = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def train_hash(self) -> str:
        """Hash of what determines trained weights (tta and tune settings excluded).

        Where a run happens (train.device, train.num_workers) is not part of it: augmentation
        does not depend on the worker count, and a fold begun on one machine may resume on another.
        """
        return self.hash(("data", "metric", "folds", "model", "image", "augment", "train"), ignore=RUN_PLACE_KEYS)


# ---------------------------------------------------------------- key checking


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (`X`, `X | None`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def all_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key the config accepts (leaves and sections)."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        sub = _model_of(field.annotation)
        if sub is not None:
            keys.extend(all_keys(sub, prefix + name + "."))
    return keys


def check_keys(raw: dict[str, Any], model: type[BaseModel] = Config, prefix: str = "", source: str = "") -> None:
    """Raise CompError on the first key `model` does not know, naming the nearest valid one."""
    if not isinstance(raw, dict):
        raise CompError(f"{source}{prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    fields = model.model_fields
    for key, value in raw.items():
        dotted = prefix + str(key)
        if key not in fields:
            siblings = [prefix + f for f in fields]
            hint = did_you_mean(dotted, siblings) or did_you_mean(dotted, all_keys())
            if not hint:
                hint = "; valid keys here: " + ", ".join(siblings)
            raise CompError(f"{source}{dotted} is not a key{hint}")
        sub = _model_of(fields[key].annotation)
        if sub is not None and isinstance(value, dict):
            check_keys(value, sub, dotted + ".", source)


# ---------------------------------------------------------------- loading


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CompError(f"{path} is not valid YAML: {exc}; fix the file and rerun") from exc
    if not isinstance(data, dict):
        raise CompError(f"{path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """A new dict: `top` over `base`, merging nested mappings key by key."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "space":
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict[str, Any]:
    """'train.lr=1e-3' -> {'train': {'lr': 0.001}} (the value parsed as a YAML scalar)."""
    if "=" not in text:
        raise CompError(f"--set expects dotted.key=value, got {text!r}; e.g. --set train.lr=1e-3")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise CompError(f"--set expects dotted.key=value, got {text!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise CompError(f"--set {text!r}: value is not valid YAML ({exc})") from exc
    if isinstance(parsed, str):
        parsed = _yaml11_float(parsed)
    return nest(key, parsed)


def nest(key: str, value: Any) -> dict[str, Any]:
    """'train.lr', 1e-3 -> {'train': {'lr': 1e-3}}."""
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _yaml11_float(text: str) -> Any:
    """YAML 1.1 reads '1e-3' as a string; a user means the number."""
    try:
        return float(text) if any(c in text for c in "eE") and not text.isalpha() else text
    except ValueError:
        return text


def _float_fix(node: Any) -> Any:
    """Apply `_yaml11_float` through a parsed YAML document."""
    if isinstance(node, dict):
        return {k: _float_fix(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_float_fix(v) for v in node]
    return _yaml11_float(node) if isinstance(node, str) else node


def experiment_names(workspace: Path) -> list[str]:
    return sorted(p.stem for p in (workspace / "experiments").glob("*.yaml"))


def build_config(raw: dict[str, Any], source: str = "") -> Config:
    """Validate a merged mapping into a Config, turning pydantic errors into CompErrors."""
    check_keys(raw, source=source)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        raise CompError(f"{source}{loc}: {msg} (got {value!r})") from None


def load_config(workspace: Path | str, experiment: str = "baseline", overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Resolve defaults < comp.yaml < experiments/<experiment>.yaml < overrides."""
    workspace = Path(workspace)
    comp_yaml = workspace / "comp.yaml"
    if not comp_yaml.is_file():
        raise CompError(
            f"no comp.yaml in {workspace.resolve()}; run `comp init` there, "
            f"or `comp demo DIR` for a ready example, or pass --workspace"
        )
    raw = _float_fix(read_yaml(comp_yaml))
    check_keys(raw, source="comp.yaml: ")
    exp_yaml = workspace / "experiments" / f"{experiment}.yaml"
    if exp_yaml.is_file():
        layer = _float_fix(read_yaml(exp_yaml))
        check_keys(layer, source=f"experiments/{experiment}.yaml: ")
        raw = deep_merge(raw, layer)
    elif experiment != "baseline":
        known = experiment_names(workspace)
        raise CompError(
            f"experiment {experiment!r} has no file experiments/{experiment}.yaml"
            f"{did_you_mean(experiment, known)} (experiments: {', '.join(known) or 'none'})"
        )
    for text in overrides:
        layer = parse_override(text)
        check_keys(layer, source="--set ")
        raw = deep_merge(raw, layer)
    return build_config(raw)
