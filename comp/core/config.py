"""Typed, validated, immutable configuration: defaults < comp.yaml < experiments/<exp>.yaml < --set.

One `Config` object holds the competition (data, metric, submission, folds) and the
experiment (model, image, augment, train, tta, tune). It is resolved once per command and
written beside every output with its hash; nothing mutates it afterwards.
"""

from __future__ import annotations

import types
import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import model_validator, BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from comp.core.errors import CompError, did_you_mean
from comp.core.metrics import ALL_NAMES as METRICS
from comp.core.layout import check_name
# read_yaml, deep_merge, nest, parse_override, _float_fix: comp.core.config's readers for callers
from comp.core.yamlio import _float_fix, deep_merge, load_yaml, nest, parse_override, read_yaml  # noqa: F401


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
    classes: tuple[Any, ...] | None = None  # explicit class (or tag) order; default: sorted labels
    label_cols: tuple[str, ...] | None = None  # multilabel: one 0/1 column per tag (instead of label_col's tags)
    tag_sep: str | None = None  # multilabel: the separator of label_col's tags (default: whitespace)
    positive: Any | None = None  # binary: the positive label (default: the second in class order, e.g. 1)
    targets: dict[str, str] | None = None  # multitask: head name -> train.csv column
    combine: str | dict[str, Any] | None = None  # multitask: the submitted label from the heads, e.g. "mask*6 + gender*3 + age"
    allow_outside_root: bool | None = None  # true: image paths may leave image_root (../x.png, absolute) without a warning


class SubmissionConfig(Strict):
    id_col: str = "id"
    target_col: str = "label"
    # multiclass/multitask: label | probabilities; multilabel: tags | probabilities; binary: prob | label;
    # regression: value. None: the task's first.
    kind: Literal["label", "probabilities", "probs", "tags", "prob", "value"] | None = None
    sample_csv: str | None = None


class FoldsConfig(Strict):
    k: int = 5
    seed: int = 42
    stratify: tuple[str, ...] = ()  # extra columns stratified with the label, e.g. (gender,)

    @field_validator("k")
    @classmethod
    def _k(cls, v: int) -> int:
        if v < 2:
            raise ValueError("folds.k must be 2 or more")
        return v


class ModelConfig(Strict):
    name: str = "resnet18"
    pretrained: bool = True
    pretrained_path: str | None = None  # local .pth/.pt/.safetensors; overrides the hub
    drop_rate: float = 0.0
    drop_path_rate: float | None = None
    mean: tuple[float, float, float] | None = None  # default: the model's pretrained config
    std: tuple[float, float, float] | None = None

    @property
    def fine_tunes(self) -> bool:
        """Whether training starts from pretrained weights (the hub's, or a local file or folder)."""
        return self.pretrained or self.pretrained_path is not None


SMALL_SIDE = 128  # below this many pixels the augmentation presets jitter (shift, scale, rotate), not RandomResizedCrop
CACHE_SCALE_LARGE = 1.14  # image.cache_scale's default from SMALL_SIDE up


class ImageConfig(Strict):
    size: int | tuple[int, int] = 224  # int or (height, width)
    bbox_margin: float = 0.1  # fraction of the box added on each side before cropping
    cache: bool = True  # decode/crop/resize once into a uint8 memory-mapped cache
    # cached images are this much larger than the input, the margin random crops draw from; validation and prediction
    # centre-crop it away. null: default_cache_scale (set when the Config is read)
    cache_scale: float | None = None
    # progressive resizing: [[epochs_done, size], ...]; from that many finished epochs on, train at that size
    # (int or [h, w], at most image.size); validation and predict always use image.size
    schedule: tuple[tuple[int, int | tuple[int, int]], ...] | None = None

    @property
    def hw(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: Any) -> Any:
        if v is None:
            return v
        if not v:
            raise ValueError("image.schedule must list at least one [epochs_done, size] pair, or be null")
        starts = [int(e) for e, _ in v]
        if starts[0] != 0 or starts != sorted(set(starts)):
            raise ValueError(f"image.schedule must start at epoch 0 and increase, e.g. [[0, 64], [5, 96]]; got starts {starts}")
        for _, size in v:
            hw = (size, size) if isinstance(size, int) else tuple(size)
            if min(hw) < 1:
                raise ValueError(f"image.schedule sizes must be positive, got {size}")
        return v

    def size_at(self, epoch: int) -> tuple[int, int]:
        """The (h, w) training size of 0-based `epoch`: image.schedule's entry in force, else image.size."""
        if not self.schedule:
            return self.hw
        size = [s for e, s in self.schedule if e <= epoch][-1]
        return (size, size) if isinstance(size, int) else tuple(size)


