"""Leakage-proof fold assignment: stratified on the label (x extra columns), grouped when a group exists.

Per task kind (comp/core/tasks.py): multiclass and binary stratify on the label; regression on quantile bins of
the target and multitask on the combined label (train["y"]), rare strata pooled; multilabel by iterative
stratification of the tag matrix (the `multilabel` extra: iterative-stratification), one row per group so
groups stay whole. Never imports torch.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from comp.core.config import Config, read_yaml
from comp.data.tables import Tables, duplicate_examples
from comp.core.errors import CompError, did_you_mean
from comp.core.layout import Layout, read_json, write_csv, write_json

log = logging.getLogger("comp.data.folds")


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
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold  # ~1 s: only when folds are made

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


def merge_rare(codes: np.ndarray, groups: np.ndarray | None, k: int) -> np.ndarray:
    """Strata with fewer than k members (k groups when grouped) pooled into one, so every stratum can spread."""
    units = pd.Series(groups if groups is not None else np.arange(len(codes))).groupby(np.asarray(codes)).nunique()
    rare = set(units[units < k].index.tolist())
    if not rare:
        return np.asarray(codes)
    return np.array(["rare" if c in rare else str(c) for c in codes], dtype=object)


def check_enough_units(groups: np.ndarray | None, n_rows: int, k: int) -> None:
    if groups is not None and len(np.unique(groups)) < k:
        raise CompError(f"k={k} folds need at least {k} groups, got {len(np.unique(groups))}; use a smaller --k")
    if n_rows < k:
        raise CompError(f"k={k} folds need at least {k} training rows, got {n_rows}; use a smaller --k")


def group_matrix(matrix: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(one 0/1 row per group: the tags any of its rows has, the group index of every row); ungrouped: rows."""
    matrix = np.asarray(matrix) > 0.5
    if groups is None:
        return matrix, np.arange(len(matrix))
    _, first, index = np.unique(np.asarray(groups).astype(str), return_index=True, return_inverse=True)
    order = np.argsort(first)  # groups in order of first appearance (independent of how groups are named)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    index = rank[index.reshape(-1)]
    out = np.zeros((len(order), matrix.shape[1]), dtype=bool)
    np.logical_or.at(out, index, matrix)
    return out, index


def multilabel_folds(matrix: np.ndarray, groups: np.ndarray | None, k: int, seed: int,
                     extra: list[np.ndarray] | None = None) -> np.ndarray:
    """Fold per row by iterative stratification of the tag matrix (MultilabelStratifiedKFold), groups whole:
    each group is one unit holding every tag of its rows; extra columns join the matrix one-hot."""
    try:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
    except ImportError:
        raise CompError("multilabel folds need the iterative-stratification package; pip install "
                        "'comp[multilabel]' (or pip install iterative-stratification)") from None
    if k < 2:
        raise CompError(f"k must be 2 or more, got k={k}")
    columns = [np.asarray(matrix) > 0.5]
    for col in extra or []:
        codes = encode_strata([col])
        columns.append(np.eye(codes.max() + 1, dtype=bool)[codes])
    full = np.concatenate(columns, axis=1)
    full = np.concatenate([full, ~full.any(axis=1, keepdims=True)], axis=1)  # untagged rows are a stratum too
    units, index = group_matrix(full, groups)
    check_enough_units(groups, len(units), k)
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    fold_of_unit = np.full(len(units), -1, dtype=np.int64)
    for i, (_, val_idx) in enumerate(splitter.split(np.zeros((len(units), 1)), units.astype(np.int64))):
        fold_of_unit[val_idx] = i
    return fold_of_unit[index]


def make_folds(tables: Tables, k: int, seed: int, stratify: tuple[str, ...] = ()) -> pd.DataFrame:
    """The folds table: id, label, [group], fold — in train.csv order.

    Args:
        tables: the loaded tables; their `group` column (data.group_col) keeps each group in one fold.
        k: the number of folds (2 or more; every class needs k groups, or k images when ungrouped).
        seed: the shuffle seed (same tables, k and seed -> the same folds).
        stratify: extra columns stratified together with the label (e.g. ("gender",)).
    """
    train = tables.train
    kind = tables.task.kind
    groups = train["group"].to_numpy() if "group" in train.columns else None
    extra = []
    for col in stratify:
        if col not in train.columns:
            choices = [c for c in train.columns if c not in ("path", "y")]
            raise CompError(
                f"--stratify column {col!r} not in train.csv{did_you_mean(col, choices)}; columns are: {', '.join(choices)}"
            )
        extra.append(train[col].astype(str).to_numpy())
    if kind == "multilabel":
        fold = multilabel_folds(tables.targets, groups, k, seed, extra=extra)
    elif kind in ("regression", "multitask"):  # quantile bins / combined labels: rare strata pooled, never refused
        if k < 2:
            raise CompError(f"k must be 2 or more, got k={k}")
        check_enough_units(groups, len(train), k)
        strata = merge_rare(encode_strata([train["y"].to_numpy(), *extra]), groups, k)
        with warnings.catch_warnings():  # a pooled stratum smaller than k is expected here
            warnings.filterwarnings("ignore", message=".*least populated class.*")
            fold = assign_folds(strata, groups, k, seed)
    else:
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


