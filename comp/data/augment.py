"""albumentations pipelines from config: train presets or an explicit validated list, one eval pipeline, MixUp/CutMix."""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from comp.core.config import SMALL_SIDE, AugmentConfig, ImageConfig  # noqa: E402
from comp.data.batch_augment import normalize_affine  # noqa: E402
from comp.data.cache import cache_hw  # noqa: E402
from comp.core.errors import CompError, closest  # noqa: E402

log = logging.getLogger("comp.data.augment")

Norm = tuple[float, float, float]
AUTOMATIC = ("Normalize", "ToTensorV2", "ToTensor", "ToFloat", "NormalizeToTensor")


def transform_names() -> list[str]:
    """Every albumentations transform (and composition) a config may name."""
    names = []
    for name, obj in vars(A).items():
        if inspect.isclass(obj) and issubclass(obj, (A.BasicTransform, A.BaseCompose)) and not name.startswith("_"):
            names.append(name)
    return sorted(set(names))


class NormalizeToTensor(ToTensorV2):
    """A.Normalize (max_pixel_value 255) fused with ToTensorV2: HWC image -> contiguous float32 CHW tensor.

    One fused OpenCV pass per channel instead of albumentations' lookup-table normalise plus a
    strided CHW view (about 10x faster at 224 px than both made contiguous).
    ImageDataset.__getitems__ writes whole batches through `write`: no per-image tensor, no stacking.
    """

    def __init__(self, mean: Norm, std: Norm, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self._scale, self._shift = normalize_affine(self.mean, self.std)  # (x/255 - m)/s = x*scale + shift
        self.defer = False  # True while ImageDataset.__getitems__ writes whole batches itself

    def apply(self, img: np.ndarray, **params: Any) -> torch.Tensor | np.ndarray:
        if self.defer:
            return img
        out = np.empty((len(self.mean), *img.shape[:2]), np.float32)  # (C, H, W)
        self.write(img, out)
        return torch.from_numpy(out)

    def write(self, img: np.ndarray, out: np.ndarray) -> None:
        """Normalise an (H, W, C) image into `out`, a preallocated (C, H, W) float32 array."""
        if img.ndim == 2:
            img = img[..., None]
        if img.shape[2] != len(self.mean) or out.shape != (img.shape[2], *img.shape[:2]):
            raise ValueError(f"NormalizeToTensor: image {img.shape} does not fit {out.shape} / {len(self.mean)} channels")
        for c, plane in enumerate(cv2.split(np.ascontiguousarray(img))):
            # one fused pass per plane: out = plane * scale + shift, as float32 (2x numpy's strided multiply-add)
            res = cv2.addWeighted(plane, self._scale[c], plane, 0.0, self._shift[c], dst=out[c], dtype=cv2.CV_32F)
            if not np.may_share_memory(res, out):  # OpenCV allocated instead of writing in place
                out[c] = res

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("mean", "std")


def tail(image: ImageConfig, mean: Norm, std: Norm) -> list[Any]:
    """What every pipeline ends with: resize to the input, then normalise into a float CHW tensor."""
    h, w = image.hw
    return [A.Resize(h, w), NormalizeToTensor(mean, std)]


FLIP_KEEPS = 0.9  # auto flips when a flipped image keeps this share of the probe's above-chance accuracy
PROBE_SIDE = 16  # the flip probe sees images shrunk to 16 x 16
PROBE_ROWS = 2000  # ... and at most this many training images


def geometry(name: str, image: ImageConfig) -> list[Any]:
    """The geometric part of a preset, sized to the image.

    Small images (shorter side < SMALL_SIDE) get a small affine jitter (scale 0.9-1.1, rotate +-10
    degrees, medium and heavy: +-15) and a random crop of the input from the cached image (a shift of up to
    the cache margin; none at their default image.cache_scale 1.0, which keeps the whole frame for evaluation
    too): every view keeps the whole object at the scale evaluation sees. Larger
    images get RandomResizedCrop (area 0.5-1 for light and auto, 0.35-1 for medium and heavy).
    """
    h, w = image.hw
    aspect = w / h
    if min(h, w) >= SMALL_SIDE:
        return [A.RandomResizedCrop(size=(h, w), scale=(0.5 if name in ("light", "auto") else 0.35, 1.0),
                                    ratio=(0.75 * aspect, aspect / 0.75))]
    rotate = 15 if name in ("medium", "heavy") else 10
    return [
        A.Affine(scale=(0.9, 1.1), rotate=(-rotate, rotate), border_mode=cv2.BORDER_REFLECT_101, p=1.0),
        A.RandomCrop(h, w, pad_if_needed=True),
    ]


def preset(name: str, image: ImageConfig, augment: AugmentConfig, *, flip: bool = True) -> list[Any]:
    """The random part of a preset, from a cached-size image to an input-size one (`flip`: HorizontalFlip)."""
    if name == "none":
        return eval_crop(image, augment)
    steps: list[Any] = geometry(name, image) + ([A.HorizontalFlip(p=0.5)] if flip else [])
    if name in ("medium", "heavy"):
        h, w = image.hw
        if min(h, w) >= SMALL_SIDE:  # small images had their affine in `geometry`
            steps.append(A.Affine(rotate=(-15, 15), scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), p=0.5))
        steps.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03, p=0.6))
    if name == "heavy":
        steps += [
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.08))], p=0.3),
            A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.08, 0.2),
                            hole_width_range=(0.08, 0.2), p=0.5),
        ]
    return steps


