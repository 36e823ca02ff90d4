"""Folds for each task kind: disjoint and covering, groups whole, balanced on what the kind stratifies, stable."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from comp.cli import app
from comp.core.config import load_config
from comp.data.tables import Tables, load_tables
from comp.core.errors import CompError
from comp.data.folds import fold_summary, load_or_make_folds, make_folds
from comp.core.tasks import Combiner, Head, Task, combos_of, quantile_bins
from comp.core.layout import Layout

from task_data import build_task_workspace

runner = CliRunner()
FREQS = (0.5, 0.3, 0.15, 0.08, 0.03)  # how often each tag appears


def frame(n_groups: int, per_group: int, rng: np.random.Generator, grouped: bool = True) -> pd.DataFrame:
    n = n_groups * per_group
    out = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "path": ""})
    if grouped:
        out["group"] = [f"g{i // per_group}" for i in range(n)]
    return out


def multilabel_tables(n_groups=150, per_group=4, seed=0, grouped=True) -> Tables:
    rng = np.random.default_rng(seed)
    tags = tuple(f"t{j}" for j in range(len(FREQS)))
    train = frame(n_groups, per_group, rng, grouped)
    # most tags are shared by a group's rows (one subject), some vary within it
    per_group_tags = rng.random((n_groups, len(FREQS))) < np.array(FREQS)
    matrix = np.repeat(per_group_tags, per_group, axis=0) | (rng.random((len(train), len(FREQS))) < 0.02)
    train["label"] = [" ".join(t for t, on in zip(tags, row) if on) for row in matrix]
    train["y"] = matrix.argmax(axis=1)
    return Tables(train=train, test=None, classes=tags, task=Task("multilabel", tags, labels=tags),
                  targets=matrix.astype(np.float32))


def check_partition(fold: np.ndarray, train: pd.DataFrame, k: int) -> None:
    assert fold.shape == (len(train),)
    assert sorted(set(fold.tolist())) == list(range(k))  # every row in exactly one fold, every fold used
    if "group" in train:
        assert (pd.Series(fold).groupby(train["group"].to_numpy()).nunique() == 1).all()  # no group split


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("k", [3, 5])
def test_multilabel_folds_keep_groups_and_tag_frequencies(grouped, k):
    t = multilabel_tables(grouped=grouped)
    fold = make_folds(t, k, 0)["fold"].to_numpy()
    check_partition(fold, t.train, k)
    matrix = t.targets > 0.5
    overall = matrix.mean(axis=0)
    for f in range(k):
        rows = fold == f
        tol = 0.05 + 1 / np.sqrt(rows.sum())
        for j in np.flatnonzero(overall >= 0.05):  # frequent tags
            assert abs(matrix[rows, j].mean() - overall[j]) <= tol, (f, j)
        assert abs(rows.sum() - len(fold) / k) <= 0.2 * len(fold) / k  # folds of similar size


def test_multilabel_folds_spread_the_rarest_tag_over_groups():
    """Iterative stratification deals the groups holding the rarest tag out evenly, one fold after another."""
    t = multilabel_tables(seed=3)
    fold = make_folds(t, 5, 1)["fold"].to_numpy()
    groups = t.train.assign(fold=fold, rare=t.targets[:, -1] > 0.5).groupby("group").agg(fold=("fold", "first"),
                                                                                          rare=("rare", "any"))
    per_fold = groups[groups["rare"]].groupby("fold").size().reindex(range(5), fill_value=0)
    assert groups["rare"].sum() >= 10 and np.ptp(per_fold.to_numpy()) <= 1, per_fold.tolist()


def test_multilabel_folds_deterministic_and_seeded():
    t = multilabel_tables(seed=1)
    a, b = make_folds(t, 5, 7), make_folds(t, 5, 7)
    assert a.to_csv(index=False) == b.to_csv(index=False)
    assert (make_folds(t, 5, 8)["fold"] != a["fold"]).any()


def test_multilabel_folds_without_the_package_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "iterstrat", None)
    monkeypatch.setitem(sys.modules, "iterstrat.ml_stratifiers", None)
    with pytest.raises(CompError, match=r"pip install 'comp\[multilabel\]'"):
        make_folds(multilabel_tables(n_groups=20), 2, 0)


def regression_tables(n_groups=120, per_group=3, seed=0) -> Tables:
    rng = np.random.default_rng(seed)
    train = frame(n_groups, per_group, rng)
    base = np.repeat(rng.lognormal(1.0, 0.8, n_groups), per_group)  # skewed, subject-level target
    target = base + rng.normal(0, 0.1, len(base))
    train["label"] = [f"{v:.4f}" for v in target]
    train["y"] = quantile_bins(target, 10)
    return Tables(train=train, test=None, classes=("target",),
                  task=Task("regression", ("target",), scale=(float(target.min()), float(target.max()))),
                  targets=target.astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1])
def test_regression_folds_balance_the_target(seed):
    t = regression_tables(seed=seed)
    fold = make_folds(t, 5, seed)["fold"].to_numpy()
    check_partition(fold, t.train, 5)
    y = t.targets.astype(np.float64)
    for f in range(5):
        assert abs(y[fold == f].mean() - y.mean()) <= 0.15 * y.std()  # quantile-stratified: close means
        assert abs(np.median(y[fold == f]) - np.median(y)) <= 0.25 * y.std()
    summary = fold_summary(t, fold)
    assert list(summary.table["fold"]) == [0, 1, 2, 3, 4, "all"]
    assert summary.table["mean"].iloc[-1] == pytest.approx(y.mean())
    assert summary.table["mean"].iloc[2] == pytest.approx(y[fold == 2].mean())
    assert summary.warnings == []


def regression_bytes(t: Tables, seed: int) -> str:
    return make_folds(t, 5, seed).to_csv(index=False)


def test_regression_folds_deterministic():
    t = regression_tables(seed=4)
    assert regression_bytes(t, 3) == regression_bytes(t, 3)
    assert regression_bytes(t, 3) != regression_bytes(t, 4)


def multitask_tables(n_groups=150, per_group=2, seed=0) -> Tables:
    rng = np.random.default_rng(seed)
    train = frame(n_groups, per_group, rng)
    heads = (Head("mask", "mask", ("0", "1", "2")), Head("gender", "gender", ("0", "1")), Head("age", "age", ("0", "1", "2")))
    mask = np.repeat(rng.choice(3, n_groups, p=[0.7, 0.15, 0.15]), per_group)
    gender = np.repeat(rng.choice(2, n_groups, p=[0.6, 0.4]), per_group)
    age = np.repeat(rng.choice(3, n_groups, p=[0.5, 0.4, 0.1]), per_group)
    targets = np.stack([mask, gender, age], axis=1)
    combine = Combiner.parse("mask*6 + gender*3 + age", [h.name for h in heads])
    labels, combos = combos_of(heads, combine, lambda v: sorted(set(v), key=int))
    task = Task("multitask", tuple(f"{h.name}={c}" for h in heads for c in h.classes), labels=labels, heads=heads,
                combine=combine, combos=combos)
    train["y"] = task.combined_codes(targets)
    train["label"] = [labels[i] for i in train["y"]]
    return Tables(train=train, test=None, classes=task.outputs, task=task, targets=targets)


def test_multitask_folds_balance_the_combined_label_and_pool_rare_combinations():
    t = multitask_tables()
    y = t.train["y"].to_numpy()
    assert np.bincount(y).min() < 5 * 2  # some combinations have fewer than k groups: pooled, not refused
    fold = make_folds(t, 5, 0)["fold"].to_numpy()
    check_partition(fold, t.train, 5)
    expected = mask_share = None
    for f in range(5):
        rows = fold == f
        for c in np.flatnonzero(np.bincount(y) >= 40):  # the frequent combined labels
            expected = (y == c).mean()
            assert abs((y[rows] == c).mean() - expected) <= 0.05 + 1 / np.sqrt(rows.sum())
        mask_share = (t.targets[rows, 0] == 0).mean()
        assert abs(mask_share - (t.targets[:, 0] == 0).mean()) <= 0.1  # each head follows
    assert expected is not None and mask_share is not None
    a, b = make_folds(t, 5, 0), make_folds(t, 5, 0)
    assert a.to_csv(index=False) == b.to_csv(index=False)


def test_binary_folds_balance_the_positive_rate():
    rng = np.random.default_rng(0)
    train = frame(200, 2, rng)
    y = np.repeat(rng.random(200) < 0.2, 2).astype(np.int64)
    train["label"] = np.where(y == 1, "yes", "no")
    train["y"] = y
    t = Tables(train=train, test=None, classes=("yes",), task=Task("binary", ("yes",), labels=("no", "yes")),
               targets=y.astype(np.float32))
    fold = make_folds(t, 5, 0)["fold"].to_numpy()
    check_partition(fold, train, 5)
    for f in range(5):
        assert abs(y[fold == f].mean() - y.mean()) <= 0.03


# ---------------------------------------------------------------- through comp.yaml and the CLI


@pytest.mark.parametrize("kind", ["multilabel", "regression", "multitask", "binary"])
def test_cli_folds_per_kind(tmp_path, kind):
    root = build_task_workspace(tmp_path / kind, kind, subjects=24)
    r = runner.invoke(app, ["folds", "--k", "3", "-w", str(root)])
    assert r.exit_code == 0, r.output
    path = root / "folds" / "k3-s42.csv"
    first = path.read_bytes()
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["task"] == kind
    title = {"multilabel": "share of rows holding each tag", "regression": "the target per fold",
             "multitask": "combined-label counts", "binary": "class counts"}[kind]
    assert title in r.output
    folds = pd.read_csv(path, dtype=str)
    train = pd.read_csv(root / "data" / "train.csv", dtype=str)
    assert list(folds["id"]) == list(train["id"])
    assert (folds.groupby(train["subject"])["fold"].nunique() == 1).all()
    r = runner.invoke(app, ["folds", "--k", "3", "--force", "-w", str(root)])
    assert r.exit_code == 0 and path.read_bytes() == first  # same seed -> same bytes


def test_multilabel_record_covers_the_tag_set_and_the_task(tmp_path):
    root = build_task_workspace(tmp_path / "ml", "multilabel", subjects=24)
    ws = Layout.at(root)
    cfg = load_config(root)
    tables = load_tables(cfg, ws)
    made = load_or_make_folds(ws, tables, k=3, seed=42, group_col="subject")
    assert made.record["tags"] == ["cat", "dog", "owl"]
    comp = yaml.safe_load((root / "comp.yaml").read_text())
    comp["data"]["classes"] = ["cat", "dog", "owl", "yak"]  # a tag added to the set
    (root / "comp.yaml").write_text(yaml.safe_dump(comp))
    with pytest.raises(CompError, match=r"the tag set changed.*remake it"):
        load_or_make_folds(ws, load_tables(load_config(root), ws), k=3, seed=42, group_col="subject")


def test_record_covers_the_task_kind(tmp_path):
    root = build_task_workspace(tmp_path / "bin", "binary", subjects=24)
    ws = Layout.at(root)
    load_or_make_folds(ws, load_tables(load_config(root), ws), k=3, seed=42, group_col="subject")
    comp = yaml.safe_load((root / "comp.yaml").read_text())
    comp["task"] = "multiclass"  # the same column read as one of two classes: same labels, another task
    comp["data"].pop("positive")
    comp["submission"]["kind"] = "label"
    (root / "comp.yaml").write_text(yaml.safe_dump(comp))
    with pytest.raises(CompError, match=r"the task was binary, now multiclass.*remake it"):
        load_or_make_folds(ws, load_tables(load_config(root), ws), k=3, seed=42, group_col="subject")
