"""Losses: finite, gradients flow, class count from the data, soft targets, known special cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comp.core.config import TrainConfig
from comp.core.errors import CompError
from comp.model.losses import CrossEntropy, FocalLoss, SoftF1Loss, build_loss, class_weights, soft_targets

LOSSES = ("ce", "weighted_ce", "focal", "f1")


def train_with(**train) -> TrainConfig:
    return TrainConfig.model_validate(train)


def batch(n: int = 6, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, requires_grad=True)
    return logits, torch.arange(n) % c


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_each_loss_is_finite_and_has_gradients(name: str, smoothing: float) -> None:
    loss_fn = build_loss(train_with(loss=name, label_smoothing=smoothing), np.array([10, 3, 5, 1, 7]))
    logits, y = batch()
    loss = loss_fn(logits, y)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSSES)
def test_class_count_comes_from_the_data(name: str) -> None:
    """The reference task's bug: a loss defaulting to 3 classes on an 18-class task."""
    counts = np.arange(1, 19)
    loss_fn = build_loss(train_with(loss=name), counts)
    assert loss_fn.n_classes == 18
    logits, y = batch(n=36, c=18)
    assert torch.isfinite(loss_fn(logits, y))
    with pytest.raises(ValueError, match="logits have 3 classes, the loss expects 18"):
        loss_fn(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("name", LOSSES)
def test_soft_targets_match_hard_targets_when_one_hot(name: str) -> None:
    loss_fn = build_loss(train_with(loss=name), np.array([4, 4, 4, 4, 4]))
    logits, y = batch()
    hard = loss_fn(logits, y)
    soft = loss_fn(logits, F.one_hot(y, 5).float())
    assert torch.allclose(hard, soft, atol=1e-6)
    mixed = 0.7 * F.one_hot(y, 5).float() + 0.3 * F.one_hot(y.roll(1), 5).float()  # a mixup target
    assert torch.isfinite(loss_fn(logits, mixed))


def test_ce_matches_torch_with_smoothing_and_weights() -> None:
    logits, y = batch()
    ours = CrossEntropy(5, smoothing=0.1)(logits, y)
    assert torch.allclose(ours, F.cross_entropy(logits, y, label_smoothing=0.1), atol=1e-6)
    w = torch.tensor([0.5, 1.0, 2.0, 1.0, 3.0])
    ours = CrossEntropy(5, weight=w)(logits, y)
    assert torch.allclose(ours, F.cross_entropy(logits, y, weight=w), atol=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy_and_down_weights_easy_samples() -> None:
    logits, y = batch()
    assert torch.allclose(FocalLoss(5, gamma=0.0)(logits, y), F.cross_entropy(logits, y), atol=1e-6)
    confident = F.one_hot(y, 5).float() * 8.0
    assert FocalLoss(5, gamma=2.0)(confident, y) < 0.1 * F.cross_entropy(confident, y)


def test_soft_f1_is_near_zero_for_perfect_and_high_for_wrong_predictions() -> None:
    y = torch.arange(10) % 5
    perfect = F.one_hot(y, 5).float() * 20.0
    wrong = F.one_hot((y + 1) % 5, 5).float() * 20.0
    f1 = SoftF1Loss(5)
    assert f1(perfect, y).item() < 0.01
    assert f1(wrong, y).item() > 0.99


def test_weighted_ce_weights_inverse_frequency_and_absent_classes() -> None:
    w = class_weights(np.array([10, 5, 0, 5]))
    assert w[2] == 0  # a class absent from this fold's training rows
    assert w[1] == pytest.approx(2 * w[0])
    assert float((w * torch.tensor([10, 5, 0, 5])).sum() / 20) == pytest.approx(1.0)  # per-sample mean 1
    loss_fn = build_loss(train_with(loss="weighted_ce"), np.array([10, 5, 0, 5]))
    logits, _ = batch(c=4)
    assert torch.isfinite(loss_fn(logits, torch.tensor([0, 1, 3, 0, 1, 3])))


def test_mixup_targets_are_not_smoothed_twice() -> None:
    cfg = train_with(loss="ce", label_smoothing=0.2)
    assert build_loss(cfg, np.ones(3)).smoothing == 0.2
    assert build_loss(cfg, np.ones(3), mixup=True).smoothing == 0.0


def test_soft_targets_shape_checked_and_smoothed() -> None:
    t = soft_targets(torch.tensor([0, 2]), 3, smoothing=0.3)
    assert torch.allclose(t.sum(1), torch.ones(2))
    assert t[0, 0].item() == pytest.approx(0.8)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        soft_targets(torch.ones(2, 4), 3)


def test_one_class_is_an_error() -> None:
    with pytest.raises(CompError, match=r"2 or more classes, got \[7\]"):
        build_loss(train_with(loss="ce"), np.array([7]))