def flip_symmetry(images: Any, labels: np.ndarray, *, seed: int = 0) -> float | None:
    """How much of the class evidence survives a horizontal flip, measured on training images.

    A linear probe (ridge regression on 16 x 16 pixels, two halves of up to PROBE_ROWS images, each
    half scored by a probe fitted on the other) classifies the held-out images as they are and
    mirrored: (accuracy mirrored - chance) / (accuracy - chance), in [0, 1]. 1: mirrored images look
    like their class (clothes, natural photos); low: the mirror changes what the class looks like
    (digits, text, icons). None when the probe learns nothing above chance (nothing to judge by).
    `images` is indexable (an ImageStore or an (N, H, W, 3) array), `labels` the class of each.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:  # tags or several heads: no single class to probe
        return None
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(labels))[:PROBE_ROWS]
    if len(rows) < 20:
        return None
    x = np.stack([cv2.resize(np.asarray(images[int(i)]), (PROBE_SIDE, PROBE_SIDE), interpolation=cv2.INTER_AREA)
                  for i in rows]).astype(np.float64)
    y = labels[rows]
    classes, y = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        return None
    flat, mirrored = x.reshape(len(x), -1), x[:, :, ::-1].reshape(len(x), -1)
    half = np.arange(len(rows)) % 2 == 0
    correct = correct_mirrored = 0.0
    for fit in (half, ~half):
        mu, sd = flat[fit].mean(0), flat[fit].std(0) + 1e-6
        a = (flat[fit] - mu) / sd
        targets = np.eye(len(classes))[y[fit]]
        ridge = 0.1 * len(a) + 1.0
        weights = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ (targets - targets.mean(0)))
        for data, out in ((flat, "plain"), (mirrored, "mirrored")):
            hits = (((data[~fit] - mu) / sd @ weights).argmax(1) == y[~fit]).sum()
            if out == "plain":
                correct += hits
            else:
                correct_mirrored += hits
    accuracy, accuracy_mirrored = correct / len(rows), correct_mirrored / len(rows)
    chance = np.bincount(y).max() / len(y)
    if accuracy - chance < 0.05:
        return None
    return float(np.clip((accuracy_mirrored - chance) / (accuracy - chance), 0.0, 1.0))


class Rows:
    """Rows `index` of an indexable image source (an ImageStore), as one indexable sequence."""

    def __init__(self, images: Any, index: np.ndarray) -> None:
        self.images, self.index = images, np.asarray(index)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images[int(self.index[i])]


def auto_choice(image: ImageConfig, images: Any = None, labels: np.ndarray | None = None, *,
                seed: int = 0, hflip: bool | None = None) -> dict[str, Any]:
    """What `augment.preset: auto` trains with, decided on the training images when they are given.

    Geometry by the image size (see `geometry`); HorizontalFlip only when `flip_symmetry` of the
    training images is at least FLIP_KEEPS (without images, or when the probe cannot judge: no flip),
    unless `hflip` (augment.hflip) decides it: then the probe does not run.
    """
    h, w = image.hw
    probe = hflip is None and images is not None and labels is not None
    score = flip_symmetry(images, labels, seed=seed) if probe else None
    return {"preset": "auto", "geometry": "jitter" if min(h, w) < SMALL_SIDE else "resized_crop",
            "flip": hflip if hflip is not None else score is not None and score >= FLIP_KEEPS,
            "flip_symmetry": None if score is None else round(score, 3)}


def eval_crop(image: ImageConfig, augment: AugmentConfig) -> list[Any]:
    """Centre crop from the cached size to the input (nothing when they are equal)."""
    h, w = image.hw
    ch, cw = cache_hw(image, augment)
    return [] if (ch, cw) == (h, w) else [A.CenterCrop(h, w, pad_if_needed=True)]


def build_one(spec: Any, where: str) -> Any:
    """One albumentations object from {Name: {arg: value}} (compositions take a `transforms` list)."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise CompError(
            f"{where}: each transform must be a one-key mapping like {{HorizontalFlip: {{p: 0.5}}}}, got {spec!r}"
        )
    name, args = next(iter(spec.items()))
    if args is not None and not isinstance(args, dict):
        raise CompError(f"{where}: arguments of {name} must be a mapping like {{p: 0.5}}, got {args!r}")
    args = dict(args or {})
    if name in AUTOMATIC:
        raise CompError(
            f"{where}: {name} is added at the end of every pipeline already; remove it "
            "(normalisation comes from model.mean/model.std, or the model's pretrained config)"
        )
    cls = getattr(A, str(name), None)
    if not (inspect.isclass(cls) and issubclass(cls, (A.BasicTransform, A.BaseCompose))):
        hits = closest(str(name), transform_names(), n=3)
        hint = f"; did you mean {', '.join(hits)}?" if hits else "; see https://albumentations.ai/docs for names"
        raise CompError(f"{where}: {name!r} is not an albumentations transform{hint}")
    if issubclass(cls, A.BaseCompose):
        inner = args.pop("transforms", None)
        if not isinstance(inner, (list, tuple)):
            raise CompError(f"{where}: {name} needs a `transforms` list, got {inner!r}")
        args["transforms"] = [build_one(s, f"{where}.{name}[{i}]") for i, s in enumerate(inner)]
    return _construct(cls, args, where)


