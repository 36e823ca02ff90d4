"""Stacking (`comp ensemble --method stack`): a second-level model on the members' OOF probabilities.

Features are the members' OOF probabilities side by side (log-probabilities by default), rows joined
by id exactly as the weighted blends join them (comp.blend.submission.member_oof: OOF made with each
member's test TTA). The stacker is `logreg` (multinomial logistic regression on standardised
features, C chosen from LOGREG_CS by an inner 3-fold CV on log loss inside the rows each fit sees) or `hgb` (a small HistGradientBoostingClassifier, early stopping off, seeded).

Its score is out-of-sample by construction: for each outer fold f (the experiment's folds) a stacker
is fitted on the other folds' rows and predicts fold f's rows; the metric of those predictions over all
OOF rows is the reported (nested) score. The final stacker is fitted on every OOF row and applied to
the members' test probabilities (each member's fold mean); its in-sample OOF score is recorded too,
beside, never instead of, the nested one. Never imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from comp.core.errors import CompError
from comp.core.metrics import Metric

log = logging.getLogger("comp.blend.stack")

STACKERS = ("logreg", "hgb")
LOGREG_CS = (0.01, 0.1, 1.0, 10.0)  # the inverse regularisation strengths logreg's inner CV chooses from
EPS = 1e-7


def features(probs: Sequence[np.ndarray], *, log_probs: bool = True) -> np.ndarray:
    """(N, M*C): the members' probabilities side by side (log-probabilities when log_probs)."""
    stacked = np.concatenate([np.asarray(p, dtype=np.float64) for p in probs], axis=1)
    return np.log(np.clip(stacked, EPS, 1.0)) if log_probs else stacked


def make_stacker(kind: str, *, seed: int = 0) -> Any:
    """An unfitted sklearn classifier for `kind`."""
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        # multinomial (lbfgs); C by an inner 3-fold CV on log loss, within the rows it is fitted on
        return make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=LOGREG_CS, cv=3, scoring="neg_log_loss",
                                                                    max_iter=2000))
    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=10,
                                              l2_regularization=1.0, early_stopping=False, random_state=seed)
    raise CompError(f"unknown stacker {kind!r}; use one of: {', '.join(STACKERS)}")


def predict_full(model: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, n_classes) probabilities; classes the stacker never saw get 0 (then rows renormalised)."""
    out = np.zeros((len(x), n_classes))
    out[:, np.asarray(model.classes_, dtype=np.int64)] = model.predict_proba(x)
    out = np.clip(out, 0.0, 1.0)
    return out / np.where(out.sum(axis=1, keepdims=True) > 0, out.sum(axis=1, keepdims=True), 1.0)


def fit_predict(kind: str, x_fit: np.ndarray, y_fit: np.ndarray, x_pred: np.ndarray, n_classes: int, *, seed: int) -> np.ndarray:
    """Fit a stacker on (x_fit, y_fit) and predict x_pred; with one class in y_fit, that class."""
    classes = np.unique(y_fit)
    if len(classes) == 1:
        out = np.zeros((len(x_pred), n_classes))
        out[:, classes[0]] = 1.0
        return out
    model = fit_model(kind, x_fit, y_fit, seed=seed)
    return predict_full(model, x_pred, n_classes)


def fit_model(kind: str, x: np.ndarray, y: np.ndarray, *, seed: int) -> Any:
    """A stacker fitted on one thread: OOF tables are small, and OpenMP threads on a busy machine cost far more."""
    import warnings

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # sklearn 1.9's notices about LogisticRegressionCV's defaults
        return make_stacker(kind, seed=seed).fit(x, y)


@dataclass(frozen=True)
class StackFit:
    kind: str
    nested_probs: np.ndarray  # (N, C): each fold's rows predicted by a stacker fitted without them
    nested: float  # metric of nested_probs over all OOF rows: the reported score
    nested_folds: tuple[float, ...]
    oof: float  # the final stacker (fitted on every row) scored on those same rows: in-sample
    model: Any  # the final stacker


def fit_stack(oof_probs: Sequence[np.ndarray], y: np.ndarray, folds: np.ndarray, metric: Metric, *, kind: str = "logreg",
              log_probs: bool = True, seed: int = 0,
              fit: Callable[..., np.ndarray] = fit_predict) -> StackFit:
    """Nested stacking: per outer fold, fit on the other folds' rows and predict the fold's rows; then the final fit.

    fit(kind, x_fit, y_fit, x_pred, n_classes, seed=) does one fit and prediction (tests pass a spy).
    """
    if kind not in STACKERS:
        raise CompError(f"unknown stacker {kind!r}; use one of: {', '.join(STACKERS)}")
    y, folds = np.asarray(y, dtype=np.int64), np.asarray(folds)
    n_classes = np.asarray(oof_probs[0]).shape[1]
    x = features(oof_probs, log_probs=log_probs)
    fold_ids = np.unique(folds)
    if len(fold_ids) < 2:
        raise CompError("--method stack needs OOF rows of two or more folds (the stacker's score is nested by fold)")
    nested = np.zeros((len(y), n_classes))
    per_fold = []
    for f in fold_ids:
        held = folds == f
        nested[held] = fit(kind, x[~held], y[~held], x[held], n_classes, seed=seed)
        per_fold.append(float(metric(y[held], nested[held])))
    final = fit_model(kind, x, y, seed=seed) if len(np.unique(y)) > 1 else None
    insample = predict_full(final, x, n_classes) if final is not None else nested
    return StackFit(kind=kind, nested_probs=nested, nested=float(metric(y, nested)), nested_folds=tuple(per_fold),
                    oof=float(metric(y, insample)), model=final)


def apply_stack(fitted: StackFit, test_probs: Sequence[np.ndarray], *, log_probs: bool = True) -> np.ndarray:
    """The final stacker on the members' test probabilities -> (N_test, C)."""
    n_classes = np.asarray(test_probs[0]).shape[1]
    if fitted.model is None:
        raise CompError("the OOF rows hold a single class; a stacker cannot be fitted")
    return predict_full(fitted.model, features(test_probs, log_probs=log_probs), n_classes)


