"""Competition metrics on (labels, probabilities); each knows whether higher is better."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from comp.errors import CompError, did_you_mean


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]  # (y (N,), probs (N, C)) -> score
    greater_is_better: bool = True

    def __call__(self, y: np.ndarray, probs: np.ndarray) -> float:
        return float(self.fn(np.asarray(y), np.asarray(probs, dtype=np.float64)))

    def better(self, a: float, b: float) -> bool:
        """Is score `a` strictly better than `b`?"""
        return a > b if self.greater_is_better else a < b


def _labels(probs: np.ndarray) -> np.ndarray:
    return probs.argmax(axis=1)


def _skm():  # noqa: ANN202 - sklearn.metrics, imported on first use (it costs ~1 s at start-up)
    from sklearn import metrics

    return metrics


def _f1(average: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def fn(y: np.ndarray, probs: np.ndarray) -> float:
        skm = _skm()
        labels = np.arange(probs.shape[1])
        return skm.f1_score(y, _labels(probs), labels=labels, average=average, zero_division=0)

    return fn


def _log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    probs = np.clip(probs, 1e-15, 1.0)
    probs = probs / probs.sum(axis=1, keepdims=True)
    return float(-np.log(probs[np.arange(len(y)), y]).mean())


def _roc_auc(y: np.ndarray, probs: np.ndarray) -> float:
    skm = _skm()
    if probs.shape[1] == 2:
        return skm.roc_auc_score(y, probs[:, 1])
    return skm.roc_auc_score(y, probs, multi_class="ovr", labels=np.arange(probs.shape[1]))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", lambda y, p: float((_labels(p) == y).mean())),
        Metric("macro_f1", _f1("macro")),
        Metric("weighted_f1", _f1("weighted")),
        Metric("balanced_accuracy", lambda y, p: _skm().balanced_accuracy_score(y, _labels(p))),
        Metric("log_loss", _log_loss, greater_is_better=False),
        Metric("roc_auc", _roc_auc),
    )
}


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise CompError(f"unknown metric {name!r}{did_you_mean(name, METRICS)}; known: {', '.join(METRICS)}")
    return METRICS[name]
