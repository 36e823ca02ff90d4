"""Training losses; each takes (logits (N, C), target) where target is class indices (N,) or soft (N, C).

The class count always comes from the data (`class_counts` has one entry per class), never a default.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from comp.config import Config
from comp.errors import CompError

log = logging.getLogger("comp.losses")


def soft_targets(target: torch.Tensor, n_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """(N,) class indices or (N, C) soft targets -> (N, C) float targets, label-smoothed."""
    if target.ndim == 1:
        target = F.one_hot(target.long(), n_classes).float()
    elif target.ndim != 2 or target.shape[1] != n_classes:
        raise ValueError(f"soft targets must have shape (N, {n_classes}), got {tuple(target.shape)}")
    target = target.float()
    if smoothing > 0:
        target = target * (1.0 - smoothing) + smoothing / n_classes
    return target


class ClassLoss(nn.Module):
    """Base: knows the class count and label smoothing; subclasses implement `per_sample`."""

    def __init__(self, n_classes: int, *, smoothing: float = 0.0) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[-1] != self.n_classes:
            raise ValueError(f"logits have {logits.shape[-1]} classes, the loss expects {self.n_classes}")
        return self.reduce(logits.float(), soft_targets(target, self.n_classes, self.smoothing))

    def reduce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class CrossEntropy(ClassLoss):
    """Cross-entropy with optional per-class weights (weights normalised so a uniform batch keeps scale)."""

    def __init__(self, n_classes: int, *, smoothing: float = 0.0, weight: torch.Tensor | None = None) -> None:
        super().__init__(n_classes, smoothing=smoothing)
        self.register_buffer("weight", weight if weight is not None else torch.ones(n_classes))

    def reduce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=1)  # (N, C)
        per_sample = -(target * self.weight * logp).sum(dim=1)  # (N,)
        norm = (target * self.weight).sum(dim=1)  # weighted mean, as F.cross_entropy(weight=...)
        return per_sample.sum() / norm.sum().clamp_min(1e-12)


class FocalLoss(ClassLoss):
    """Focal loss (Lin et al. 2017): CE down-weighted by (1 - p)^gamma on well-classified samples."""

    def __init__(self, n_classes: int, *, gamma: float = 2.0, smoothing: float = 0.0) -> None:
        super().__init__(n_classes, smoothing=smoothing)
        self.gamma = gamma

    def reduce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=1)
        focal = (1.0 - logp.exp()).pow(self.gamma)
        return -(target * focal * logp).sum(dim=1).mean()


class SoftF1Loss(ClassLoss):
    """1 - soft macro-F1 over the batch, with probabilities standing in for hard predictions."""

    def __init__(self, n_classes: int, *, smoothing: float = 0.0, eps: float = 1e-7) -> None:
        super().__init__(n_classes, smoothing=smoothing)
        self.eps = eps

    def reduce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(logits, dim=1)  # (N, C)
        tp = (probs * target).sum(dim=0)
        fp = (probs * (1 - target)).sum(dim=0)
        fn = ((1 - probs) * target).sum(dim=0)
        f1 = 2 * tp / (2 * tp + fp + fn + self.eps)  # (C,)
        return 1.0 - f1.mean()


def class_weights(class_counts: np.ndarray) -> torch.Tensor:
    """Inverse-frequency weights n / (C * n_c) (average weight per training sample is 1); absent classes get 0."""
    counts = np.asarray(class_counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def build_loss(cfg: Config, class_counts: np.ndarray, *, mixup: bool = False) -> nn.Module:
    """The training loss of cfg.train.loss for len(class_counts) classes (counts from the training rows).

    With `mixup`, targets arrive soft and already label-smoothed (timm Mixup), so no smoothing here.
    """
    counts = np.asarray(class_counts)
    if counts.ndim != 1 or len(counts) < 2:
        raise CompError(f"a classification loss needs counts for 2 or more classes, got {counts.tolist()}")
    t = cfg.train
    n = len(counts)
    smoothing = 0.0 if mixup else t.label_smoothing
    if t.loss == "ce":
        return CrossEntropy(n, smoothing=smoothing)
    if t.loss == "weighted_ce":
        weight = class_weights(counts)
        log.debug("class weights %s", [round(float(w), 3) for w in weight])
        return CrossEntropy(n, smoothing=smoothing, weight=weight)
    if t.loss == "focal":
        return FocalLoss(n, gamma=t.focal_gamma, smoothing=smoothing)
    if t.loss == "f1":
        return SoftF1Loss(n, smoothing=smoothing)
    raise CompError(f"unknown train.loss {t.loss!r}; use ce, weighted_ce, focal or f1")
