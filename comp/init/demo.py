"""The embedded demo workspace: scikit-learn's handwritten digits shaped like the reference task.

Each source digit is a "subject" photographed several times (random affine, brightness, tint and
noise variants written as small PNGs), so several images share a group exactly as several photos
share a person; classes are imbalanced; train and test are split by subject; a sample submission
sits in data/ and the hidden solution outside it (hidden/solution.csv).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from comp.core.errors import CompError
from comp.core.progress import SILENT, Progress
from comp.core.layout import write_csv, write_text, write_with

COMP_YAML = """\
# The demo competition: digits photographed several times per subject; macro-F1 like the reference task.
data:
  train_csv: data/train.csv
  test_csv: data/test.csv
  image_root: data/images
  id_col: id
  image_col: path
  label_col: label
  group_col: subject      # photos of one subject never sit on both sides of a split
metric: macro_f1
submission:
  id_col: ImageID
  target_col: ans
  kind: label
  sample_csv: data/sample_submission.csv
folds:
  k: 5
  seed: 42
"""

BASELINE_YAML = """\
# CPU-friendly baseline: a tiny timm ResNet at 32 px, trained from scratch (no downloads).
model: {name: test_resnet, pretrained: false}
image: {size: 32, cache_scale: 1.0}
augment: {preset: auto}
train: {epochs: 8, batch_size: 32, lr: 3.0e-3, weight_decay: 0.01, warmup_epochs: 0.5,
        scheduler: cosine, loss: ce, early_stopping: null, num_workers: 0, seed: 42}
tta: {transforms: hflip, merge: mean}
tune:
  trials: 3
  epochs: 2
  folds: [0]
  space:
    train.lr: {float: [1.0e-3, 1.0e-2], log: true}
    train.label_smoothing: {float: [0.0, 0.2]}
"""

EFFNET_YAML = """\
# A second architecture for the ensemble: timm's tiny EfficientNet, class-balanced sampling.
model: {name: test_efficientnet, pretrained: false}
image: {size: 32, cache_scale: 1.0}
augment: {preset: auto}
train: {epochs: 6, batch_size: 32, lr: 5.0e-3, weight_decay: 0.01, warmup_epochs: 1,
        scheduler: cosine, loss: ce, sampler: sqrt, early_stopping: null, num_workers: 0, seed: 43}