def _construct(cls: type, args: dict[str, Any], where: str) -> Any:
    """cls(**args), with unknown or invalid arguments reported by name."""
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    unknown = [k for k in args if k not in valid]
    if unknown:
        raise CompError(
            f"{where}: {cls.__name__} has no argument {unknown[0]!r}; valid arguments: {', '.join(valid)}"
        )
    try:
        return cls(**args)
    except (ValueError, TypeError) as exc:  # albumentations wraps pydantic's ValidationError in a ValueError
        field, why = _explain(exc)
        bad = repr(field) if field else ", ".join(map(repr, args))
        raise CompError(
            f"{where}: {cls.__name__} rejected argument {bad} (got {args.get(field, args)!r}): {why}; "
            f"valid arguments: {', '.join(valid)}"
        ) from None


def _explain(exc: Exception) -> tuple[str | None, str]:
    """(argument name, reason) from a pydantic validation error inside `exc`, else (None, message)."""
    for err in (exc, exc.__cause__, exc.__context__):
        errors = getattr(err, "errors", None)
        if callable(errors):
            try:
                first = errors()[0]
                return str(first["loc"][0]), "; ".join(sorted({e["msg"] for e in errors()}))
            except (TypeError, KeyError, IndexError):
                break
    return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def explicit(augment: AugmentConfig) -> list[Any]:
    """augment.transforms built and validated (they replace the preset)."""
    return [build_one(spec, f"augment.transforms[{i}]") for i, spec in enumerate(augment.transforms)]


def build_train_transform(image: ImageConfig, augment: AugmentConfig, mean: Norm, std: Norm, *, seed: int = 0,
                          device: str = "auto", images: Any = None, labels: np.ndarray | None = None) -> Any:
    """Training pipeline: augment.transforms if given, else the preset; then resize, normalise, tensor.

    `augment.preset: auto` decides its flip on `images`/`labels` (the fold's training rows), logs the
    decision (the console and the fold's train.log) and keeps it on the pipeline as `.auto`.

    With augment.backend torch (the default `auto` where it covers the preset: see on_batches) the result is a
    comp.data.batch_augment.BatchGeometry: the same geometry and flip, drawn per sample and applied to whole uint8
    batches on the training device.
    """
    auto = None
    batched = on_batches(image, augment, device)
    if augment.preset == "auto" and not augment.transforms:
        auto = auto_choice(image, images, labels, seed=seed, hflip=augment.hflip)
        why = "augment.hflip" if augment.hflip is not None else \
            "flip symmetry %s of the training images; flips from %.2f" % (
                "not measured" if auto["flip_symmetry"] is None else f"{auto['flip_symmetry']:.3f}", FLIP_KEEPS)
        log.info("augment auto: %s geometry, flip %s (%s)%s", auto["geometry"], "on" if auto["flip"] else "off", why,
                 "; on whole batches in torch" if batched else "")
    flip = auto["flip"] if auto else augment.preset != "none" and augment.hflip is not False
    if batched:
        pipeline = batch_geometry(image, augment, mean, std, flip=flip, seed=seed)
    else:
        steps = explicit(augment) if augment.transforms else preset(augment.preset, image, augment, flip=flip)
        pipeline = A.Compose([*steps, *tail(image, mean, std)], seed=seed)
    pipeline.auto = auto
    return pipeline


