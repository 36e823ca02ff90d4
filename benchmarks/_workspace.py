"""Shared by the end-to-end benchmarks: a workspace of small learnable PNGs (train, test, comp.yaml)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image


def write_images(root: Path, *, n: int, n_test: int = 0, size: int = 64, n_classes: int = 4, seed: int = 0,
                 experiment: dict | None = None) -> None:
    """n train + n_test PNGs (colour classes plus noise), data/{train,test}.csv, comp.yaml, experiments/baseline.yaml."""
    rng = np.random.default_rng(seed)
    images = root / "data" / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines, test_lines = ["id,path,label"], ["id,path"]
    for i in range(n + n_test):
        label = i % n_classes
        img = np.full((size, size, 3), 50 * label + 30, np.float64) + rng.normal(0, 30, (size, size, 3))
        img[: size // 4, : size // 4, label % 3] = 255
        name = f"{'t' if i >= n else 'i'}{i}.png"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(images / name, compress_level=1)
        (lines if i < n else test_lines).append(f"{name[:-4]},{name},c{label}" if i < n else f"{name[:-4]},{name}")
    (root / "data" / "train.csv").write_text("\n".join(lines) + "\n")
    (root / "data" / "test.csv").write_text("\n".join(test_lines) + "\n")
    comp = {"data": {"train_csv": "data/train.csv", "test_csv": "data/test.csv" if n_test else None,
                     "image_root": "data/images"}, "metric": "accuracy"}
    (root / "comp.yaml").write_text(yaml.safe_dump(comp))
    (root / "experiments").mkdir(exist_ok=True)
    (root / "experiments" / "baseline.yaml").write_text(yaml.safe_dump(experiment or {}))
