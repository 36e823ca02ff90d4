"""Blends, weight fitting, nested estimates and bias tuning on synthetic OOF probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from comp.blend.ensemble import (
    METHODS,
    _argmax_score,
    align_members,
    apply_bias,
    blend,
    fit_blend,
    fit_bias,
    fit_weights,
    parse_weights,
)
from comp.core.errors import CompError
from comp.core.metrics import get_metric


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def member(y: np.ndarray, n_classes: int, skill: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities whose true-class logit is raised by `skill` (0 = pure noise)."""
    z = rng.normal(0, 1, (len(y), n_classes))
    z[np.arange(len(y)), y] += skill
    return softmax(z)


@pytest.fixture
def synthetic():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 600)
    folds = np.arange(600) % 3
    return y, folds, rng


@pytest.mark.parametrize("method", METHODS)
def test_blend_rows_are_probabilities(method, synthetic):
    y, _, rng = synthetic
    probs = [member(y, 4, s, rng) for s in (0.5, 1.0, 2.0)]
    out = blend(probs, [0.2, 0.3, 0.5], method=method)
    assert out.shape == (600, 4)
    assert np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0)


def test_blend_of_one_member_keeps_its_decisions(synthetic):
    y, _, rng = synthetic
    p = member(y, 4, 1.0, rng)
    for method in ("mean", "geometric", "vote"):  # rank is per-class rank: it may change decisions
        assert np.array_equal(blend([p], [1.0], method=method).argmax(1), p.argmax(1))
    assert np.allclose(blend([p, p], [0.5, 0.5], method="geometric"), p)


def test_fast_scores_match_metrics(synthetic):
    y, _, rng = synthetic
    p = member(y, 4, 0.7, rng)
    for name in ("accuracy", "macro_f1", "weighted_f1", "balanced_accuracy"):
        assert _argmax_score(name, y, p.argmax(1), 4) == pytest.approx(get_metric(name)(y, p))


@pytest.mark.parametrize("metric", ["macro_f1", "log_loss", "accuracy"])
def test_fit_weights_recovers_the_best_member(metric, synthetic):
    y, _, rng = synthetic
    probs = [member(y, 4, 0.0, rng), member(y, 4, 3.0, rng), member(y, 4, 0.0, rng)]
    w = fit_weights(probs, y, get_metric(metric), search="slsqp" if metric == "log_loss" else "hill")
    assert w.shape == (3,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    assert int(np.argmax(w)) == 1 and w[1] > 0.7


def test_fit_weights_is_byte_identical_for_one_seed(synthetic):
    y, _, rng = synthetic
    probs = [member(y, 4, s, rng) for s in (0.8, 0.9, 1.0, 0.85)]
    metric = get_metric("macro_f1")
    a = fit_weights(probs, y, metric, seed=3)
    b = fit_weights(probs, y, metric, seed=3)
    assert a.tobytes() == b.tobytes()


def test_nested_estimate_is_below_in_sample_on_noise(synthetic):
    y, folds, rng = synthetic
    probs = [member(y, 4, 0.0, rng) for _ in range(6)]
    fit = fit_blend(probs, y, folds, get_metric("macro_f1"), bias=True)
    assert fit.nested <= fit.insample
    assert len(fit.nested_folds) == 3
    assert fit.bias is not None and fit.bias.shape == (4,)


def test_equal_and_explicit_weights(synthetic):
    y, folds, rng = synthetic
    probs = [member(y, 4, 1.0, rng), member(y, 4, 2.0, rng)]
    metric = get_metric("accuracy")
    assert np.allclose(fit_blend(probs, y, folds, metric, weights="equal").weights, [0.5, 0.5])
    explicit = parse_weights("3,1", 2)
    assert np.allclose(fit_blend(probs, y, folds, metric, weights=explicit).weights, [0.75, 0.25])


def test_bias_never_lowers_the_in_sample_metric(synthetic):
    y, _, rng = synthetic
    z = rng.normal(0, 1, (600, 4))
    z[np.arange(600), y] += 1.0
    z[:, 0] += 1.5  # a model that over-predicts class 0
    p = softmax(z)
    metric = get_metric("macro_f1")
    bias = fit_bias(p, y, metric)
    assert metric(y, apply_bias(p, bias)) > metric(y, p)
    assert bias[0] < 0


def test_parse_weights_errors():
    with pytest.raises(CompError, match="2 numbers for 3 members"):
        parse_weights("0.5,0.5", 3)
    with pytest.raises(CompError, match="non-negative"):
        parse_weights("1,-1", 2)
    with pytest.raises(CompError, match="got 'a,b'"):
        parse_weights("a,b", 2)


def test_align_members_joins_by_id():
    a = pd.DataFrame({"id": ["x", "y"], "p_0": [0.9, 0.2], "p_1": [0.1, 0.8]})
    b = a.iloc[::-1].reset_index(drop=True)
    ids, arrays = align_members([a, b], [0, 1], names=["a", "b"])
    assert list(ids) == ["x", "y"] and np.array_equal(arrays[0], arrays[1])
    with pytest.raises(CompError, match="ids that differ"):
        align_members([a, b.assign(id=["x", "z"])], [0, 1], names=["a", "b"])
    with pytest.raises(CompError, match=r"member 'b' has other classes .*missing classes \['1'\]"):
        align_members([a, b.drop(columns="p_1")], [0, 1], names=["a", "b"])
    with pytest.raises(CompError, match=r"member 'b' has other classes .*extra classes \['2'\]"):
        align_members([a, b.assign(p_2=0.0)], [0, 1], names=["a", "b"])