def default_cache_scale(image: ImageConfig, augment: AugmentConfig) -> float:
    """image.cache_scale when unset: CACHE_SCALE_LARGE from SMALL_SIDE up (RandomResizedCrop, then the centre crop of
    ImageNet evaluation) and for an augment.transforms list (its crops draw from the margin); else 1.0. Small inputs
    jitter instead of cropping, and their objects tend to fill the frame: a centre crop would cut off what the
    model needs (Fashion-MNIST at 32 px: hidden accuracy 0.756 with the margin, 0.808 without)."""
    return CACHE_SCALE_LARGE if min(image.hw) >= SMALL_SIDE or augment.transforms else 1.0


class AugmentConfig(Strict):
    # auto: sized to the image, HorizontalFlip only when the training images are flip-symmetric (comp.data.augment)
    preset: Literal["auto", "none", "light", "medium", "heavy"] = "auto"
    transforms: tuple[dict[str, Any], ...] = ()  # albumentations list; replaces the preset
    # where the training augmentation runs: torch draws the geometry per sample and moves whole uint8 batches on the
    # training device (presets auto, light, none: geometry and flips only); albumentations runs every image through
    # its pipeline on the CPU (any preset or list); auto: torch where it covers the pipeline (comp.data.batch_augment)
    backend: Literal["auto", "torch", "albumentations"] = "auto"
    # HorizontalFlip in a preset: null = the preset's own choice (auto: the flip probe on the training images; light,
    # medium, heavy: on); true/false forces it (not with preset none or an explicit transforms list)
    hflip: bool | None = None
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0

    @model_validator(mode="after")
    def _hflip_with_a_preset(self) -> AugmentConfig:
        if self.hflip is not None and (self.transforms or self.preset == "none"):
            where = "an explicit augment.transforms list" if self.transforms else "augment.preset none"
            raise ValueError(f"augment.hflip applies to the presets auto, light, medium and heavy, not to {where}; "
                             "remove augment.hflip" + (" and put HorizontalFlip in the list" if self.transforms else ""))
        return self


