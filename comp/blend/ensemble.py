"""Blends of members' probability tables, weights fitted on out-of-fold predictions, nested estimates.

Never imports torch. A member is an experiment; its probabilities are tables (id, p_<class>...)
joined by id. Blends: mean | geometric | rank | vote, each a weighted sum of per-member
"contributions" (probabilities, log probabilities, per-class ranks, one-hot votes), so weight
search can add one member at a time without recomputing the blend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.stats import rankdata

from comp.core.errors import CompError
from comp.core.metrics import Metric
from comp.infer.predictions import prob_columns
from comp.core.tasks import Task

log = logging.getLogger("comp.blend.ensemble")

METHODS = ("mean", "geometric", "rank", "vote")
SEARCHES = ("hill", "slsqp", "equal")
EPS = 1e-7
ARGMAX_METRICS = ("accuracy", "macro_f1", "weighted_f1", "balanced_accuracy")


# ---------------------------------------------------------------- tables


def align_members(frames: Sequence[pd.DataFrame], classes: Sequence[object], *, names: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(ids in the first member's order, one (N, C) array per member), joined by id."""
    cols = prob_columns(classes)
    base = frames[0]["id"].astype(str).to_numpy()
    arrays = []
    for name, frame in zip(names, frames):
        check_member_classes(frame, classes, name)
        table = frame.assign(id=frame["id"].astype(str)).set_index("id")
        if set(table.index) != set(base) or len(table) != len(base):
            extra = sorted(set(table.index) ^ set(base))[:3]
            raise CompError(f"member {name!r} has ids that differ from member {names[0]!r} (e.g. {extra}); "
                            "members must cover the same rows: rerun predict / fold-train on the same data")
        arrays.append(table.loc[base, cols].to_numpy(dtype=np.float64))
    return base, arrays


def check_member_classes(frame: pd.DataFrame, classes: Sequence[object], name: str) -> None:
    """A member's p_<class> columns must be exactly the class set; the error names the classes that differ."""
    want = {str(c) for c in classes}
    have = {str(c)[2:] for c in frame.columns if str(c).startswith("p_")}
    extra, missing = sorted(have - want), sorted(want - have)
    if extra or missing:
        parts = ([f"extra classes {extra[:5]}"] if extra else []) + ([f"missing classes {missing[:5]}"] if missing else [])
        raise CompError(f"member {name!r} has other classes than train.csv ({', '.join(parts)}); "
                        f"retrain it on the current data (comp fold-train -e {name} --force) or drop it")


# ---------------------------------------------------------------- blending


def contributions(probs: np.ndarray, method: str) -> np.ndarray:
    """What one member adds to a blend: (N, C) float64."""
    if method == "mean":
        return np.asarray(probs, dtype=np.float64)
    if method == "geometric":
        return np.log(np.clip(probs, EPS, 1.0))
    if method == "rank":
        return rankdata(probs, axis=0) / len(probs)
    if method == "vote":
        onehot = np.zeros(probs.shape, dtype=np.float64)
        onehot[np.arange(len(probs)), np.argmax(probs, axis=1)] = 1.0
        return onehot
    raise CompError(f"unknown blend method {method!r}; use one of: {', '.join(METHODS)}")


