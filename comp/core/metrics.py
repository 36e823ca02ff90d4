"""Competition metrics on (targets, model outputs); each knows whether higher is better.

`get_metric(name, task)` binds a metric to the task kind (comp/core/tasks.py): multiclass targets are class
indices and outputs softmax probabilities; multilabel targets are a 0/1 matrix and outputs sigmoid
probabilities (F1 metrics decide at 0.5); binary targets are 0/1 and outputs the positive probability;
regression targets and outputs are numbers; multitask targets are one class index per head and outputs
the heads' probabilities side by side (scored on the combined label when data.combine is set, else the
mean of the heads' scores).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from comp.core.errors import CompError, did_you_mean


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]  # (y (N,), probs (N, C)) -> score
    greater_is_better: bool = True
    kind: str = "multiclass"  # the task kind `fn` scores

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


def confusion_counts(y: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts of (true class, predicted class) for class indices 0..n-1 (rows: true)."""
    y, pred = np.asarray(y, dtype=np.int64).ravel(), np.asarray(pred, dtype=np.int64).ravel()
    return np.bincount(y * n + pred, minlength=n * n).reshape(n, n)


def confusion_rates(y: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """confusion_counts normalised per true class (each row sums to 1; a class with no true member: a row of 0)."""
    counts = confusion_counts(y, pred, n).astype(np.float64)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def per_class_scores(y: np.ndarray, pred: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """(precision, recall, F1, support) per class 0..n-1; an undefined ratio (nothing predicted or no true
    member) is 0, as scikit-learn's precision_recall_fscore_support(zero_division=0) gives."""
    counts = confusion_counts(y, pred, n)
    tp, support, predicted = np.diag(counts).astype(np.float64), counts.sum(axis=1), counts.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    return precision, recall, f1, support


def _f1(average: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """Macro (every class counts, an absent one scores 0) or support-weighted F1 of the argmax labels; counted in
    numpy (the same numbers as scikit-learn's f1_score, without its ~1 s import on the first validation)."""
    def fn(y: np.ndarray, probs: np.ndarray) -> float:
        _, _, f1, support = per_class_scores(y, _labels(probs), probs.shape[1])
        if average == "macro":
            return float(f1.mean())
        return float((f1 * support).sum() / support.sum()) if support.sum() else 0.0

    return fn


def _balanced_accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean recall over the classes present in y (scikit-learn's balanced_accuracy_score)."""
    _, recall, _, support = per_class_scores(y, _labels(probs), probs.shape[1])
    return float(recall[support > 0].mean())


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
        Metric("balanced_accuracy", _balanced_accuracy),
        Metric("log_loss", _log_loss, greater_is_better=False),
        Metric("roc_auc", _roc_auc),
    )
}


# ---------------------------------------------------------------- other task kinds


def _threshold_f1(average: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def fn(y: np.ndarray, probs: np.ndarray) -> float:
        return _skm().f1_score(np.asarray(y) > 0.5, probs >= 0.5, average=average, zero_division=0)

    return fn


def _columns_with_both(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y).reshape(len(y), -1)
    return np.flatnonzero((y > 0.5).any(axis=0) & (y < 0.5).any(axis=0))


def _multilabel_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean ROC AUC over the tags that have both positives and negatives."""
    cols = _columns_with_both(y)
    if not len(cols):
        return float("nan")
    return float(np.mean([_skm().roc_auc_score(y[:, c] > 0.5, probs[:, c]) for c in cols]))


def _multilabel_map(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean average precision over the tags that have a positive."""
    y = np.asarray(y) > 0.5
    cols = np.flatnonzero(y.any(axis=0))
    if not len(cols):
        return float("nan")
    return float(np.mean([_skm().average_precision_score(y[:, c], probs[:, c]) for c in cols]))


def _bce(y: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(probs, 1e-15, 1 - 1e-15)
    y = np.asarray(y, dtype=np.float64).reshape(p.shape)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def _binary(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[np.ndarray, np.ndarray], float]:
    """A two-class metric from (y 0/1, p (N, 1)): the outputs become [1 - p, p]."""
    return lambda y, p: fn(np.asarray(y).astype(np.int64), np.column_stack([1 - p[:, 0], p[:, 0]]))


def _regression(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda y, p: float(fn(np.asarray(y, dtype=np.float64).reshape(-1), p[:, 0]))


MULTILABEL = {m.name: m for m in (
    Metric("micro_f1", _threshold_f1("micro"), kind="multilabel"),
    Metric("macro_f1", _threshold_f1("macro"), kind="multilabel"),
    Metric("samples_f1", _threshold_f1("samples"), kind="multilabel"),
    Metric("map", _multilabel_map, kind="multilabel"),
    Metric("roc_auc", _multilabel_auc, kind="multilabel"),
    Metric("log_loss", _bce, greater_is_better=False, kind="multilabel"),
)}
BINARY = {m.name: m for m in (
    Metric("roc_auc", lambda y, p: _skm().roc_auc_score(np.asarray(y) > 0.5, p[:, 0]), kind="binary"),
    Metric("log_loss", _bce, greater_is_better=False, kind="binary"),
    Metric("accuracy", _binary(METRICS["accuracy"].fn), kind="binary"),
    Metric("macro_f1", _binary(METRICS["macro_f1"].fn), kind="binary"),
    Metric("f1", lambda y, p: _skm().f1_score(np.asarray(y) > 0.5, p[:, 0] >= 0.5, zero_division=0), kind="binary"),
    Metric("balanced_accuracy", _binary(METRICS["balanced_accuracy"].fn), kind="binary"),
    Metric("map", lambda y, p: _skm().average_precision_score(np.asarray(y) > 0.5, p[:, 0]), kind="binary"),
)}
REGRESSION = {m.name: m for m in (
    Metric("rmse", _regression(lambda y, p: np.sqrt(np.mean((y - p) ** 2))), greater_is_better=False, kind="regression"),
    Metric("mae", _regression(lambda y, p: np.mean(np.abs(y - p))), greater_is_better=False, kind="regression"),
    Metric("r2", _regression(lambda y, p: _skm().r2_score(y, p)), kind="regression"),
)}
BY_KIND = {"multiclass": METRICS, "multilabel": MULTILABEL, "binary": BINARY, "regression": REGRESSION,
           "multitask": METRICS}
ALL_NAMES = tuple(dict.fromkeys([*METRICS, *MULTILABEL, *BINARY, *REGRESSION]))


def _multitask(base: Metric, task) -> Metric:  # noqa: ANN001 - comp.core.tasks.Task (kept import-light)
    """Scored on the combined label (joint head probabilities) when the task combines heads, else the mean of
    the heads' scores."""
    slices = task.head_slices()

    def fn(y: np.ndarray, outputs: np.ndarray) -> float:
        y = np.asarray(y).reshape(len(y), -1).astype(np.int64)
        if task.combine is not None:
            return base.fn(task.combined_codes(y), task.class_probs(outputs))
        return float(np.mean([base.fn(y[:, h], outputs[:, s]) for h, s in enumerate(slices)]))

    return Metric(base.name, fn, base.greater_is_better, kind="multitask")


def get_metric(name: str, task=None) -> Metric:  # noqa: ANN001 - task: comp.core.tasks.Task | None (multiclass)
    """The metric `name` for the task's kind (multiclass when task is None); an error names the ones that fit."""
    kind = "multiclass" if task is None else task.kind
    table = BY_KIND[kind]
    if name not in table:
        if name in ALL_NAMES:
            raise CompError(f"metric {name!r} does not fit task {kind!r}; use one of: {', '.join(table)} "
                            "(set metric: in comp.yaml)")
        raise CompError(f"unknown metric {name!r}{did_you_mean(name, ALL_NAMES)}; known: {', '.join(ALL_NAMES)}")
    if kind == "multitask":
        return _multitask(table[name], task)
    return table[name]


def task_metric(cfg, task=None) -> Metric:  # noqa: ANN001 - (Config, Task | None)
    """cfg.metric for the task of the tables being scored (cfg.task's kind checked when no task is given)."""
    if task is None and cfg.task != "multiclass":
        raise CompError(f"scoring task {cfg.task!r} needs the task built from train.csv (load the tables first)")
    return get_metric(cfg.metric, task)


def greater_is_better(name: str) -> bool:
    """The direction of a metric by name, whatever task kind it scores."""
    for table in (METRICS, MULTILABEL, BINARY, REGRESSION):
        if name in table:
            return table[name].greater_is_better
    raise CompError(f"unknown metric {name!r}{did_you_mean(name, ALL_NAMES)}; known: {', '.join(ALL_NAMES)}")
