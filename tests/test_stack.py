"""Stacking: the nested score never sees the scored fold; `comp ensemble --method stack` end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from comp.cli import app
from comp.core.metrics import get_metric
from comp.blend.stack import fit_predict, fit_stack
from comp.core.layout import Layout, read_json
from test_ensemble_cli import fake_experiment

runner = CliRunner()


def noise_members(n: int = 90, classes: int = 3, members: int = 15, seed: int = 0):
    """Members whose probabilities carry no information about y: only memorising rows can score."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    z = rng.normal(0, 1, (members, n, classes))
    probs = np.exp(z) / np.exp(z).sum(axis=2, keepdims=True)
    folds = np.arange(n) % 3
    return list(probs), y, folds


def test_the_stacker_never_sees_the_rows_it_predicts():
    probs, y, folds = noise_members()
    calls = []

    def spy(kind, x_fit, y_fit, x_pred, n_classes, *, seed):
        calls.append((x_fit.copy(), x_pred.copy()))
        return fit_predict(kind, x_fit, y_fit, x_pred, n_classes, seed=seed)

    fit_stack(probs, y, folds, get_metric("accuracy"), kind="logreg", fit=spy)
    assert len(calls) == 3
    predicted = []
    for x_fit, x_pred in calls:
        fitted_rows = {row.tobytes() for row in x_fit}
        assert not any(row.tobytes() in fitted_rows for row in x_pred)  # no predicted row was fitted on
        predicted += [row.tobytes() for row in x_pred]
    assert len(predicted) == len(set(predicted)) == len(y)  # every row predicted exactly once


def test_memorising_scores_in_sample_but_not_nested():
    """On pure noise a stacker that has seen a row's label gets it right; the nested score stays near chance."""
    probs, y, folds = noise_members()
    fitted = fit_stack(probs, y, folds, get_metric("accuracy"), kind="hgb")
    assert fitted.oof > 0.9  # in-sample: the rows' own labels were in the fit (chance is 1/3)
    assert fitted.nested < 0.5
    logreg = fit_stack(probs, y, folds, get_metric("accuracy"), kind="logreg")
    assert logreg.nested < 0.5 and logreg.nested <= logreg.oof
    assert fitted.nested == pytest.approx(get_metric("accuracy")(y, fitted.nested_probs))
    np.testing.assert_allclose(fitted.nested_probs.sum(axis=1), 1.0)


def test_stacking_learns_what_members_know_together():
    """Member A separates class 0 from the rest, member B class 1 from 2: neither alone is good, the stack is."""
    rng = np.random.default_rng(1)
    n = 300
    y = rng.integers(0, 3, n)
    a = np.where((y == 0)[:, None], [0.8, 0.1, 0.1], [0.1, 0.45, 0.45]) + rng.normal(0, 0.02, (n, 3))
    b = np.where((y == 1)[:, None], [0.3, 0.6, 0.1], [0.3, 0.1, 0.6]) + rng.normal(0, 0.02, (n, 3))
    a, b = [np.clip(p, 0.01, 1) / np.clip(p, 0.01, 1).sum(1, keepdims=True) for p in (a, b)]
    acc = get_metric("accuracy")
    fitted = fit_stack([a, b], y, np.arange(n) % 5, acc, kind="logreg")
    assert max(acc(y, a), acc(y, b)) < 0.75 and fitted.nested > 0.95


@pytest.fixture
def two_members(tiny_ws: Path) -> Path:
    fake_experiment(tiny_ws, "good", skill=4.0, seed=1)
    fake_experiment(tiny_ws, "noise", skill=0.0, seed=2, tta="none")
    return tiny_ws


def test_ensemble_method_stack_writes_a_valid_submission_and_a_nested_score(two_members):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import f1_score

    ws = Layout.at(two_members)
    result = runner.invoke(app, ["ensemble", "-e", "good", "-e", "noise", "--method", "stack", "--stacker", "hgb",
                                 "--name", "stk", "-w", str(two_members)])
    assert result.exit_code == 0, result.output
    assert "nested" in result.output
    manifest = read_json(ws.submission_json("stk"))
    assert manifest["method"] == "stack" and manifest["stacker"] == "hgb"
    # the nested score, recomputed by hand from the members' OOF tables
    good = pd.read_csv(ws.oof_tta_csv("good"), dtype={"id": str, "label": str})
    noise = pd.read_csv(ws.oof_csv("noise"), dtype={"id": str, "label": str}).set_index("id").loc[good["id"]]
    cols = [c for c in good.columns if c.startswith("p_")]
    x = np.log(np.clip(np.hstack([good[cols].to_numpy(), noise[cols].to_numpy()]), 1e-7, 1))
    y = good["label"].map({c[2:]: i for i, c in enumerate(cols)}).to_numpy()
    pred = np.zeros(len(y), dtype=np.int64)
    for f in sorted(good["fold"].unique()):
        held = (good["fold"] == f).to_numpy()
        model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=10,
                                               l2_regularization=1.0, early_stopping=False, random_state=0)
        model.fit(x[~held], y[~held])
        pred[held] = model.classes_[model.predict_proba(x[held]).argmax(axis=1)]
    assert manifest["nested"] == pytest.approx(f1_score(y, pred, average="macro"))
    sub = pd.read_csv(ws.submission_csv("stk"), dtype=str)
    sample = pd.read_csv(two_members / "data" / "sample_submission.csv", dtype=str)
    assert sub.columns.tolist() == ["ImageID", "ans"] and sub["ImageID"].tolist() == sample["ImageID"].tolist()
    assert set(sub["ans"]) <= {"c0", "c1", "c2"}
    scored = runner.invoke(app, ["evaluate", str(ws.submission_csv("stk")), "--solution",
                                 str(two_members / "solution.csv"), "-w", str(two_members)])
    assert scored.exit_code == 0, scored.output
    board = runner.invoke(app, ["leaderboard", "-w", str(two_members)])
    assert board.exit_code == 0 and "stack/hgb" in board.output
    refused = runner.invoke(app, ["ensemble", "-e", "good", "-e", "noise", "--method", "stack", "--bias",
                                  "-w", str(two_members)])
    assert refused.exit_code == 2 and "drop --bias" in refused.output
    exported = runner.invoke(app, ["export", "stk", "--to", str(two_members / "bundle"), "-w", str(two_members)])
    assert exported.exit_code == 2 and "is a stack" in exported.output