class SWAConfig(Strict):
    """Stochastic weight averaging: the weights averaged once per epoch from `start` (fraction of epochs) on."""

    start: float = 0.75
    lr: float | None = None  # None: keep the schedule; else a constant lr from `start` on (torch's SWALR)

    @field_validator("start")
    @classmethod
    def _start(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError("train.swa.start is a fraction of the epochs in [0, 1)")
        return v

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("train.swa.lr must be positive (or null to keep the schedule)")
        return v


class DistillConfig(Strict):
    """Knowledge distillation from another experiment's out-of-fold probabilities (comp/recipes/distill.py)."""

    teacher: str
    alpha: float = 0.5  # weight of the teacher term; 1 - alpha weighs the label term
    temperature: float = 2.0

    @field_validator("teacher")
    @classmethod
    def _teacher(cls, v: str) -> str:
        return check_name(v)

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError("train.distill.alpha must lie in [0, 1]")
        return v

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("train.distill.temperature must be positive")
        return v


class PseudoConfig(Strict):
    """Pseudo-labelled test rows added to every fold's training rows (written by `comp pseudo`)."""

    source: str  # the submission the labels come from
    sha256: str  # of the submission's csv when the table was made
    threshold: float = 0.9  # rows whose top probability is below it are left out
    soft: bool = False  # per-class probabilities instead of the top class
    table_sha256: str | None = None  # of experiments/<exp>/pseudo.csv, checked before training


# train.lr's default (AdamW), by whether the model starts from pretrained weights (benchmarks/README.md): fine-tuning
# mobilenetv2_100 on the quality suite, 1e-3 beat both 3e-4 (the old default for every model) and 2e-3; from scratch,
# the best of an lr grid from 1e-4 to 3e-2 was 3e-3 (resnet10t) and 1e-2 (test_resnet), never 3e-4.
LR_FINETUNE = 1.0e-3
LR_SCRATCH = 3.0e-3


class TrainConfig(Strict):
    epochs: int = 10
    # auto (comp.data.dataset.auto_batch_size): from scratch the largest of 64, 32, 16 that gives the run 1,000
    # optimizer steps, fine-tuning the larger of 64, 32 that gives 300: small data sets get more updates from the
    # same epochs, large ones keep the batch a GPU is fed best with
    batch_size: int | Literal["auto"] = "auto"
    # null: LR_FINETUNE when model.pretrained or model.pretrained_path, else LR_SCRATCH (set when the Config is read);
    # auto: the learning-rate finder's suggestion (comp.train.lrfind)
    lr: float | Literal["auto"] | None = None
    weight_decay: float = 0.01
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9
    scheduler: Literal["cosine", "onecycle", "step", "none"] = "cosine"
    warmup_epochs: float = 1.0
    # fine-tuning: the lr of everything but the classifier head is train.lr x backbone_lr_scale (x layer_decay ** depth
    # below the head, timm's layer-wise decay, when set); freeze_epochs: the backbone holds still (lr 0) for this many
    # epochs while the new head learns, then warms up and follows the schedule
    backbone_lr_scale: float = 1.0
    layer_decay: float | None = None
    freeze_epochs: float = 0.0
    step_size: int = 3
    step_gamma: float = 0.1
    # auto: ce (multiclass, multitask: summed over heads), bce (multilabel, binary), mse (regression)
    loss: Literal["auto", "ce", "focal", "f1", "weighted_ce", "bce", "asl", "mse", "huber"] = "auto"
    pos_weight: float | Literal["auto"] | None = None  # bce/asl: weight of positives (auto: negatives/positives per output)
    asl_gamma_neg: float = 4.0  # asymmetric loss (loss: asl): focusing on negatives ...
    asl_gamma_pos: float = 0.0  # ... and on positives
    asl_clip: float = 0.05  # probability margin shifted off easy negatives
    task_weights: dict[str, float] | None = None  # multitask: loss weight per head (default 1 each)
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    sampler: Literal["balanced", "sqrt"] | None = None
    sample_ratio: float = 1.0  # samples drawn per epoch by the sampler / training rows
    # which epoch's weights each fold keeps (they predict the test set, and their OOF is the reported CV):
    # last: the schedule's final epoch, chosen on nothing, so the CV is honest; nested: the epoch that scores best on
    # the other folds (every epoch's weights are kept in fold{i}/epochs/ until all folds finished); best: the epoch
    # that scored best on the fold's own validation rows (optimistic; scores.json adds the nested estimate beside it)
    checkpoint: Literal["last", "nested", "best"] = "last"
    early_stopping: int | None = None  # epochs without improvement on the fold's own rows; None = off
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    ema: bool = False
    ema_decay: float = 0.999
    seed: int = 42
    grad_accum: int = 1
    clip_grad: float | None = None
    compile: bool = False
    channels_last: bool = True  # applied on CUDA only
    num_workers: int | Literal["auto"] = "auto"  # auto: from the device and the CPU cores (comp.data.workers)
    # best.pt/last.pt reach the disk once this many seconds passed since the last write, at the fold's end and when
    # the fold is stopped (Ctrl-C, SIGTERM, an error); 0: after every epoch. A hard kill loses at most this much.
    checkpoint_seconds: float = 60.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    sync_bn: bool = False  # SyncBatchNorm across DDP ranks (torchrun); no effect in one process
    seeds: tuple[int, ...] | None = None  # train each fold once per seed (fold{i}/seed{s}/); None: once, train.seed
    swa: SWAConfig | None = None
    distill: DistillConfig | None = None

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("train.seeds must list distinct seeds, e.g. [42, 43, 44] (or be null)")
        return v

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML reads `amp: off` as false

    @field_validator("checkpoint_seconds", "freeze_epochs")
    @classmethod
    def _not_negative(cls, v: float, info: ValidationInfo) -> float:
        if v < 0:
            raise ValueError(f"train.{info.field_name} must be 0 or more, got {v}")
        return v

    @field_validator("backbone_lr_scale", "layer_decay")
    @classmethod
    def _scale(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is not None and not 0 <= v <= 1:
            raise ValueError(f"train.{info.field_name} must be between 0 and 1 (a fraction of train.lr), got {v}")
        return v

    @field_validator("epochs", "batch_size", "grad_accum")
    @classmethod
    def _at_least_one(cls, v: int | str, info: ValidationInfo) -> int | str:
        if v != "auto" and v < 1:
            raise ValueError(f"train.{info.field_name} must be 1 or more")
        return v

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, v: float | str | None) -> float | str | None:
        if v is not None and v != "auto" and v <= 0:
            raise ValueError("train.lr must be positive")
        return v


class TTAConfig(Strict):
    # none | hflip | flip | d4 | multiscale | five_crop. Default none: on the quality suite (digits, icons,
    # Fashion-MNIST) hflip cost 0.005-0.045 of the hidden score; `comp predict --tta auto` chooses on OOF.
    transforms: str = "none"
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


RUN_PLACE_KEYS = ("train.device", "train.num_workers", "train.checkpoint_seconds")
UNSET_NOT_HASHED = ("augment.hflip", "train.seeds", "train.swa", "train.distill", "image.schedule", "pseudo",
                    "data.allow_outside_root")


class Config(Strict):
    task: Literal["multiclass", "multilabel", "binary", "regression", "multitask"] = "multiclass"
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
    track: tuple[Literal["tensorboard", "mlflow", "wandb"], ...] = ()  # experiment trackers (not in train_hash)
    pseudo: PseudoConfig | None = None  # pseudo-labelled test rows (`comp pseudo`)

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}{did_you_mean(v, METRICS)} (known: {', '.join(METRICS)})")
        return v

    @model_validator(mode="after")
    def _fits_task(self) -> Config:
        """The metric, the loss and the submission kind must fit the task; multitask needs its heads."""
        from comp.core.metrics import BY_KIND
        from comp.core.tasks import LOSSES, SUBMISSION_KINDS

        fits = BY_KIND[self.task]
        if self.metric not in fits:
            raise ValueError(f"metric {self.metric!r} does not fit task {self.task!r}; use one of: {', '.join(fits)}")
        if self.train.loss != "auto" and self.train.loss not in LOSSES[self.task]:
            raise ValueError(f"train.loss {self.train.loss!r} does not fit task {self.task!r}; use auto or one of: "
                             f"{', '.join(LOSSES[self.task])}")
        kind = "probabilities" if self.submission.kind == "probs" else self.submission.kind
        if kind is not None and kind not in SUBMISSION_KINDS[self.task]:
            raise ValueError(f"submission.kind {self.submission.kind!r} does not fit task {self.task!r}; use one of: "
                             f"{', '.join(SUBMISSION_KINDS[self.task])}")
        if self.task == "multitask" and not self.data.targets:
            raise ValueError("task multitask needs data.targets: {head: column, ...} (one classification head each)")
        if self.data.combine is not None and self.task != "multitask":
            raise ValueError(f"data.combine builds a label from the heads of task multitask; task is {self.task!r}")
        for dotted, value in self.filled_defaults().items():
            section, key = dotted.split(".")
            part = getattr(self, section)
            if getattr(part, key) is None:  # frozen: a validator may still complete its own fields
                object.__setattr__(self, section, part.model_copy(update={key: value}))
        return self

    def filled_defaults(self) -> dict[str, Any]:
        """What an unset key becomes, worked out from the rest of the config (dotted key -> value): train.lr by
        whether the model is fine-tuned, image.cache_scale by the input size (default_cache_scale). The Config is
        read with them filled in, so config.yaml records and hashes the numbers."""
        return {"train.lr": LR_FINETUNE if self.model.fine_tunes else LR_SCRATCH,
                "image.cache_scale": default_cache_scale(self.image, self.augment)}

    @property
    def uses_recipes(self) -> bool:
        """Pseudo-labelled rows or a teacher: what fold-train must be handed as its recipes (comp.recipes.inputs)."""
        return self.pseudo is not None or self.train.distill is not None

    def hash(self, sections: tuple[str, ...] | None = None, *, ignore: tuple[str, ...] = ()) -> str:
        """A short stable hash of the whole config, or of some top-level sections, less `ignore` keys."""
        dumped = self.model_dump(mode="json")
        for dotted in UNSET_NOT_HASHED:  # keys added later hash as before while unset (old experiments keep their hash)
            section, _, key = dotted.partition(".")
            node = dumped.get(section) if key else dumped
            if isinstance(node, dict) and node.get(key or section, 0) is None:
                node.pop(key or section)
        if sections is not None:
            sections = tuple(s for s in sections if s in dumped)
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
        return self.hash(("task", "data", "metric", "folds", "model", "image", "augment", "train"),
                         ignore=(*RUN_PLACE_KEYS, "data.allow_outside_root"))  # a warning's switch, not the data

    @property
    def submission_kind(self) -> str:
        """submission.kind resolved for the task (its default when unset)."""
        from comp.core.tasks import submission_kind

        return submission_kind(self.task, self.submission.kind)


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