BATCH_PRESETS = ("auto", "light", "none")  # geometry and flips only: what comp.data.batch_augment renders
# On a CPU, rendering in torch beats albumentations' per-image calls only on small inputs (one core, light preset,
# microseconds per image: 32 px 30 vs 133, 64 px 121 vs 168, 96 px 269 vs 216, 224 px 1253 vs 170): the auto
# backend renders in torch on a GPU, and on a CPU up to this side
CPU_BATCH_SIDE = 64


def on_batches(image: ImageConfig, augment: AugmentConfig, device: str = "auto") -> bool:
    """Whether the training augmentation runs on whole batches in torch (augment.backend, `auto` resolved: where
    torch covers the preset, on a GPU, or on a CPU for inputs up to CPU_BATCH_SIDE)."""
    from comp.data.workers import uses_gpu

    covered = not augment.transforms and augment.preset in BATCH_PRESETS
    if augment.backend == "torch" and not covered:
        what = "an augment.transforms list" if augment.transforms else f"augment.preset={augment.preset!r}"
        raise CompError(f"augment.backend=torch renders the presets {', '.join(BATCH_PRESETS)} (geometry and flips), "
                        f"not {what}; set augment.backend: albumentations (or auto, which picks it for you)")
    if augment.backend != "auto":
        return augment.backend == "torch"
    return covered and (max(image.hw) <= CPU_BATCH_SIDE or uses_gpu(device))


def batch_geometry(image: ImageConfig, augment: AugmentConfig, mean: Norm, std: Norm, *, flip: bool,
                   seed: int = 0) -> Any:
    """The preset's geometry (see `geometry`) as a BatchGeometry from the cached size to image.size."""
    from comp.data.batch_augment import BatchGeometry

    h, w = image.hw
    name = augment.preset
    if name == "none":
        kind = "centre"
    else:
        kind = "jitter" if min(h, w) < SMALL_SIDE else "resized_crop"
    return BatchGeometry(kind, in_hw=cache_hw(image, augment), out_hw=(h, w), flip=flip, mean=mean, std=std,
                         scale=(0.9, 1.1), rotate=10.0, area=(0.5, 1.0), seed=seed)


def build_eval_transform(image: ImageConfig, augment: AugmentConfig, mean: Norm, std: Norm) -> A.Compose:
    """The one pipeline for validation and test prediction: centre crop, resize, normalise, tensor (no random step)."""
    return A.Compose([*eval_crop(image, augment), *tail(image, mean, std)], seed=0)


class SeededMixup:
    """timm's Mixup with its own RNG: timm draws from global numpy state, which this saves and restores."""

    def __init__(self, mixup: Any, seed: int) -> None:
        self.mixup = mixup
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Draw from here on as a new SeededMixup of `seed` would (the engine reseeds it every epoch)."""
        self._state = np.random.RandomState(seed).get_state()

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outer = np.random.get_state()
        np.random.set_state(self._state)
        try:
            return self.mixup(x, target)
        finally:
            self._state = np.random.get_state()
            np.random.set_state(outer)


def build_mixup(aug: AugmentConfig, n_classes: int, *, batch_size: int | None, seed: int,
                label_smoothing: float = 0.0) -> SeededMixup | None:
    """Batch MixUp/CutMix (soft targets, train.label_smoothing), or None when both alphas are 0. batch_size None:
    train.batch_size auto (its candidates are even)."""
    if aug.mixup_alpha <= 0 and aug.cutmix_alpha <= 0:
        return None
    if batch_size is not None and batch_size % 2:
        raise CompError(
            f"MixUp/CutMix needs an even train.batch_size, got {batch_size}; use {batch_size + 1}"
        )
    from timm.data import Mixup

    mixup = Mixup(mixup_alpha=aug.mixup_alpha, cutmix_alpha=aug.cutmix_alpha, prob=aug.mix_prob,
                  switch_prob=0.5, mode="batch", label_smoothing=label_smoothing, num_classes=n_classes)
    return SeededMixup(mixup, seed)