def fold_summary(tables: Tables, fold: np.ndarray, *, tolerance: float = 0.05) -> Balance:
    """The per-fold table of the task's kind, with warnings where a fold strays from the whole.

    multilabel: rows, groups and the share of rows holding each tag (a warning where a tag seen in at least
    k rows strays more than tolerance + 1/sqrt(rows of the fold) from its overall share); regression: rows,
    groups and the target's mean, std, min and max (a warning where a fold's mean strays more than half an
    overall std); the other kinds: class counts (multitask: of the combined label) as fold_balance.
    """
    train, kind = tables.train, tables.task.kind
    fold = np.asarray(fold)
    if kind not in ("multilabel", "regression"):
        frame = train[["id", "label"] + (["group"] if "group" in train.columns else [])].assign(fold=fold)
        return fold_balance(frame)
    ks = sorted(set(fold.tolist()))
    table = pd.DataFrame({"fold": ks, "rows": [int((fold == f).sum()) for f in ks]})
    if "group" in train.columns:
        table["groups"] = [int(train["group"][fold == f].nunique()) for f in ks]
    warns = []
    if kind == "multilabel":
        matrix = np.asarray(tables.targets) > 0.5
        overall = matrix.mean(axis=0)
        for j, tag in enumerate(tables.task.outputs):
            shares = [float(matrix[fold == f, j].mean()) for f in ks]
            table[str(tag)] = np.round(shares, 3)
            if matrix[:, j].sum() < len(ks):
                warns.append(f"tag {tag!r} is on {int(matrix[:, j].sum())} rows, fewer than the {len(ks)} folds: "
                             "some folds cannot score it")
                continue
            for f, share in zip(ks, shares):
                n = int((fold == f).sum())
                if abs(share - overall[j]) > tolerance + 1 / np.sqrt(max(n, 1)):
                    warns.append(f"fold {f}: tag {tag!r} on {share:.1%} of the rows vs {overall[j]:.1%} overall")
        table = pd.concat([table, pd.DataFrame([{"fold": "all", "rows": len(fold),
                                                 **({"groups": int(train["group"].nunique())} if "groups" in table else {}),
                                                 **{str(t): round(float(v), 3) for t, v in zip(tables.task.outputs, overall)}}])],
                          ignore_index=True)
        return Balance(table=table, warnings=warns)
    target = np.asarray(tables.targets, dtype=np.float64).reshape(-1)
    for name, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
        table[name] = [float(fn(target[fold == f])) for f in ks]
    spread = float(target.std()) or 1.0
    for f, mean in zip(ks, table["mean"]):
        if abs(mean - target.mean()) > 0.5 * spread:
            warns.append(f"fold {f}: target mean {mean:.4g} vs {target.mean():.4g} overall (std {spread:.4g})")
    whole = {"fold": "all", "rows": len(target), "mean": float(target.mean()), "std": float(target.std()),
             "min": float(target.min()), "max": float(target.max())}
    if "groups" in table:
        whole["groups"] = int(train["group"].nunique())
    return Balance(table=pd.concat([table, pd.DataFrame([whole])], ignore_index=True), warnings=warns)


def fold_summary_title(kind: str) -> str:
    return {"multilabel": "rows, groups and the share of rows holding each tag per fold",
            "regression": "rows, groups and the target per fold"}.get(
        kind, "rows, groups and combined-label counts per fold" if kind == "multitask"
        else "rows, groups and class counts per fold")