def finish(summed: np.ndarray, method: str, task: Task | None = None) -> np.ndarray:
    """Weighted sum of contributions (weights summing to 1) -> probabilities summing to 1 per row (multiclass), or
    the task's values (a weighted mean of tag probabilities or numbers; multitask: renormalised per head)."""
    if task is not None and task.kind != "multiclass":
        return task.normalise(summed) if method == "mean" else summed
    if method == "geometric":
        z = np.exp(summed - summed.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
    total = summed.sum(axis=1, keepdims=True)
    return summed / np.where(total > 0, total, 1.0)


def blend(probs: Sequence[np.ndarray], weights: Sequence[float], *, method: str = "mean",
          task: Task | None = None) -> np.ndarray:
    """Blend members' (N, C) probabilities (or a task's outputs) with weights -> (N, C)."""
    check_method(method, task)
    w = check_weights(weights, len(probs))
    summed = sum(wi * contributions(p, method) for wi, p in zip(w, probs) if wi > 0)
    if method == "vote":  # ties between votes go to the weighted mean probability
        summed = summed + 1e-6 * sum(wi * np.asarray(p) for wi, p in zip(w, probs))
    return finish(summed, method, task)


def check_method(method: str, task: Task | None) -> None:
    """geometric and vote blends are of class probabilities; other tasks blend by mean (or rank, for AUC)."""
    kind = "multiclass" if task is None else task.kind
    allowed = ("mean", "rank") if kind in ("multilabel", "binary") else ("mean",) if kind in ("regression", "multitask") else METHODS
    if method not in allowed:
        raise CompError(f"blend method {method!r} does not fit task {kind!r}; use {' or '.join(allowed)}")


def check_weights(weights: Sequence[float], n_members: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_members,) or np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise CompError(f"weights must be {n_members} non-negative numbers, not all zero; got {list(weights)}")
    return w / w.sum()


def parse_weights(text: str, n_members: int) -> str | np.ndarray:
    """--weights auto | equal | w1,w2,... -> 'auto' / 'equal' / normalised array."""
    if text in ("auto", "equal"):
        return text
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise CompError(f"--weights expects auto, equal or numbers like 0.7,0.3; got {text!r}") from None
    if len(values) != n_members:
        raise CompError(f"--weights has {len(values)} numbers for {n_members} members ({text!r}); give one per -e")
    return check_weights(values, n_members)


# ---------------------------------------------------------------- fast scoring


def build_scorer(metric: Metric, y: np.ndarray, *, method: str, task: Task | None = None) -> Callable[[np.ndarray], float]:
    """score(summed contributions) -> metric; multiclass argmax metrics skip normalising (same argmax)."""
    y = np.asarray(y)
    if metric.name in ARGMAX_METRICS and metric.kind == "multiclass":
        offsets: dict[int, np.ndarray] = {}  # n_classes -> y * n_classes, computed once

        def score(summed: np.ndarray) -> float:
            c = summed.shape[1]
            if c not in offsets:  # (setdefault would build the default on every call)
                offsets[c] = y.astype(np.int64) * c
            return _argmax_score(metric.name, y, np.argmax(summed, axis=1), c, offsets=offsets[c])

        return score
    return lambda summed: metric(y, finish(summed, method, task))


def _argmax_score(name: str, y: np.ndarray, pred: np.ndarray, n_classes: int, *, offsets: np.ndarray | None = None) -> float:
    """accuracy / F1 / balanced accuracy from a confusion matrix built with one bincount."""
    offsets = y * n_classes if offsets is None else offsets
    cm = np.bincount(offsets + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    if name == "accuracy":
        return float(tp.sum() / len(y))
    if name == "balanced_accuracy":
        present = support > 0
        return float(np.mean(tp[present] / support[present]))
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    if name == "macro_f1":
        return float(f1.mean())
    return float((f1 * support).sum() / support.sum())


# ---------------------------------------------------------------- weight fitting


def fit_weights(
    oof_probs: Sequence[np.ndarray],
    y: np.ndarray,
    metric: Metric,
    *,
    method: str = "mean",
    search: str = "hill",
    seed: int = 0,
    max_steps: int | None = None,
    task: Task | None = None,
) -> np.ndarray:
    """Non-negative weights summing to 1 that maximise (or minimise) `metric` of the blend on OOF rows.

    hill: greedy forward selection with replacement (Caruana et al. 2004) from the best single
    member, candidates tried in a seeded order so ties break reproducibly; slsqp: SLSQP on log loss
    of the mean/geometric blend; equal: 1/M each.
    """
    n = len(oof_probs)
    if search not in SEARCHES:
        raise CompError(f"unknown weight search {search!r}; use one of: {', '.join(SEARCHES)}")
    if n == 1 or search == "equal":
        return np.full(n, 1.0 / n)
    contribs = [contributions(p, method) for p in oof_probs]
    if search == "slsqp":
        return _fit_slsqp(contribs, np.asarray(y), method=method)
    scorer = build_scorer(metric, y, method=method, task=task)
    return _hill_climb(contribs, scorer, metric, rng=np.random.default_rng(seed), max_steps=max_steps or max(20, 2 * n))


def _hill_climb(contribs: list[np.ndarray], scorer: Callable, metric: Metric, *, rng: np.random.Generator, max_steps: int, patience: int = 10) -> np.ndarray:
    """Counts of picks per member; the best prefix of the greedy path wins."""
    n = len(contribs)
    order = rng.permutation(n)
    singles = [scorer(contribs[i]) for i in range(n)]
    first = _best(order, singles, metric)
    counts = np.zeros(n)
    counts[first] = 1
    summed, best_score, best_counts = contribs[first].copy(), singles[first], counts.copy()
    buf = np.empty_like(summed)  # one reused (N, C) buffer: the search is memory-bound
    scale = metric.name not in ARGMAX_METRICS or metric.kind != "multiclass"  # argmax is scale-free; the rest is not
    since_best = 0
    for _ in range(max_steps - 1):
        k = counts.sum() + 1
        scores = [scorer(_candidate(summed, contribs[i], k if scale else None, buf)) for i in range(n)]
        pick = _best(order, scores, metric)
        summed += contribs[pick]
        counts[pick] += 1
        since_best += 1
        if metric.better(scores[pick], best_score):
            best_score, best_counts, since_best = scores[pick], counts.copy(), 0
        if since_best >= patience:
            break
    log.debug("hill climbing: best %.5f with counts %s", best_score, best_counts.tolist())
    return best_counts / best_counts.sum()


def _candidate(summed: np.ndarray, contrib: np.ndarray, k: float | None, buf: np.ndarray) -> np.ndarray:
    np.add(summed, contrib, out=buf)
    if k is not None:
        buf /= k
    return buf


def _best(order: np.ndarray, scores: list[float], metric: Metric) -> int:
    """The best-scoring index; among equal scores the first in `order`."""
    best = int(order[0])
    for i in order[1:]:
        if metric.better(scores[i], scores[best]):
            best = int(i)
    return best


def _fit_slsqp(contribs: list[np.ndarray], y: np.ndarray, *, method: str) -> np.ndarray:
    """Weights minimising the log loss of the blend (smooth in the weights for mean and geometric)."""
    if method not in ("mean", "geometric"):
        raise CompError(f"search 'slsqp' fits mean or geometric blends, got method {method!r}; use search 'hill'")
    rows = np.arange(len(y))
    picked = np.stack([c[rows, y] for c in contribs], axis=1)  # (N, M): each member's value at the true class

    def loss(w: np.ndarray) -> float:
        if method == "mean":
            return float(-np.log(np.clip(picked @ w, EPS, None)).mean())
        summed = sum(wi * c for wi, c in zip(w, contribs))
        return float(-(summed[rows, y] - np.log(np.exp(summed).sum(axis=1))).mean())

    n = len(contribs)
    res = minimize(loss, np.full(n, 1.0 / n), method="SLSQP", bounds=[(0.0, 1.0)] * n,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}], options={"maxiter": 200, "ftol": 1e-9})
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