def experiment_names(workspace: Path) -> list[str]:
    return sorted(p.stem for p in (workspace / "experiments").glob("*.yaml"))


def build_config(raw: dict[str, Any], source: str = "", origins: dict[str, str] | None = None) -> Config:
    """Validate a merged mapping into a Config; a pydantic error becomes one CompError line naming key and file."""
    check_keys(raw, source=source)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise CompError(validation_message(exc.errors()[0], raw, source.rstrip(": "), origins or {})) from None


def validation_message(err: Any, raw: dict[str, Any], source: str, origins: dict[str, str]) -> str:
    """`key: what is wrong or expected, got VALUE (where it was set)`, the value once, no pydantic suffixes."""
    key = field_path(err["loc"])
    value = lookup(raw, key)
    if err["type"] in ("value_error", "assertion_error"):
        msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        text = msg if msg.startswith(key) else f"{key}: {msg}"
    else:
        text = f"{key}: expected {expected(key)}"
    if repr(value) not in text:
        text += f", got {value!r}"
    where = key_origin(key, origins) or source
    return f"{text} ({where})" if where else text


def field_path(loc: tuple[Any, ...]) -> str:
    """The dotted config key of a pydantic error location, less what pydantic appends (`.int`, `function-after[...]`)."""
    model: type[BaseModel] | None = Config
    parts: list[str] = []
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            break
        parts.append(part)
        model = _model_of(model.model_fields[part].annotation)
    return ".".join(parts) or "config"


