"""Leakage-proof fold assignment: stratified on the label (x extra columns), grouped when a group exists.

Never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from comp.data.tables import Tables
from comp.errors import CompError, did_you_mean
from comp.workspace import Workspace, write_csv


def encode_strata(columns: list[np.ndarray]) -> np.ndarray:
    """Integer codes of the row-wise combination of columns, in order of first appearance.

    First-appearance order (not sorted order) makes folds independent of how classes are named.
    """
    keys = ["\x1f".join(map(str, row)) for row in zip(*columns)]
    codes: dict[str, int] = {}
    return np.array([codes.setdefault(key, len(codes)) for key in keys], dtype=np.int64)


def check_feasible(labels: np.ndarray, groups: np.ndarray | None, k: int) -> None:
    """Every class needs at least k members (k groups when grouped), or some fold lacks it."""
    frame = pd.DataFrame({"label": labels, "group": groups if groups is not None else np.arange(len(labels))})
    per_class = frame.groupby("label", sort=True)["group"].nunique()
    short = per_class[per_class < k]
    if len(short):
        unit = "groups" if groups is not None else "images"
        listed = ", ".join(f"{c!r} ({n} {unit})" for c, n in short.items())
        raise CompError(
            f"k={k} folds need at least {k} {unit} per class, but {len(short)} classes have fewer: {listed}; "
            f"use a smaller --k, merge or drop those classes"
        )
    if groups is not None and len(np.unique(groups)) < k:
        raise CompError(f"k={k} folds need at least {k} groups, got {len(np.unique(groups))}; use a smaller --k")


def assign_folds(
    y: np.ndarray,
    groups: np.ndarray | None,
    k: int,
    seed: int,
    *,
    extra: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Fold index (0..k-1) per row; rows of one group always share a fold."""
    if k < 2:
        raise CompError(f"k must be 2 or more, got k={k}")
    strata = encode_strata([np.asarray(y), *(extra or [])])
    X = np.zeros((len(strata), 1))
    if groups is not None:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(X, strata, groups=groups)
    else:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(X, strata)
    fold = np.full(len(strata), -1, dtype=np.int64)
    for i, (_, val_idx) in enumerate(splits):
        fold[val_idx] = i
    return fold


def make_folds(tables: Tables, k: int, seed: int, stratify: tuple[str, ...] = ()) -> pd.DataFrame:
    """The folds table: id, label, [group], fold — in train.csv order."""
    train = tables.train
    groups = train["group"].to_numpy() if "group" in train.columns else None
    extra = []
    for col in stratify:
        if col not in train.columns:
            choices = [c for c in train.columns if c not in ("path", "y")]
            raise CompError(
                f"--stratify column {col!r} not in train.csv{did_you_mean(col, choices)}; columns are: {', '.join(choices)}"
            )
        extra.append(train[col].astype(str).to_numpy())
    check_feasible(train["label"].to_numpy(), groups, k)
    fold = assign_folds(train["y"].to_numpy(), groups, k, seed, extra=extra)
    out = train[["id", "label"] + (["group"] if groups is not None else [])].copy()
    out["fold"] = fold
    return out


@dataclass(frozen=True)
class Balance:
    table: pd.DataFrame  # one row per fold: rows, groups, and a count column per class
    warnings: list[str]


def fold_balance(folds: pd.DataFrame, tolerance: float = 0.5, min_gap: int = 3) -> Balance:
    """Per-fold counts, and a warning for each class whose share in a fold strays far from its overall share."""
    counts = pd.crosstab(folds["fold"], folds["label"])
    table = pd.DataFrame({"rows": folds.groupby("fold").size()})
    if "group" in folds.columns:
        table["groups"] = folds.groupby("fold")["group"].nunique()
    table = table.join(counts)
    overall = folds["label"].value_counts(normalize=True)
    warnings = []
    for fold, row in counts.iterrows():
        n = row.sum()
        for label, count in row.items():
            expected = overall[label] * n
            if abs(count - expected) > max(min_gap, tolerance * expected):
                warnings.append(
                    f"fold {fold}: class {label!r} has {count} rows, expected about {expected:.0f} "
                    f"({count / n:.1%} of the fold vs {overall[label]:.1%} overall)"
                )
    return Balance(table=table.reset_index(), warnings=warnings)


def check_folds(folds: pd.DataFrame, train_ids: pd.Series, k: int) -> None:
    """Invariants of a folds table: covers every training id once, k folds, no group in two folds."""
    ids = set(train_ids)
    have = folds["id"].astype(str)
    if have.duplicated().any() or set(have) != ids:
        missing = len(ids - set(have))
        extra = len(set(have) - ids)
        raise CompError(
            f"the folds file does not match train.csv ({missing} training ids missing, {extra} unknown ids); "
            "it was made for other data: rerun `comp folds --force`"
        )
    if sorted(folds["fold"].unique().tolist()) != list(range(k)):
        raise CompError(f"the folds file should hold folds 0..{k - 1}, found {sorted(folds['fold'].unique())}")
    if "group" in folds.columns:
        spread = folds.groupby("group")["fold"].nunique()
        if (spread > 1).any():
            raise CompError(f"groups {spread[spread > 1].index[:5].tolist()} appear in several folds: leakage")


def write_folds(ws: Workspace, folds: pd.DataFrame, k: int, seed: int) -> Path:
    return write_csv(ws.folds_csv(k, seed), folds)


def read_folds(path: Path, tables: Tables, k: int) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"id": str, "group": str})
    check_folds(frame, tables.train["id"], k)
    return frame


def ensure_folds(ws: Workspace, tables: Tables, k: int, seed: int, stratify: tuple[str, ...] = ()) -> tuple[np.ndarray, Path]:
    """The fold of every training row (train.csv order), making folds/k{k}-s{seed}.csv when missing."""
    path = ws.folds_csv(k, seed)
    if path.is_file():
        folds = read_folds(path, tables, k)
    else:
        folds = make_folds(tables, k, seed, stratify)
        write_folds(ws, folds, k, seed)
    by_id = dict(zip(folds["id"].astype(str), folds["fold"].astype(int)))
    return np.array([by_id[i] for i in tables.train["id"]], dtype=np.int64), path