tta: {transforms: hflip, merge: mean}
"""


@dataclass(frozen=True)
class DemoData:
    root: Path
    n_train: int
    n_test: int
    n_subjects: int
    solution: Path


def photograph(digit: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """One 'photo' of an 8x8 digit (values 0..16): upscaled, tilted, shifted, tinted, noisy RGB."""
    base = Image.fromarray((digit.reshape(8, 8) / 16.0 * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    angle = rng.uniform(-12, 12)
    scale = rng.uniform(0.88, 1.08)
    shift = rng.uniform(-size / 14, size / 14, 2)
    img = base.rotate(angle, resample=Image.BILINEAR, translate=tuple(shift))
    img = img.resize((max(1, int(size * scale)),) * 2, Image.BILINEAR)
    canvas = Image.new("L", (size, size))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    gray = np.asarray(canvas, dtype=np.float64) / 255.0
    ink = rng.uniform(0.55, 1.0, 3)  # colour of the strokes
    paper = rng.uniform(0.0, 0.35, 3)  # colour of the background
    rgb = paper + gray[..., None] * (ink - paper)
    rgb = rgb * rng.uniform(0.7, 1.2) + rng.normal(0, 0.05, rgb.shape)
    return (rgb.clip(0, 1) * 255).round().astype(np.uint8)


def pick_subjects(y: np.ndarray, rng: np.random.Generator, *, max_per_class: int, decay: float) -> np.ndarray:
    """Indices of kept digits: class c keeps about max_per_class * decay**rank(c) subjects (imbalance)."""
    order = rng.permutation(10)  # which digits are rare differs by seed
    keep = []
    for rank, c in enumerate(order):
        idx = rng.permutation(np.flatnonzero(y == c))
        keep.extend(idx[: max(6, int(round(max_per_class * decay**rank)))])
    return np.sort(np.array(keep))


def build_demo(
    root: Path,
    *,
    photos: int = 4,
    size: int = 32,
    max_per_class: int = 60,
    decay: float = 0.84,
    test_share: float = 0.2,
    seed: int = 0,
    force: bool = False,
    progress: Progress = SILENT,
) -> DemoData:
    """Write the demo workspace into `root`: comp.yaml, experiments/*.yaml, data/, hidden/solution.csv."""
    from sklearn.datasets import load_digits

    root = Path(root)
    if (root / "comp.yaml").exists() and not force:
        raise CompError(f"{root / 'comp.yaml'} exists; pass --force to rebuild the demo there, or choose another DIR")
    rng = np.random.default_rng(seed)
    digits = load_digits()
    kept = pick_subjects(digits.target, rng, max_per_class=max_per_class, decay=decay)
    is_test = np.zeros(len(kept), dtype=bool)
    for c in np.unique(digits.target[kept]):
        members = np.flatnonzero(digits.target[kept] == c)
        n_test = max(1, int(round(len(members) * test_share)))
        is_test[rng.choice(members, n_test, replace=False)] = True
    images = root / "data" / "images"
    images.mkdir(parents=True, exist_ok=True)
    train_rows, test_rows = [], []
    for pos in progress.track(range(len(kept)), total=len(kept), description="photographing digits"):
        src = kept[pos]
        subject = f"s{src:04d}"
        for j in range(photos):
            rel = f"{subject}_{j}.png"
            photo = photograph(digits.data[src], rng, size)
            write_with(images / rel, lambda tmp, p=photo: Image.fromarray(p).save(tmp, format="PNG"))
            row = {"id": f"{subject}_{j}", "path": rel, "label": int(digits.target[src]), "subject": subject}
            (test_rows if is_test[pos] else train_rows).append(row)
    train = pd.DataFrame(train_rows)
    test = pd.DataFrame(test_rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    test["id"] = [f"t{i:05d}" for i in range(len(test))]
    write_csv(root / "data" / "train.csv", train)
    write_csv(root / "data" / "test.csv", test[["id", "path"]])
    write_csv(root / "data" / "sample_submission.csv", pd.DataFrame({"ImageID": test["id"], "ans": 0}))
    solution = root / "hidden" / "solution.csv"
    write_csv(solution, pd.DataFrame({"ImageID": test["id"], "ans": test["label"]}))
    write_text(root / "comp.yaml", COMP_YAML)
    write_text(root / "experiments" / "baseline.yaml", BASELINE_YAML)
    write_text(root / "experiments" / "effnet.yaml", EFFNET_YAML)
    for folder in ("folds", "submissions"):
        (root / folder).mkdir(exist_ok=True)
    return DemoData(root=root, n_train=len(train), n_test=len(test), n_subjects=len(kept), solution=solution)


# ---------------------------------------------------------------- the other task kinds

TASK_KINDS = ("multiclass", "multilabel", "regression", "multitask", "binary")

TASK_COMP = {
    "multilabel": ("# The demo as a multilabel competition: two digits side by side, tagged with the digits they show.",
                   "task: multilabel", "  label_col: tags", "metric: micro_f1", "tags"),
    "regression": ("# The demo as a regression competition: the value of the digit, scored by RMSE.",
                   "task: regression", "  label_col: value", "metric: rmse", "value"),
    "multitask": ("# The demo as a multitask competition: three heads (parity, digit >= 5, digit mod 3) on one backbone,\n"
                  "# combined into the submitted label.",
                  "task: multitask", "  targets: {parity: parity, high: high, mod3: mod3}\n"
                  '  combine: "parity*6 + high*3 + mod3"', "metric: macro_f1", "label"),
    "binary": ("# The demo as a binary competition: is the digit even? Scored by ROC AUC on the probability of even.",
               "task: binary", "  label_col: label\n  positive: even", "metric: roc_auc", "prob"),
}


def task_comp_yaml(kind: str) -> str:
    """comp.yaml of the demo for a task kind (multiclass: COMP_YAML)."""
    if kind == "multiclass":
        return COMP_YAML
    head, task, data, metric, sub = TASK_COMP[kind]
    return f"""\
{head}
{task}
data:
  train_csv: data/train.csv
  test_csv: data/test.csv
  image_root: data/images
  id_col: id
  image_col: path
{data}
  group_col: subject      # photos of one subject never sit on both sides of a split
{metric}
submission:
  id_col: ImageID
  target_col: ans
  kind: {sub}
  sample_csv: data/sample_submission.csv
folds:
  k: 5
  seed: 42
"""


def task_experiments(kind: str) -> dict[str, str]:
    """experiments/*.yaml of the demo for a task kind: the multiclass pair with the task's loss (auto), no class
    sampler, and a tune space that fits every kind (lr, weight decay)."""
    size = "[32, 64]" if kind == "multilabel" else "32"  # two digits side by side
    baseline = f"""\
# CPU-friendly baseline: a tiny timm ResNet, trained from scratch (no downloads); the loss fits the task (auto).
model: {{name: test_resnet, pretrained: false}}
image: {{size: {size}, cache_scale: 1.0}}
augment: {{preset: auto}}
train: {{epochs: 6, batch_size: 32, lr: 3.0e-3, weight_decay: 0.01, warmup_epochs: 0.5,
        scheduler: cosine, loss: auto, early_stopping: null, num_workers: 0, seed: 42}}
tta: {{transforms: hflip, merge: mean}}
tune:
  trials: 3
  epochs: 2
  folds: [0]
  space:
    train.lr: {{float: [1.0e-3, 1.0e-2], log: true}}
    train.weight_decay: {{float: [1.0e-4, 0.1], log: true}}
"""
    if kind == "regression":  # the tiny EfficientNet's validation error grows while it trains on this target
        second = """\
# A second member for the ensemble: the tiny ResNet with another lr and seed (timm's tiny EfficientNet
# did not generalise on a regression target of these digits: its validation error grew as its training loss fell).
model: {name: test_resnet, pretrained: false}
image: {size: 32, cache_scale: 1.0}
augment: {preset: auto}
train: {epochs: 6, batch_size: 32, lr: 1.5e-3, weight_decay: 0.01, warmup_epochs: 0.5,
        scheduler: cosine, loss: auto, early_stopping: null, num_workers: 0, seed: 43}
tta: {transforms: hflip, merge: mean}
"""
        return {"baseline": baseline, "resnet-b": second}
    effnet = f"""\
# A second architecture for the ensemble: timm's tiny EfficientNet.
model: {{name: test_efficientnet, pretrained: false}}
image: {{size: {size}, cache_scale: 1.0}}
augment: {{preset: auto}}
train: {{epochs: 4, batch_size: 32, lr: 5.0e-3, weight_decay: 0.01, warmup_epochs: 1,
        scheduler: cosine, loss: auto, early_stopping: null, num_workers: 0, seed: 43}}
tta: {{transforms: hflip, merge: mean}}
"""
    return {"baseline": baseline, "effnet": effnet}


def task_target(kind: str, digits: tuple[int, ...]) -> dict[str, object]:
    """The table's target columns of one subject (its digit, or its two digits for multilabel)."""
    d = digits[0]
    if kind == "multilabel":
        return {"tags": " ".join(str(v) for v in sorted(set(digits)))}
    if kind == "regression":
        return {"value": float(d)}
    if kind == "multitask":
        return {"parity": d % 2, "high": int(d >= 5), "mod3": d % 3}
    return {"label": "even" if d % 2 == 0 else "odd"}


def task_answer(kind: str, target: dict[str, object]) -> object:
    """The hidden solution's value of a test image: as train.csv writes it, the combined label for multitask."""
    if kind == "multitask":
        return int(target["parity"]) * 6 + int(target["high"]) * 3 + int(target["mod3"])
    return next(iter(target.values()))


SAMPLE_ANSWER = {"multilabel": "0", "regression": 0.0, "multitask": 0, "binary": 0.5}


def build_task_demo(
    root: Path,
    kind: str,
    *,
    photos: int | None = None,
    size: int = 32,
    max_per_class: int = 30,
    decay: float = 0.84,
    test_share: float = 0.2,
    seed: int = 0,
    force: bool = False,
    progress: Progress = SILENT,
) -> DemoData:
    """The demo workspace as a `kind` competition on the same digits (multiclass: build_demo).

    multilabel: each subject is a pair of digits photographed side by side (size x 2*size), tagged with the
    digits it shows ("3 7"; "4" when both are 4); regression: the digit's value as a number; multitask: heads
    parity, digit >= 5 and digit mod 3, combined by "parity*6 + high*3 + mod3" (a different label for each
    digit); binary: "even" or "odd", the probability of even submitted. Subjects are photographed `photos` times
    (default 3, 2 for the pairs; a group each) and split between train and test; the hidden solution is
    hidden/solution.csv. Smaller than the multiclass demo, so every kind runs in minutes on a CPU.
    """
    from sklearn.datasets import load_digits

    if kind == "multiclass":
        return build_demo(root, photos=photos or 4, size=size, max_per_class=max_per_class, decay=decay,
                          test_share=test_share, seed=seed, force=force, progress=progress)
    photos = photos or (2 if kind == "multilabel" else 3)  # a pair is twice the pixels
    if kind not in TASK_COMP:
        raise CompError(f"unknown demo task {kind!r}; use one of: {', '.join(TASK_KINDS)}")
    root = Path(root)
    if (root / "comp.yaml").exists() and not force:
        raise CompError(f"{root / 'comp.yaml'} exists; pass --force to rebuild the demo there, or choose another DIR")
    rng = np.random.default_rng(seed)
    digits = load_digits()
    kept = pick_subjects(digits.target, rng, max_per_class=max_per_class, decay=decay)
    partner = rng.permutation(kept) if kind == "multilabel" else kept  # the second digit of a pair
    is_test = rng.random(len(kept)) < test_share
    images = root / "data" / "images"
    images.mkdir(parents=True, exist_ok=True)
    train_rows, test_rows = [], []
    for pos in progress.track(range(len(kept)), total=len(kept), description=f"photographing digits ({kind})"):
        sources = (kept[pos], partner[pos]) if kind == "multilabel" else (kept[pos],)
        subject = "s" + "-".join(f"{s:04d}" for s in sources)
        target = task_target(kind, tuple(int(digits.target[s]) for s in sources))
        for j in range(photos):
            rel = f"{subject}_{j}.png"
            photo = np.concatenate([photograph(digits.data[s], rng, size) for s in sources], axis=1)
            write_with(images / rel, lambda tmp, p=photo: Image.fromarray(p).save(tmp, format="PNG"))
            row = {"id": f"{subject}_{j}", "path": rel, **target, "subject": subject}
            (test_rows if is_test[pos] else train_rows).append(row)
    train = pd.DataFrame(train_rows)
    test = pd.DataFrame(test_rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    test["id"] = [f"t{i:05d}" for i in range(len(test))]
    write_csv(root / "data" / "train.csv", train)
    write_csv(root / "data" / "test.csv", test[["id", "path"]])
    write_csv(root / "data" / "sample_submission.csv", pd.DataFrame({"ImageID": test["id"], "ans": SAMPLE_ANSWER[kind]}))
    solution = root / "hidden" / "solution.csv"
    answers = [task_answer(kind, {k: row[k] for k in task_target(kind, (0,))}) for _, row in test.iterrows()]
    write_csv(solution, pd.DataFrame({"ImageID": test["id"], "ans": answers}))
    write_text(root / "comp.yaml", task_comp_yaml(kind))
    for name, text in task_experiments(kind).items():
        write_text(root / "experiments" / f"{name}.yaml", text)
    for folder in ("folds", "submissions"):
        (root / folder).mkdir(exist_ok=True)
    return DemoData(root=root, n_train=len(train), n_test=len(test), n_subjects=len(kept), solution=solution)