def check_folds(folds: pd.DataFrame, train: pd.DataFrame, k: int, *, path: Path | str = "the folds file") -> None:
    """Invariants of a folds table: covers every training id once, k folds, no group of train.csv in two folds."""
    fix = f"remake it with `comp folds --k {k} --force`"
    ids = set(train["id"].astype(str))
    have = folds["id"].astype(str)
    if have.duplicated().any() or set(have) != ids:
        missing = len(ids - set(have))
        extra = len(set(have) - ids)
        dups = f", ids listed twice: {duplicate_examples(have, 3)}" if have.duplicated().any() else ""
        raise CompError(f"{path} does not match train.csv ({missing} training ids missing, {extra} unknown ids{dups}); "
                        f"{fix}")
    if sorted(folds["fold"].unique().tolist()) != list(range(k)):
        raise CompError(f"{path} should hold folds 0..{k - 1}, found {sorted(folds['fold'].unique().tolist())}; {fix}")
    if "group" in train.columns:
        fold_of = dict(zip(have, folds["fold"]))
        spread = pd.Series([fold_of[i] for i in train["id"].astype(str)]).groupby(train["group"].to_numpy()).nunique()
        if (spread > 1).any():
            raise CompError(f"{path}: groups {spread[spread > 1].index[:5].tolist()} of train.csv sit in several "
                            f"folds (leakage); {fix}")


def folds_record(tables: Tables, *, k: int, seed: int, group_col: str | None, stratify: tuple[str, ...]) -> dict:
    """How a folds file is made from these tables: k, seed, group and stratify columns, classes, a data fingerprint,
    and the task kind (with its tag set for multilabel): a changed task or tag set makes the file stale."""
    task = tables.task
    record = {"k": int(k), "seed": int(seed), "group_col": group_col, "stratify": list(stratify),
              "classes": [str(c) for c in tables.classes], "rows": len(tables.train),
              "fingerprint": data_fingerprint(tables.train), "task": task.kind}
    if task.kind == "multilabel":
        record["tags"] = [str(t) for t in task.outputs]
    return record


def data_fingerprint(train: pd.DataFrame) -> str:
    """sha256 (16 hex) of the ids, labels and groups of train.csv, row by row in file order."""
    cols = [train["id"], train["label"]] + ([train["group"]] if "group" in train.columns else [])
    digest = hashlib.sha256()
    for row in zip(*(c.astype(str) for c in cols)):
        digest.update(("\x1f".join(row) + "\n").encode("utf-8"))
    return digest.hexdigest()[:16]


def record_path(csv_path: Path) -> Path:
    """folds/k5-s42.csv -> folds/k5-s42.json (how the folds file was made)."""
    return csv_path.with_suffix(".json")


RECORD_WORDS = {"k": "k", "seed": "seed", "group_col": "data.group_col", "stratify": "folds.stratify",
                "task": "the task", "tags": "the tag set", "classes": "the class set",
                "rows": "the number of training rows", "fingerprint": "train.csv's ids, labels or groups"}
RECORD_DEFAULTS = {"task": "multiclass"}  # records made before task kinds


def record_changes(made: dict, wanted: dict) -> list[str]:
    """What differs between a folds file's record and what the current config and tables want."""
    changes = []
    settings_changed = any(made.get(key, RECORD_DEFAULTS.get(key)) != wanted.get(key)
                           for key in ("group_col", "stratify", "task", "tags"))
    for key, word in RECORD_WORDS.items():
        old, new = made.get(key, RECORD_DEFAULTS.get(key)), wanted.get(key)
        if old != new and not (key == "fingerprint" and settings_changed):
            if key in ("fingerprint", "classes", "rows", "tags"):
                changes.append(f"{word} changed")
            else:
                changes.append(f"{word} was {_show(old)}, now {_show(new)}")
    return changes


def _show(value: object) -> str:
    if value is None or value == []:
        return "none"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def check_record(path: Path, wanted: dict) -> None:
    """Refuse a folds file whose record is missing or differs from `wanted`, saying what changed and the fix."""
    fix = f"`comp folds --k {wanted['k']} --seed {wanted['seed']} --force`"
    rec = record_path(path)
    if not rec.is_file():
        raise CompError(f"{path} has no record of how it was made ({rec.name} is missing), so it may be stale "
                        f"or ungrouped; remake it with {fix}")
    try:
        made = read_json(rec)
    except ValueError as exc:
        raise CompError(f"{rec} is not valid JSON ({exc}); remake the folds with {fix}") from None
    changes = record_changes(made if isinstance(made, dict) else {}, wanted)
    if changes:
        raise CompError(f"{path} was made for other settings or data ({'; '.join(changes)}); using it would score "
                        f"folds that do not match the config; remake it with {fix} (finished experiments on the old "
                        "folds need fold-train --force)")


def write_folds(ws: Layout, folds: pd.DataFrame, record: dict) -> Path:
    """folds/k{k}-s{seed}.csv and its record (.json); the record last, so a file without one is never trusted."""
    path = ws.folds_csv(record["k"], record["seed"])
    write_csv(path, folds)
    write_json(record_path(path), record)
    return path