# ---------------------------------------------------------------- members -> stack -> submission


def make_stack_submission(cfg: Any, ws: Any, members: Sequence[str], *, name: str, stacker: str = "logreg",
                          log_probs: bool = True, oof_source: str = "auto", seed: int = 0,
                          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit the stacker on the members' OOF probabilities (nested score), apply it to their test probabilities,
    write submissions/<name>.csv + .json through the same validation and format as the weighted blends."""
    from comp.data.tables import load_tables
    from comp.blend.ensemble import align_members
    from comp.core.locks import short_lock
    from comp.core.metrics import get_metric
    from comp.blend.submission import (_hashes, build_submission, expected_ids, member_oof, member_records,
                                 read_member_table, write_submission)

    if not members:
        raise CompError("ensemble needs at least one member: -e NAME (repeatable)")
    if len(set(members)) != len(members):
        raise CompError(f"members are listed twice: {list(members)}; give each -e once")
    if stacker not in STACKERS:
        raise CompError(f"--stacker must be one of {', '.join(STACKERS)}, got {stacker!r}")
    ws.submission_csv(name)
    task = getattr(cfg, "task", "multiclass")
    if task != "multiclass":
        raise CompError(f"--method stack fits a multiclass stacker; this workspace's task is {task!r}: use a weighted "
                        "blend (--method mean)")
    metric = get_metric(cfg.metric)
    tables = load_tables(cfg, ws, check_images=False)
    records = member_records(ws, members, tables.train, oof_source=oof_source)
    sources = {m: r["oof_source"] for m, r in records.items()}
    oof_probs, y, folds = member_oof(ws, members, tables.classes, oof_sources=sources)
    fitted = fit_stack(oof_probs, y, folds, metric, kind=stacker, log_probs=log_probs, seed=seed)
    test_frames = [read_member_table(ws.test_probs_csv(m), m, "test predictions", f"run `comp predict -e {m}`") for m in members]
    test_ids, test_probs = align_members(test_frames, tables.classes, names=members)
    probs = apply_stack(fitted, test_probs, log_probs=log_probs)
    order, sample_columns = expected_ids(cfg, ws)
    frame = build_submission(test_ids, probs, tables.classes, cfg.submission, order=order, sample_columns=sample_columns)
    manifest = {
        "members": list(members), "method": "stack", "stacker": stacker,
        "stack_features": "log-probabilities" if log_probs else "probabilities", "seed": seed,
        "weights": None, "bias": None,
        "oof": fitted.oof, "nested": fitted.nested, "nested_folds": list(fitted.nested_folds),
        "nested_how": "per outer fold, the stacker fitted on the other folds' OOF rows predicts the fold's rows; "
                      "the metric of those predictions over all OOF rows",
        "metric": cfg.metric, "oof_source": sources, "tta": {m: r["tta"] for m, r in records.items()},
        "scores_from": "OOF predictions made as each member's test predictions (same folds, checkpoints and TTA)",
        "member_oof": {m: metric(y, p) for m, p in zip(members, oof_probs)},
        "config_hashes": {m: _hashes(ws, m, records[m]["record"]) for m in members},
        **(extra or {}),
    }
    with short_lock(ws.submissions_lock, f"writing submission {name}"):
        csv_path, json_path = write_submission(ws, name, frame, cfg.submission, expected=order,
                                               classes=tables.classes, manifest=manifest)
    return {**manifest, "csv": str(csv_path), "json": str(json_path)}


def stack_section(ws: Any, result: dict) -> list[Any]:
    """In each member's report: the stack's members, stacker, nested and in-sample scores."""
    import html
    from pathlib import Path

    import pandas as pd

    from comp.report.page import add_section, table_html

    members = result["members"]
    frame = pd.DataFrame({"member": members, "TTA": [result["tta"][m] for m in members],
                          "OOF from": [result["oof_source"][m] for m in members],
                          "member OOF": [result["member_oof"][m] for m in members]})
    name = Path(result["csv"]).stem
    body = (f"<p>submission {html.escape(name)} (stack, {html.escape(result['stacker'])} on "
            f"{html.escape(result['stack_features'])}): nested {result['nested']:.5f} (each fold predicted by a stacker "
            f"fitted without it), in-sample {result['oof']:.5f}, {html.escape(result['metric'])}</p>" + table_html(frame))
    return [add_section(ws, m, f"ensemble-{name}", f"Ensemble {name}", body, order=80) for m in members if ws.exp_dir(m).is_dir()]
