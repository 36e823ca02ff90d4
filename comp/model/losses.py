"""Training losses; each takes (logits (N, C), target) where target is class indices (N,) or soft (N, C).

The class count always comes from the data (`class_counts` has one entry per class), never a default.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from comp.core.config import TrainConfig
from comp.core.errors import CompError

log = logging.getLogger("comp.model.losses")


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


class BCELoss(nn.Module):
    """Binary cross-entropy with logits per output (multilabel tags, a binary label); targets (N,) or (N, C) in [0, 1]."""

    def __init__(self, *, pos_weight: torch.Tensor | None = None, smoothing: float = 0.0) -> None:
        super().__init__()
        self.smoothing = smoothing
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float().reshape(logits.shape)
        if self.smoothing > 0:
            target = target * (1.0 - self.smoothing) + 0.5 * self.smoothing
        return F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=self.pos_weight)


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik et al. 2021) for tags: easy negatives are down-weighted by p^gamma_neg after shifting
    their probability down by `clip`; positives by (1 - p)^gamma_pos. gamma_neg = gamma_pos, clip 0 is the focal loss."""

    def __init__(self, *, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05,
                 pos_weight: torch.Tensor | None = None, eps: float = 1e-8) -> None:
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float().reshape(logits.shape)
        p = torch.sigmoid(logits.float())
        p_neg = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        pos = target * (1 - p).pow(self.gamma_pos) * torch.log(p.clamp(min=self.eps))
        if self.pos_weight is not None:
            pos = pos * self.pos_weight
        neg = (1 - target) * p_neg.pow(self.gamma_neg) * torch.log((1 - p_neg).clamp(min=self.eps))
        return -(pos + neg).mean()


class RegressionLoss(nn.Module):
    """MSE, Huber or BCE on the target scaled to [0, 1] by the training target's (min, max)."""

    def __init__(self, kind: str, scale: tuple[float, float]) -> None:
        super().__init__()
        self.kind, (self.lo, self.hi) = kind, scale

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = logits.float().reshape(-1)
        scaled = (target.float().reshape(-1) - self.lo) / (self.hi - self.lo)
        if self.kind == "bce":
            return F.binary_cross_entropy_with_logits(out, scaled.clamp(0, 1))
        if self.kind == "huber":
            return F.huber_loss(out, scaled, delta=0.1)
        return F.mse_loss(out, scaled)


class MultiHeadLoss(nn.Module):
    """The weighted sum of each head's cross-entropy (targets (N, H) class indices, one column per head)."""

    def __init__(self, sizes: list[int], weights: list[float], *, smoothing: float = 0.0) -> None:
        super().__init__()
        self.sizes, self.weights = sizes, weights
        self.heads = nn.ModuleList(CrossEntropy(n, smoothing=smoothing) for n in sizes)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total, start = logits.new_zeros(()), 0
        for h, (n, w, loss) in enumerate(zip(self.sizes, self.weights, self.heads)):
            total = total + w * loss(logits[:, start:start + n], target[:, h])
            start += n
        return total


def positive_weights(targets: np.ndarray, how: float | str | None) -> torch.Tensor | None:
    """BCE pos_weight: None, one number for every output, or `auto` = negatives / positives per output (capped at 100)."""
    if how is None:
        return None
    targets = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    if how == "auto":
        pos = targets.sum(axis=0)
        ratio = np.where(pos > 0, (len(targets) - pos) / np.clip(pos, 1, None), 1.0)
        return torch.tensor(np.clip(ratio, 1e-3, 100.0), dtype=torch.float32)
    return torch.full((targets.shape[1],), float(how), dtype=torch.float32)


def build_task_loss(train: TrainConfig, task, targets: np.ndarray) -> nn.Module:  # noqa: ANN001 - comp.core.tasks.Task
    """The loss of a multilabel, binary, regression or multitask experiment (targets: the training rows').

    train: the loss settings (loss, pos_weight, label_smoothing, asl_*, focal_gamma, task_weights).
    """
    from comp.core.tasks import loss_name

    t, name = train, loss_name(task.kind, train.loss)
    if task.kind in ("multilabel", "binary"):
        pos_weight = positive_weights(targets, t.pos_weight)
        if name == "asl":
            return AsymmetricLoss(gamma_neg=t.asl_gamma_neg, gamma_pos=t.asl_gamma_pos, clip=t.asl_clip,
                                  pos_weight=pos_weight)
        if name == "focal":
            return AsymmetricLoss(gamma_neg=t.focal_gamma, gamma_pos=t.focal_gamma, clip=0.0, pos_weight=pos_weight)
        return BCELoss(pos_weight=pos_weight, smoothing=t.label_smoothing)
    if task.kind == "regression":
        return RegressionLoss(name, task.scale or (0.0, 1.0))
    weights = dict(t.task_weights or {})
    unknown = sorted(set(weights) - {h.name for h in task.heads})
    if unknown:
        raise CompError(f"train.task_weights names {unknown}, which are not heads; heads: {[h.name for h in task.heads]}")
    return MultiHeadLoss([len(h.classes) for h in task.heads], [float(weights.get(h.name, 1.0)) for h in task.heads],
                         smoothing=t.label_smoothing)


def build_loss(train: TrainConfig, class_counts: np.ndarray, *, mixup: bool = False) -> nn.Module:
    """The training loss of train.loss for len(class_counts) classes (counts from the training rows).

    train: the loss settings (loss, label_smoothing, focal_gamma).

    With `mixup`, targets arrive soft and already label-smoothed (timm Mixup), so no smoothing here.
    """
    counts = np.asarray(class_counts)
    if counts.ndim != 1 or len(counts) < 2:
        raise CompError(f"a classification loss needs counts for 2 or more classes, got {counts.tolist()}")
    t = train
    n = len(counts)
    smoothing = 0.0 if mixup else t.label_smoothing
    from comp.core.tasks import loss_name

    loss = loss_name("multiclass", t.loss)
    if loss == "ce":
        return CrossEntropy(n, smoothing=smoothing)
    if loss == "weighted_ce":
        weight = class_weights(counts)
        log.debug("class weights %s", [round(float(w), 3) for w in weight])
        return CrossEntropy(n, smoothing=smoothing, weight=weight)
    if loss == "focal":
        return FocalLoss(n, gamma=t.focal_gamma, smoothing=smoothing)
    if loss == "f1":
        return SoftF1Loss(n, smoothing=smoothing)
    raise CompError(f"unknown train.loss {t.loss!r}; use ce, weighted_ce, focal or f1")


def validation_loss(task, logits: torch.Tensor, target: torch.Tensor) -> float:  # noqa: ANN001 - comp.core.tasks.Task
    """The loss reported on validation rows (no smoothing, weights or focusing): cross-entropy for classes (mean over
    heads for multitask), binary cross-entropy for tags and binary labels, MSE of the [0, 1]-scaled target."""
    logits = logits.float()
    if task.kind == "multiclass":
        return float(F.cross_entropy(logits, target.long()))
    if task.kind in ("multilabel", "binary"):
        return float(F.binary_cross_entropy_with_logits(logits, target.float().reshape(logits.shape)))
    if task.kind == "regression":
        lo, hi = task.scale or (0.0, 1.0)
        out = torch.sigmoid(logits) if task.squash else logits
        return float(F.mse_loss(out.reshape(-1), (target.float().reshape(-1) - lo) / (hi - lo)))
    target = target.long().reshape(len(logits), -1)
    return float(np.mean([float(F.cross_entropy(logits[:, s], target[:, h])) for h, s in enumerate(task.head_slices())]))
