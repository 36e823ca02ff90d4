"""Tiny real workspaces for each task kind: PNGs on disk, train/test/sample CSVs, comp.yaml, a hidden solution.

Every image is learnable from its pixels: multilabel tags are bars at fixed rows, the binary label and the
multitask `colour` head are the background colour, the multitask `bar` head is a bar, the regression
target is the image's brightness.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

TAGS = ("cat", "dog", "owl")
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230)]
TINY_EXPERIMENT = {
    "model": {"name": "test_resnet", "pretrained": False},
    "image": {"size": 32, "cache_scale": 1.0},
    "augment": {"preset": "none"},
    "train": {"epochs": 2, "batch_size": 16, "lr": 3.0e-3, "warmup_epochs": 0, "num_workers": 0,
              "early_stopping": None, "seed": 7},
    "tta": {"transforms": "none"},
}


def _image(rng: np.random.Generator, size: int, *, colour=(90, 90, 90), bars=(), level: float | None = None) -> np.ndarray:
    img = np.full((size, size, 3), colour, dtype=np.float64)
    if level is not None:
        img[:] = level
    for row in bars:
        start = (row * 5) % (size - 3)
        img[start : start + 3, :, :] = 255 - img[start : start + 3, :, :]
    img += rng.normal(0, 10, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def _row(kind: str, rng: np.random.Generator) -> tuple[dict, dict]:
    """(the table's target columns, how to draw the image) of one subject."""
    if kind == "multilabel":
        on = [t for t in TAGS if rng.random() < 0.45]
        return {"tags": " ".join(on)}, {"bars": [TAGS.index(t) for t in on]}
    if kind == "binary":
        c = int(rng.random() < 0.4)
        return {"label": ["no", "yes"][c]}, {"colour": COLOURS[2 * c]}
    if kind == "regression":
        value = round(float(rng.uniform(0.0, 10.0)), 2)
        return {"target": value}, {"level": 30 + 20 * value}
    if kind == "multitask":
        colour, bar = int(rng.integers(0, 3)), int(rng.integers(0, 2))
        return {"colour": colour, "bar": bar}, {"colour": COLOURS[colour], "bars": [1] * bar}
    c = int(rng.integers(0, 3))
    return {"label": f"c{c}"}, {"colour": COLOURS[c]}


TARGET = {"multilabel": "tags", "binary": "label", "regression": "target", "multiclass": "label"}


def solution_value(kind: str, cols: dict) -> object:
    if kind == "multitask":
        return cols["colour"] * 2 + cols["bar"]
    return cols[TARGET[kind]]


COMP = {
    "multiclass": {"metric": "macro_f1", "submission": {"kind": "label"}},
    "multilabel": {"task": "multilabel", "metric": "micro_f1", "submission": {"kind": "tags"}},
    "binary": {"task": "binary", "metric": "roc_auc", "submission": {"kind": "prob"}, "data": {"positive": "yes"}},
    "regression": {"task": "regression", "metric": "rmse", "submission": {"kind": "value"}, "data": {"label_col": "target"}},
    "multitask": {"task": "multitask", "metric": "macro_f1", "submission": {"kind": "label"},
                  "data": {"targets": {"colour": "colour", "bar": "bar"}, "combine": "colour*2 + bar"}},
}
SAMPLE_VALUE = {"multiclass": "c0", "multilabel": "cat", "binary": 0.5, "regression": 0.0, "multitask": 0}


def build_task_workspace(root: Path, kind: str, *, subjects: int = 24, photos: int = 2, n_test: int = 12,
                         size: int = 16, seed: int = 0, experiment: dict | None = None) -> Path:
    """A workspace of `kind` under root: `subjects` groups of `photos` images, `n_test` test images."""
    rng = np.random.default_rng(seed)
    images = root / "data" / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(subjects):
        cols, look = _row(kind, rng)
        for j in range(photos):
            rel = f"s{s:03d}_{j}.png"
            Image.fromarray(_image(rng, size, **look)).save(images / rel)
            rows.append({"id": f"s{s:03d}_{j}", "path": rel, **cols, "subject": f"s{s:03d}"})
    pd.DataFrame(rows).to_csv(root / "data" / "train.csv", index=False)
    test, solution = [], []
    for t in range(n_test):
        cols, look = _row(kind, rng)
        rel = f"t{t:03d}.png"
        Image.fromarray(_image(rng, size, **look)).save(images / rel)
        test.append({"id": f"t{t:03d}", "path": rel})
        solution.append({"ImageID": f"t{t:03d}", "ans": solution_value(kind, cols)})
    pd.DataFrame(test).to_csv(root / "data" / "test.csv", index=False)
    pd.DataFrame({"ImageID": [r["id"] for r in test], "ans": SAMPLE_VALUE[kind]}).to_csv(
        root / "data" / "sample_submission.csv", index=False)
    pd.DataFrame(solution).to_csv(root / "solution.csv", index=False)
    extra = COMP[kind]
    comp = {
        **({"task": extra["task"]} if "task" in extra else {}),
        "data": {"train_csv": "data/train.csv", "test_csv": "data/test.csv", "image_root": "data/images",
                 "id_col": "id", "image_col": "path", "label_col": TARGET.get(kind, "label"), "group_col": "subject",
                 **extra.get("data", {})},
        "metric": extra["metric"],
        "submission": {"id_col": "ImageID", "target_col": "ans", **extra["submission"],
                       "sample_csv": "data/sample_submission.csv"},
        "folds": {"k": 2, "seed": 42},
    }
    (root / "comp.yaml").write_text(yaml.safe_dump(comp, sort_keys=False))
    (root / "experiments").mkdir(exist_ok=True)
    (root / "experiments" / "baseline.yaml").write_text(
        yaml.safe_dump(experiment if experiment is not None else TINY_EXPERIMENT, sort_keys=False))
    return root