def read_folds(path: Path, tables: Tables, wanted: dict) -> pd.DataFrame:
    """A folds file checked against its record, the current tables, and the groups in train.csv (not in the file)."""
    check_record(path, wanted)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"id", "fold"} <= set(frame.columns):
        raise CompError(f"{path} lacks the columns id and fold; remake it with `comp folds --k {wanted['k']} --force`")
    frame["fold"] = pd.to_numeric(frame["fold"], errors="coerce")
    if frame["fold"].isna().any():
        raise CompError(f"{path} has fold values that are not numbers; remake it with `comp folds --k {wanted['k']} --force`")
    frame["fold"] = frame["fold"].astype(np.int64)
    check_folds(frame, tables.train, wanted["k"], path=path)
    return frame


@dataclass(frozen=True)
class FoldsFile:
    path: Path
    folds: pd.DataFrame  # id, label, [group], fold in train.csv order
    record: dict
    made: bool  # written by this call

    def fold_of(self, train: pd.DataFrame) -> np.ndarray:
        """The fold of every row of `train` (joined by id)."""
        by_id = dict(zip(self.folds["id"].astype(str), self.folds["fold"].astype(int)))
        return np.array([by_id[i] for i in train["id"].astype(str)], dtype=np.int64)


def load_or_make_folds(ws: Layout, tables: Tables, *, k: int, seed: int, group_col: str | None,
                       stratify: tuple[str, ...] = (), force: bool = False) -> FoldsFile:
    """The folds file for (k, seed): read and checked when it exists, else (or with force) made and written.

    Args:
        ws: the workspace (folds/ lives there).
        tables: the loaded train (and test) tables the folds split.
        k, seed: the number of folds and the shuffle seed (they name the file).
        group_col: data.group_col (None: rows are independent); recorded and checked.
        stratify: extra columns stratified with the label; recorded and checked.
        force: remake the file even if one exists.
    """
    wanted = folds_record(tables, k=k, seed=seed, group_col=group_col, stratify=tuple(stratify))
    path = ws.folds_csv(k, seed)
    if path.is_file() and not force:
        return FoldsFile(path, read_folds(path, tables, wanted), wanted, made=False)
    folds = make_folds(tables, k, seed, tuple(stratify))
    return FoldsFile(write_folds(ws, folds, wanted), folds, wanted, made=True)


def ensure_folds(ws: Layout, tables: Tables, cfg: Config) -> FoldsFile:
    """The folds file the config asks for (folds.k, folds.seed, folds.stratify, data.group_col), made when missing."""
    return load_or_make_folds(ws, tables, k=cfg.folds.k, seed=cfg.folds.seed, group_col=cfg.data.group_col,
                              stratify=tuple(cfg.folds.stratify))


def parse_fold_selection(value: str | Sequence[int] | None, k: int, *, option: str = "--folds") -> tuple[int, ...]:
    """'0,2' | 'all' | (0, 2) | None (all) -> fold indices, each checked against k; repeats are an error."""
    if value is None:
        return tuple(range(k))
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "all":
            return tuple(range(k))
        try:
            value = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise CompError(f"{option} takes 'all' or fold numbers like 0 or 0,2; got {value!r}") from None
    folds = tuple(int(f) for f in value)
    if not folds:
        raise CompError(f"{option} is empty; pass 'all' or fold numbers like 0 or 0,2")
    bad = [f for f in folds if not 0 <= f < k]
    if bad:
        raise CompError(f"{option} {','.join(map(str, folds))}: fold {bad[0]} does not exist with k={k} "
                        f"(folds are 0..{k - 1})")
    if len(set(folds)) != len(folds):
        raise CompError(f"{option} {','.join(map(str, folds))} repeats a fold; list each once")
    return folds


def check_trained_on(ws: Layout, exp: str, train: pd.DataFrame) -> None:
    """An experiment's OOF rows are only meaningful for the data its folds split: refuse when train.csv changed."""
    path = ws.config_yaml(exp)
    recorded = (read_yaml(path).get("folds_file") or {}) if path.is_file() else {}
    if not recorded:
        log.warning("%s does not record the folds it was trained on (trained by an older comp); its OOF rows are "
                    "trusted as they are", exp)
        return
    now = data_fingerprint(train)
    if recorded.get("fingerprint") != now:
        raise CompError(f"experiment {exp!r} was trained on {recorded.get('path')} for other data (train.csv's ids, "
                        f"labels or groups changed: fingerprint {recorded.get('fingerprint')}, now {now}); its OOF "
                        f"scores no longer describe this data: retrain it with `comp fold-train -e {exp} --force`")

