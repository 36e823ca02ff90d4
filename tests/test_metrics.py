"""comp.core.metrics against sklearn on small literal arrays; a lower-is-better metric through early stopping and tuning."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import yaml
from sklearn import metrics as skm

import comp.train.engine as engine
from comp.core.config import load_config
from comp.data.tables import load_tables
from comp.train.engine import FoldJob, fit_fold
from comp.core.errors import CompError
from comp.data.folds import ensure_folds
from comp.core.metrics import METRICS, Metric, confusion_counts, get_metric, per_class_scores
from comp.tune import tune_experiment
from comp.tune.study import open_storage
from comp.core.layout import Layout

optuna.logging.set_verbosity(optuna.logging.WARNING)

# 8 samples, 3 classes; argmax predictions: 0 0 1 2 1 2 2 0 against y 0 1 1 2 1 0 2 2
Y = np.array([0, 1, 1, 2, 1, 0, 2, 2])
P = np.array([
    [0.7, 0.2, 0.1],
    [0.5, 0.4, 0.1],
    [0.2, 0.6, 0.2],
    [0.1, 0.2, 0.7],
    [0.3, 0.4, 0.3],
    [0.2, 0.3, 0.5],
    [0.1, 0.1, 0.8],
    [0.6, 0.1, 0.3],
])
PRED = P.argmax(1)


def test_every_metric_is_tested_here() -> None:
    assert set(METRICS) == {"accuracy", "macro_f1", "weighted_f1", "balanced_accuracy", "log_loss", "roc_auc"}


@pytest.mark.parametrize(("name", "expected"), [
    ("accuracy", lambda: skm.accuracy_score(Y, PRED)),
    ("macro_f1", lambda: skm.f1_score(Y, PRED, average="macro")),
    ("weighted_f1", lambda: skm.f1_score(Y, PRED, average="weighted")),
    ("balanced_accuracy", lambda: skm.balanced_accuracy_score(Y, PRED)),
    ("log_loss", lambda: skm.log_loss(Y, P, labels=[0, 1, 2])),
    ("roc_auc", lambda: skm.roc_auc_score(Y, P, multi_class="ovr")),
])
def test_metric_matches_sklearn(name: str, expected) -> None:
    value = get_metric(name)(Y, P)
    assert isinstance(value, float) and value == pytest.approx(expected(), abs=1e-12)


def test_literal_values() -> None:
    """Worked by hand: 5 of 8 right; log loss is the mean of -ln p(true class)."""
    assert get_metric("accuracy")(Y, P) == pytest.approx(5 / 8)
    true_p = [0.7, 0.4, 0.6, 0.7, 0.4, 0.2, 0.8, 0.3]
    assert get_metric("log_loss")(Y, P) == pytest.approx(-np.mean(np.log(true_p)))


def test_f1_counts_a_class_never_predicted_as_zero() -> None:
    """Class 2 is in y but never predicted: macro F1 averages over all classes of probs, 0 for it."""
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    assert get_metric("macro_f1")(y, p) == pytest.approx(
        skm.f1_score(y, p.argmax(1), labels=[0, 1, 2], average="macro", zero_division=0))
    assert get_metric("macro_f1")(y, p) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)  # predictions 0 1 0 1


@pytest.mark.parametrize("seed", range(20))
def test_counted_f1_and_balanced_accuracy_equal_sklearn_on_random_labels(seed: int) -> None:
    """F1, balanced accuracy and the report's per-class table are counted in numpy (no sklearn import on the
    training path); random labels with classes missing from y, from the predictions, or from both."""
    rng = np.random.default_rng(seed)
    n_classes, n = int(rng.integers(2, 19)), int(rng.integers(1, 60))
    present = rng.choice(n_classes, size=int(rng.integers(1, n_classes + 1)), replace=False)
    y = rng.choice(present, size=n)
    probs = rng.dirichlet(np.ones(n_classes) * 0.3, size=n)
    pred, labels = probs.argmax(1), np.arange(n_classes)
    for average in ("macro", "weighted"):
        assert get_metric(f"{average}_f1")(y, probs) == pytest.approx(
            skm.f1_score(y, pred, labels=labels, average=average, zero_division=0), abs=1e-12)
    assert get_metric("balanced_accuracy")(y, probs) == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    got = per_class_scores(y, pred, n_classes)
    want = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_array_equal(confusion_counts(y, pred, n_classes), skm.confusion_matrix(y, pred, labels=labels))


def test_binary_roc_auc_uses_the_positive_column() -> None:
    y = np.array([0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    assert get_metric("roc_auc")(y, np.stack([1 - p1, p1], 1)) == pytest.approx(skm.roc_auc_score(y, p1))
    assert get_metric("roc_auc")(y, np.stack([1 - p1, p1], 1)) == pytest.approx(5 / 6)


def test_log_loss_clips_zero_probabilities_and_renormalises() -> None:
    y = np.array([0, 1])
    p = np.array([[1.0, 0.0], [1.0, 0.0]])  # the second is certain and wrong
    value = get_metric("log_loss")(y, p)
    assert np.isfinite(value) and value == pytest.approx(-np.log(1e-15) / 2, rel=1e-6)
    unnormalised = np.array([[0.2, 0.2], [0.1, 0.3]])
    assert get_metric("log_loss")(y, unnormalised) == pytest.approx(-(np.log(0.5) + np.log(0.75)) / 2)


def test_perfect_predictions_score_best() -> None:
    onehot = np.eye(3)[Y]
    for name, metric in METRICS.items():
        best = metric(Y, onehot)
        assert best == pytest.approx(0.0 if name == "log_loss" else 1.0, abs=1e-9), name
        assert not metric.better(metric(Y, P), best), name  # nothing beats a perfect prediction


@pytest.mark.parametrize("name", sorted(METRICS))
def test_greater_is_better_and_better(name: str) -> None:
    metric = get_metric(name)
    assert metric.greater_is_better is (name != "log_loss")
    low, high = 0.2, 0.8
    assert metric.better(high, low) is metric.greater_is_better
    assert metric.better(low, high) is not metric.greater_is_better
    assert not metric.better(0.5, 0.5)  # strictly better


def test_better_of_a_custom_metric() -> None:
    error = Metric("error", lambda y, p: float((p.argmax(1) != y).mean()), greater_is_better=False)
    assert error.better(0.1, 0.2) and not error.better(0.2, 0.1)
    assert error(Y, P) == pytest.approx(3 / 8)


def test_unknown_metric_names_the_closest_and_the_known_ones() -> None:
    with pytest.raises(CompError, match=r"unknown metric 'acuracy'; did you mean accuracy\?; known: accuracy, macro_f1"):
        get_metric("acuracy")
    with pytest.raises(CompError) as info:
        get_metric("zzz")
    assert "did you mean" not in str(info.value) and all(name in str(info.value) for name in METRICS)


# ---------------------------------------------------------------- log_loss (lower is better) through the engine


def setup(root: Path, *overrides: str):
    cfg = load_config(root, "baseline", ["folds.k=2", "metric=log_loss", *overrides])
    ws = Layout.at(root)
    tables = load_tables(cfg, ws)
    fold_of = ensure_folds(ws, tables, cfg).fold_of(tables.train)
    return cfg, ws, tables, fold_of


@pytest.mark.usefixtures("one_torch_thread")
def test_log_loss_fit_keeps_the_epoch_with_the_lowest_loss(tiny_ws: Path) -> None:
    cfg, ws, tables, fold_of = setup(tiny_ws, "train.epochs=3", "train.lr=0.02", "train.checkpoint=best")
    res = fit_fold(FoldJob(cfg, tables, fold_of, 0, tiny_ws / "out", ws=ws))
    scores = res.history["metric"].to_numpy()
    assert len(set(scores.round(8))) == 3  # the epochs differ, so the choice matters
    assert res.best_epoch == int(np.argmin(scores)) and res.score == pytest.approx(scores.min())
    y_val = tables.train["y"].to_numpy()[fold_of == 0]
    assert res.score == pytest.approx(skm.log_loss(y_val, res.val_probs, labels=[0, 1, 2]), rel=1e-4)


@pytest.mark.usefixtures("one_torch_thread")
def test_log_loss_early_stopping_counts_epochs_that_do_not_lower_it(tiny_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripted log losses 0.9, 0.5, 0.6, 0.7, 0.4, ...: epoch 1 is best, patience 2 stops after epoch 3."""
    scripted = iter([0.9, 0.5, 0.6, 0.7, 0.4, 0.3])

    def pick(cands, metric):
        c = cands[0]
        return engine.Candidate(c.weights, c.module, c.probs, 1.0, next(scripted))

    monkeypatch.setattr(engine, "pick", pick)
    cfg, ws, tables, fold_of = setup(tiny_ws, "train.epochs=6", "train.early_stopping=2", "train.checkpoint=best")
    seen = []
    res = fit_fold(FoldJob(cfg, tables, fold_of, 0, tiny_ws / "out", ws=ws), on_epoch=lambda e, info: seen.append(info["score"]))
    assert seen == [0.9, 0.5, 0.6, 0.7]  # a greater-is-better comparison would stop after 0.9, 0.5, 0.6
    assert len(res.history) == 4 and res.best_epoch == 1 and res.score == 0.5