# ---------------------------------------------------------------- per-class bias


def apply_bias(probs: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """softmax(log p + bias): shifts decisions between classes (e.g. for macro-F1)."""
    if bias is None:
        return probs
    return finish(np.log(np.clip(probs, EPS, 1.0)) + bias, "geometric")


def fit_bias(probs: np.ndarray, y: np.ndarray, metric: Metric, *, rounds: int = 2, grid: np.ndarray | None = None) -> np.ndarray:
    """Per-class logit biases by coordinate search on `metric` (deterministic)."""
    grid = np.linspace(-2.0, 2.0, 17) if grid is None else grid
    logp = np.log(np.clip(probs, EPS, 1.0))
    scorer = build_scorer(metric, y, method="geometric")
    bias = np.zeros(probs.shape[1])
    best = scorer(logp)
    for _ in range(rounds):
        for c in range(len(bias)):
            for value in grid:
                trial = bias.copy()
                trial[c] = value
                score = scorer(logp + trial)
                if metric.better(score, best):
                    best, bias = score, trial
    return bias


# ---------------------------------------------------------------- decision thresholds (tags, binary labels)


THRESHOLD_METRICS = ("micro_f1", "macro_f1", "samples_f1", "f1", "accuracy", "balanced_accuracy", "weighted_f1")
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def apply_thresholds(probs: np.ndarray, thresholds: np.ndarray | None) -> np.ndarray:
    """Probabilities shifted so that deciding at 0.5 decides at each output's threshold (p >= t <=> p' >= 0.5)."""
    if thresholds is None:
        return probs
    return np.clip(np.asarray(probs) - np.asarray(thresholds) + 0.5, 0.0, 1.0)


def fit_thresholds(probs: np.ndarray, y: np.ndarray, metric: Metric, *, rounds: int = 2,
                   grid: np.ndarray | None = None) -> np.ndarray:
    """Per-output decision thresholds by coordinate search on `metric` from 0.5 (deterministic; ties keep 0.5)."""
    grid = THRESHOLD_GRID if grid is None else grid
    t = np.full(probs.shape[1], 0.5)
    best = metric(y, apply_thresholds(probs, t))
    for _ in range(rounds):
        for c in range(len(t)):
            for value in grid:
                trial = t.copy()
                trial[c] = value
                score = metric(y, apply_thresholds(probs, trial))
                if metric.better(score, best):
                    best, t = score, trial
    return t


def wants_thresholds(task: Task | None, submission_kind: str, metric: Metric) -> bool:
    """Thresholds are fitted for tag submissions and binary label submissions scored by a decision metric."""
    if task is None or metric.name not in THRESHOLD_METRICS:
        return False
    return (task.kind, submission_kind) in (("multilabel", "tags"), ("binary", "label"))


def warn_zero_weights(members: Sequence[str], weights: Sequence[float], *, name: str) -> list[str]:
    """Log a warning naming each member whose fitted weight is 0 (it adds nothing to the submission); their names."""
    zero = [m for m, w in zip(members, weights) if float(w) <= 1e-9]
    for member in zero:
        log.warning("ensemble %s: member %r got weight 0, so it adds nothing to the submission; drop it (-e) or "
                    "fit the blend with --weights equal to keep it", name, member)
    return zero


# ---------------------------------------------------------------- fitted blend with nested estimate


@dataclass(frozen=True)
class BlendFit:
    weights: np.ndarray  # (M,), sums to 1
    bias: np.ndarray | None  # (C,) logit biases, or None
    oof: float  # metric of the blend on all OOF rows, weights fitted on the same rows (in-sample)
    insample: float  # mean over folds of that same blend's per-fold score
    nested: float  # mean over folds of the score on a fold whose rows the weights never saw
    nested_folds: tuple[float, ...]
    thresholds: np.ndarray | None = None  # (C,) decision thresholds (tags, binary labels), or None


def fit_blend(
    oof_probs: Sequence[np.ndarray],
    y: np.ndarray,
    folds: np.ndarray,
    metric: Metric,
    *,
    method: str = "mean",
    weights: str | np.ndarray = "auto",
    bias: bool = False,
    seed: int = 0,
    task: Task | None = None,
    thresholds: bool = False,
) -> BlendFit:
    """Fit weights (and biases) on all OOF rows, and estimate them honestly with fold-wise nesting.

    Args:
        oof_probs: each member's (N, C) OOF probabilities, rows joined by id (same order for all).
        y: the true class index of each row; folds: the fold of each row (the nesting follows them).
        metric: the competition metric (its direction decides what "better" means).
        method: mean | geometric | rank | vote.
        weights: "auto" (fitted), "equal", or an array of one weight per member.
        bias: also fit per-class logit biases on the weighted blend.
        seed: the weight search's seed (ties between equal candidates break reproducibly).
        task: the task the outputs belong to (default multiclass probabilities).
        thresholds: also fit per-output decision thresholds on the blend (tags, binary labels), nested like the weights.

    Returns a BlendFit: the weights and biases fitted on all rows, their in-sample score, and the nested
    estimate (for each fold, weights fitted without it, scored on it), which is the honest one.
    """
    y, folds = np.asarray(y), np.asarray(folds)
    if bias and task is not None and task.kind != "multiclass":
        raise CompError(f"--bias shifts class probabilities; task {task.kind!r} has none to shift (tag and binary "
                        "submissions get fitted decision thresholds instead)")
    fit = lambda rows: _fit_rows(oof_probs, y, rows, metric, method=method, weights=weights, bias=bias, seed=seed,
                                 task=task, thresholds=thresholds)
    w, b, t = fit(np.ones(len(y), dtype=bool))
    final = apply_thresholds(apply_bias(blend(oof_probs, w, method=method, task=task), b), t)
    fold_ids = np.unique(folds)
    insample = [metric(y[folds == f], final[folds == f]) for f in fold_ids]
    nested = []
    for f in fold_ids:
        held = folds == f
        wf, bf, tf = fit(~held)
        blended = blend([p[held] for p in oof_probs], wf, method=method, task=task)
        nested.append(metric(y[held], apply_thresholds(apply_bias(blended, bf), tf)))
    return BlendFit(weights=w, bias=b, oof=metric(y, final), insample=float(np.mean(insample)),
                    nested=float(np.mean(nested)), nested_folds=tuple(float(s) for s in nested), thresholds=t)


def _fit_rows(oof_probs, y, rows, metric, *, method, weights, bias, seed, task=None,
              thresholds=False) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Weights (then biases or thresholds on the weighted blend) fitted on the selected rows only."""
    probs = [p[rows] for p in oof_probs]
    if isinstance(weights, str):
        smooth = metric.name == "log_loss" and method in ("mean", "geometric") and metric.kind == "multiclass"
        search = "equal" if weights == "equal" else ("slsqp" if smooth else "hill")
        w = fit_weights(probs, y[rows], metric, method=method, search=search, seed=seed, task=task)
    else:
        w = check_weights(weights, len(probs))
    b = fit_bias(blend(probs, w, method=method), y[rows], metric) if bias else None
    t = fit_thresholds(blend(probs, w, method=method, task=task), y[rows], metric) if thresholds else None
    return w, b, t
