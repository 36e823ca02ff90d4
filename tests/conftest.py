"""Shared fixtures: tiny real workspaces with PNG files on disk, shaped like the reference task."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

CLASS_COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 200, 40), (160, 60, 200), (40, 200, 200)]


def draw(label: int, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """A learnable image: class colour + a class-dependent bar + noise."""
    img = np.full((size, size, 3), CLASS_COLOURS[label % len(CLASS_COLOURS)], dtype=np.float64)
    bar = (label * 3) % size
    img[bar : bar + 3, :, :] = 255 - img[bar : bar + 3, :, :]
    img += rng.normal(0, 18, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def build_workspace(
    root: Path,
    *,
    n_classes: int = 3,
    groups_per_class: int = 4,
    images_per_group: int = 3,
    n_test: int = 9,
    size: int = 16,
    grouped: bool = True,
    labels: list | None = None,
    experiment: dict | None = None,
    seed: int = 0,
) -> Path:
    """Write comp.yaml, data/{train,test,sample_submission}.csv and PNGs under root; return root."""
    rng = np.random.default_rng(seed)
    names = labels or [f"c{i}" for i in range(n_classes)]
    images = root / "data" / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for c, name in enumerate(names):
        for g in range(groups_per_class):
            person = f"p{c}{g:02d}"
            for j in range(images_per_group):
                rel = f"{person}_{j}.png"
                Image.fromarray(draw(c, rng, size)).save(images / rel)
                rows.append({"id": f"{person}_{j}", "path": rel, "label": name, "person": person,
                             "gender": ["m", "f"][g % 2]})
    pd.DataFrame(rows).to_csv(root / "data" / "train.csv", index=False)
    test_rows, solution = [], []
    for t in range(n_test):
        c = t % len(names)
        rel = f"test_{t}.png"
        Image.fromarray(draw(c, rng, size)).save(images / rel)
        test_rows.append({"id": f"t{t:03d}", "path": rel})
        solution.append({"ImageID": f"t{t:03d}", "ans": names[c]})
    pd.DataFrame(test_rows).to_csv(root / "data" / "test.csv", index=False)
    pd.DataFrame({"ImageID": [r["id"] for r in test_rows], "ans": names[0]}).to_csv(
        root / "data" / "sample_submission.csv", index=False
    )
    pd.DataFrame(solution).to_csv(root / "solution.csv", index=False)
    comp = {
        "data": {"train_csv": "data/train.csv", "test_csv": "data/test.csv", "image_root": "data/images",
                 "id_col": "id", "image_col": "path", "label_col": "label",
                 "group_col": "person" if grouped else None},
        "metric": "macro_f1",
        "submission": {"id_col": "ImageID", "target_col": "ans", "kind": "label",
                       "sample_csv": "data/sample_submission.csv"},
    }
    (root / "comp.yaml").write_text(yaml.safe_dump(comp, sort_keys=False))
    (root / "experiments").mkdir(exist_ok=True)
    exp = experiment if experiment is not None else TINY_EXPERIMENT
    (root / "experiments" / "baseline.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
    return root


# A CPU-sized experiment: tiny timm model, no downloads, a couple of epochs.
TINY_EXPERIMENT = {
    "model": {"name": "test_resnet", "pretrained": False},
    "image": {"size": 32},
    "augment": {"preset": "light"},
    "train": {"epochs": 2, "batch_size": 8, "lr": 3.0e-3, "warmup_epochs": 0, "num_workers": 0,
              "early_stopping": None, "seed": 7},
    "tta": {"transforms": "hflip"},
}


@pytest.fixture
def make_ws(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_ws(name="ws", **build_workspace options) -> workspace path."""

    def factory(name: str = "ws", **kwargs) -> Path:
        return build_workspace(tmp_path / name, **kwargs)

    return factory


@pytest.fixture
def tiny_ws(make_ws: Callable[..., Path]) -> Path:
    """3 classes x 4 persons x 3 images (16x16 PNG), 9 test images, grouped by person."""
    return make_ws()


@pytest.fixture(scope="session")
def postgres_url():
    """URL of a PostgreSQL server started on loopback for this test session.

    When the server cannot be started the test is skipped with the reason, or fails when
    COMP_REQUIRE_POSTGRES=1 (set by .ci/run once the package is installed), never passing silently.
    """
    from postgres import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer()
        url = server.start()
    except PostgresUnavailable as exc:
        message = f"PostgreSQL server could not be started: {exc}"
        if os.environ.get("COMP_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    yield url
    server.stop()


@pytest.fixture
def one_torch_thread():
    """Tiny models train faster on one thread, above all on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_fake_best(ws, exp: str, fold: int, cfg, model, names: list[str]) -> None:
    """A fold's best.pt in comp's checkpoint schema, holding `model`'s weights (no training, no validation rows)."""
    import torch

    from comp.model.checkpoint import BestCheckpoint, CheckpointBase

    base = CheckpointBase(fold=fold, epoch=1, train_hash=cfg.train_hash(), model_name=cfg.model.name,
                          n_classes=len(names), classes=names)
    ckpt = BestCheckpoint(base, model.state_dict(), 0.5, 1.0, "raw", [], torch.zeros(0, len(names))).as_dict()
    ws.fold_dir(exp, fold).mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, ws.best_ckpt(exp, fold))
