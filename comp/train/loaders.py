"""The training and evaluation loaders of an experiment: its config turned into what comp.data's loaders take.

The one place where the model's normalisation meets the data pipeline, so training, validation,
prediction and the benchmarks all build the same train and eval pipelines.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from comp.core.config import Config
from comp.data.augment import Rows, build_eval_transform, build_train_transform
from comp.data.cache import ImageStore
from comp.data.dataset import build_eval_loader, build_train_loader, loader_settings
from comp.model.factory import resolve_norm


def train_loader(cfg: Config, store: ImageStore, indices: np.ndarray, labels: np.ndarray | None, *, seed: int,
                 transform: Any = None, **options: Any) -> DataLoader:
    """build_train_loader with the experiment's train pipeline and settings (options: sampler_weights, rank, ...)."""
    if transform is None:  # augment.preset auto looks at the training rows it will augment
        transform = build_train_transform(cfg.image, cfg.augment, *resolve_norm(cfg.model), seed=cfg.train.seed,
                                          device=cfg.train.device, images=Rows(store, indices), labels=labels)
    settings = loader_settings(cfg.train, finetune=cfg.model.fine_tunes)
    return build_train_loader(store, indices, labels, settings, transform=transform, seed=seed,
                              **options)


def eval_loader(cfg: Config, store: ImageStore, indices: np.ndarray, **options: Any) -> DataLoader:
    """build_eval_loader with THE eval pipeline (validation and prediction alike) and the experiment's settings."""
    transform = build_eval_transform(cfg.image, cfg.augment, *resolve_norm(cfg.model))
    return build_eval_loader(store, indices, loader_settings(cfg.train), transform=transform, **options)