def lookup(raw: dict[str, Any], key: str) -> Any:
    """The value at a dotted key of a nested mapping (None when absent)."""
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


EXPECTED = {"image.size": "an integer or [h, w]"}
WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null", Any: "any value"}
PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}


def expected(key: str) -> str:
    """What a key accepts, in words, from its annotation."""
    if key in EXPECTED:
        return EXPECTED[key]
    model: Any = Config
    annotation: Any = Config
    for part in key.split(".") if key != "config" else ():
        annotation = model.model_fields[part].annotation
        model = _model_of(annotation)
    return describe(annotation)


def describe(annotation: Any) -> str:
    """An annotation in words: `int | tuple[int, int]` -> 'an integer or a list of 2 integers'."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args)) if len(args) > 1 else str(args[0])
    if origin is tuple:
        count = "" if args and args[-1] is Ellipsis else f"{len(args)} "
        return f"a list of {count}{PLURALS.get(args[0], 'values') if args else 'values'}"
    if origin is dict or annotation is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "a mapping of keys"
    return WORDS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def key_sources(layer: dict[str, Any], label: str, prefix: str = "") -> dict[str, str]:
    """{dotted key: label} for every key, section or leaf, that a layer sets."""
    out = {}
    for key, value in layer.items():
        dotted = prefix + str(key)
        out[dotted] = label
        if isinstance(value, dict) and key != "space":
            out.update(key_sources(value, label, dotted + "."))
    return out


def key_origin(key: str, origins: dict[str, str]) -> str:
    """Where a key's value was set: its own entry, else its nearest parent's, else those of its children."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in origins:
            return origins[".".join(parts[:n])]
    below = sorted({label for k, label in origins.items() if k.startswith(key + ".")})
    return ", ".join(below)


def load_config(workspace: Path | str, experiment: str = "baseline", overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Resolve defaults < comp.yaml < experiments/<experiment>.yaml < overrides."""
    return resolve_config(workspace, experiment, overrides)[0]


def resolve_config(workspace: Path | str, experiment: str = "baseline",
                   overrides: tuple[str, ...] | list[str] = ()) -> tuple[Config, dict[str, str]]:
    """(the resolved Config, {dotted key: the layer that set it}) for defaults < comp.yaml < experiment < --set."""
    workspace = Path(workspace)
    comp_yaml = workspace / "comp.yaml"
    if not comp_yaml.is_file():
        raise CompError(
            f"no comp.yaml here ({workspace.resolve()}): run comp init, "
            f"or `comp demo DIR` for a ready example, or pass --workspace"
        )
    check_name(experiment)
    raw = _float_fix(read_yaml(comp_yaml))
    check_keys(raw, source="comp.yaml: ")
    origins = key_sources(raw, "comp.yaml")
    exp_yaml = workspace / "experiments" / f"{experiment}.yaml"
    if exp_yaml.is_file():
        layer = _float_fix(read_yaml(exp_yaml))
        check_keys(layer, source=f"experiments/{experiment}.yaml: ")
        raw = deep_merge(raw, layer)
        origins |= key_sources(layer, f"experiments/{experiment}.yaml")
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
        origins |= key_sources(layer, "--set")
    return build_config(raw, origins=origins), origins


def value_sources(cfg: Config, origins: dict[str, str]) -> list[tuple[str, Any, str]]:
    """(dotted key, value, source) for every leaf of the resolved config; source 'default' when no layer set it."""
    rows = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node and not prefix.endswith("space"):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
            return
        rows.append((prefix, node, origins.get(prefix, "default")))

    walk(cfg.model_dump(mode="json"), "")
    return rows