# ---------------------------------------------------------------- log_loss through tuning


def test_tuning_a_lower_is_better_metric_minimizes(tiny_ws: Path) -> None:
    def fit(job, *, progress, on_epoch):
        cfg, out_dir = job.cfg, job.out_dir
        loss = abs(np.log10(cfg.train.lr) + 3)  # lowest at lr = 1e-3
        for epoch in range(cfg.train.epochs):
            on_epoch(epoch, {"score": loss, "val_loss": loss})
        return SimpleNamespace(score=loss)

    ws = Layout.at(tiny_ws)
    cfg = load_config(tiny_ws, "baseline", ["metric=log_loss", "folds.k=2", "tune.pruner=none", "tune.epochs=1",
                                            "tune.space={train.lr: {float: [1.0e-5, 1.0e-1], log: true}}"])
    result = tune_experiment(ws, cfg, exp="baseline", trials=5, fit=fit)
    study = optuna.load_study(study_name="baseline", storage=open_storage(None, ws.tune_journal("baseline")))
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    values = {t.number: t.value for t in study.trials if t.value is not None}
    assert len(values) == 5 and len(set(values.values())) == 5
    lowest = min(values, key=values.get)
    assert result.best_number == lowest and result.best_value == pytest.approx(min(values.values()))
    assert result.best_params == study.trials[lowest].params
    tuned = yaml.safe_load(ws.tuned_yaml("baseline").read_text())
    assert tuned["train"]["lr"] == study.trials[lowest].params["train.lr"]
