import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from comp.cli import app
from comp.core.config import load_config
from comp.data.tables import load_tables
from comp.core.errors import CompError
from comp.data.folds import assign_folds, check_folds, ensure_folds, fold_balance, make_folds
from comp.core.layout import Layout

runner = CliRunner()


def synthetic(n_groups=60, per_group=(1, 7), n_classes=6, seed=0):
    """Imbalanced labels, groups of varying size (one label per group, like one person)."""
    rng = np.random.default_rng(seed)
    y, groups = [], []
    for g in range(n_groups):
        label = min(int(rng.exponential(1.6)), n_classes - 1)
        size = rng.integers(*per_group, endpoint=True)
        y += [label] * size
        groups += [f"g{g}"] * size
    return np.array(y), np.array(groups)


@pytest.mark.parametrize("seed", [0, 1, 42])
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("grouped", [True, False])
def test_folds_disjoint_covering_no_group_split(seed, k, grouped):
    y, groups = synthetic(seed=seed)
    fold = assign_folds(y, groups if grouped else None, k, seed)
    assert fold.shape == y.shape
    assert set(fold.tolist()) == set(range(k))  # every row in exactly one fold, all folds used
    if grouped:
        per_group = pd.Series(fold).groupby(groups).nunique()
        assert (per_group == 1).all()


def test_class_ratios_within_tolerance():
    rng = np.random.default_rng(3)
    y = rng.choice(4, size=2000, p=[0.55, 0.25, 0.15, 0.05])
    fold = assign_folds(y, None, 5, 0)
    overall = np.bincount(y) / len(y)
    for f in range(5):
        share = np.bincount(y[fold == f], minlength=4) / (fold == f).sum()
        assert np.abs(share - overall).max() < 0.01


def test_relabelling_classes_keeps_folds():
    y, groups = synthetic(seed=5)
    names = np.array(["zebra", "ant", "moth", "bee", "yak", "cat"])
    a = assign_folds(y, groups, 5, 11)
    b = assign_folds(names[y], groups, 5, 11)
    c = assign_folds((y * 7 + 3) % 11, groups, 5, 11)
    assert (a == b).all() and (a == c).all()


def test_seed_changes_folds_same_seed_same_folds():
    y, groups = synthetic(seed=2)
    assert (assign_folds(y, groups, 5, 1) == assign_folds(y, groups, 5, 1)).all()
    assert (assign_folds(y, groups, 5, 1) != assign_folds(y, groups, 5, 2)).any()


def test_extra_stratification_balances_second_column():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    gender = rng.choice(["m", "f"], 600, p=[0.8, 0.2])
    fold = assign_folds(y, None, 5, 0, extra=[gender])
    for f in range(5):
        assert abs((gender[fold == f] == "f").mean() - (gender == "f").mean()) < 0.02


def test_too_few_groups_per_class_is_an_error(tiny_ws):
    t = load_tables(load_config(tiny_ws), Layout.at(tiny_ws))
    with pytest.raises(CompError, match=r"k=5 folds need at least 5 groups per class.*'c0' \(4 groups\).*smaller --k"):
        make_folds(t, 5, 0)


def test_unknown_stratify_column(tiny_ws):
    t = load_tables(load_config(tiny_ws), Layout.at(tiny_ws))
    with pytest.raises(CompError, match=r"--stratify column 'gendr' not in train\.csv; did you mean gender"):
        make_folds(t, 2, 0, ("gendr",))


def test_check_folds_detects_leak_and_mismatch(tiny_ws):
    t = load_tables(load_config(tiny_ws), Layout.at(tiny_ws))
    folds = make_folds(t, 2, 0)
    check_folds(folds, t.train, 2)
    leaked = folds.copy()
    leaked.loc[0, "fold"] = 1 - leaked.loc[0, "fold"]
    with pytest.raises(CompError, match="sit in several folds"):
        check_folds(leaked, t.train, 2)
    with pytest.raises(CompError, match=r"1 training ids missing"):
        check_folds(folds.iloc[1:], t.train, 2)
    # groups are checked against train.csv, not against the file's own group column
    ungrouped = folds.drop(columns=["group"]).assign(fold=np.arange(len(folds)) % 2)
    with pytest.raises(CompError, match="sit in several folds"):
        check_folds(ungrouped, t.train, 2)


def test_fold_balance_warns_on_skew():
    folds = pd.DataFrame({"label": ["a"] * 50 + ["b"] * 50, "fold": [0] * 50 + [1] * 50, "id": range(100)})
    assert fold_balance(folds).warnings  # each class entirely in one fold
    even = folds.assign(fold=np.arange(100) % 2)
    assert fold_balance(even).warnings == []


def test_cli_folds_byte_identical_and_grouped(tiny_ws):
    r = runner.invoke(app, ["folds", "--k", "2", "--seed", "3", "-w", str(tiny_ws)])
    assert r.exit_code == 0, r.output
    path = tiny_ws / "folds" / "k2-s3.csv"
    first = path.read_bytes()
    assert first.splitlines()[0] == b"id,label,group,fold"
    r = runner.invoke(app, ["folds", "--k", "2", "--seed", "3", "--force", "-w", str(tiny_ws)])
    assert r.exit_code == 0 and path.read_bytes() == first
    frame = pd.read_csv(path)
    assert (frame.groupby("group")["fold"].nunique() == 1).all()
    assert "rows, groups and class counts per fold" in r.output


def test_cli_folds_error_is_one_line(tiny_ws):
    r = runner.invoke(app, ["folds", "--k", "9", "-w", str(tiny_ws)])
    assert r.exit_code == 2
    assert "error: k=9 folds need at least 9 groups per class" in r.output
    assert "Traceback" not in r.output


def test_ensure_folds_creates_then_reuses(tiny_ws):
    ws = Layout.at(tiny_ws)
    cfg = load_config(tiny_ws, overrides=["folds.k=2", "folds.seed=4"])
    t = load_tables(cfg, ws)
    made = ensure_folds(ws, t, cfg)
    assert made.made and made.path.is_file() and made.path.with_suffix(".json").is_file()
    mtime = made.path.stat().st_mtime_ns
    again = ensure_folds(ws, t, cfg)
    assert not again.made and (made.fold_of(t.train) == again.fold_of(t.train)).all()
    assert made.path.stat().st_mtime_ns == mtime
