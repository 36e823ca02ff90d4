"""Load comp.yaml's train/test tables into canonical frames, validating everything a run depends on.

Canonical columns: id (str), path (absolute str), label (str, exactly as written; for multilabel
the tags, for multitask the combined label or the head values), y (int code the folds stratify on),
group (when data.group_col is set), bx0 by0 bx1 by1 (when data.bbox_cols is set). Every other
column of the CSV is kept under its own name (e.g. gender, for --stratify). The training targets
of the task (comp.yaml `task`, see comp/core/tasks.py) are `Tables.targets`, row-aligned with train.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from comp.core.config import Config, DataConfig
from comp.data.images import check_images
from comp.core.errors import CompError, did_you_mean
from comp.core.progress import SILENT, Progress
from comp.core.tasks import Combiner, Head, Task, check_kind, combos_of, finite_scale, quantile_bins
from comp.core.layout import Layout

BBOX = ("bx0", "by0", "bx1", "by1")


@dataclass(frozen=True)
class Tables:
    train: pd.DataFrame
    test: pd.DataFrame | None
    classes: tuple[str, ...]  # the model outputs (prediction-table columns p_<name>); for multiclass the classes
    task: Task | None = None  # None: multiclass over `classes`
    targets: np.ndarray | None = None  # the training target per train row (see comp/core/tasks.py); None: train["y"]

    def __post_init__(self) -> None:
        if self.task is None:
            object.__setattr__(self, "task", Task("multiclass", tuple(self.classes), labels=tuple(self.classes)))
        if self.targets is None:
            object.__setattr__(self, "targets", self.train["y"].to_numpy())

    @property
    def n_classes(self) -> int:
        """The number of model outputs."""
        return len(self.classes)


log = logging.getLogger("comp.data")

OTHER_DELIMITERS = ";\t|"


def sniff_delimiter(frame: pd.DataFrame, path: Path) -> str | None:
    """The delimiter of a CSV that a comma read as one column holding `;` (or tab, `|`), else None."""
    if len(frame.columns) != 1 or not any(d in str(frame.columns[0]) for d in OTHER_DELIMITERS):
        return None
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        head = fh.read(1 << 16)
    try:
        return csv.Sniffer().sniff(head, delimiters=OTHER_DELIMITERS).delimiter
    except csv.Error:
        return None


def read_any_delimiter(path: Path, **options: Any) -> pd.DataFrame:
    """pd.read_csv, again with the sniffed delimiter when a comma read the file as one `;`-joined column."""
    frame = pd.read_csv(path, **options)
    sep = sniff_delimiter(frame, path)
    if sep is None:
        return frame
    log.info("%s is %r-separated; reading it so", path, sep)
    return pd.read_csv(path, sep=sep, **options)


def outside_root(paths: Iterable[object], root: Path | str) -> list[str]:
    """The image paths (as written, or root-joined) that leave `root`: `..` climbing out of it, absolute paths elsewhere.

    Judged on the text (normpath), not through symlinks: an image root that links elsewhere is still the root.
    """
    base = os.path.normpath(os.path.abspath(root))
    return [str(p) for p in paths if os.path.commonpath([base, os.path.normpath(os.path.join(base, str(p)))]) != base]


def outside_root_warning(paths: Iterable[object], root: Path | str, name: str, *, shown_root: str | None = None) -> str | None:
    """One line naming how many image paths of `name` leave the image root, with an example; None when none do.

    paths: as written in the table (the example is shown so); shown_root: the root as the line names it (relative to
    the workspace: the line goes into reports that travel), default `root`.
    """
    out = outside_root(paths, root)
    if not out:
        return None
    return (f"{len(out)} image paths of {name} leave the image root {shown_root or root} (e.g. {out[0]!r}); check they "
            "are the images you mean, or set data.allow_outside_root: true in comp.yaml to silence this")


def as_written(path: str, root: Path | str) -> str:
    """An image path of a loaded table (root-joined, comp.data.tables.canonical) as its CSV wrote it."""
    prefix = str(root).rstrip(os.sep) + os.sep
    return path[len(prefix):] if path.startswith(prefix) else path


def duplicate_examples(values: pd.Series, n: int = 5) -> str:
    """"'a', 'b'": the first duplicated values of a column, for an error message."""
    return ", ".join(map(repr, values[values.duplicated(keep=False)].astype(str).unique()[:n]))


def read_csv(path: Path | str, what: str, *, text: Iterable[str | None] = (), fix: str = "") -> pd.DataFrame:
    """A CSV for comp: `text` columns as strings exactly as written, only an empty cell missing; never empty."""
    path = Path(path)
    fix = fix or "fix its path in comp.yaml or create the file"
    if not path.is_file():
        raise CompError(f"{what} {path} does not exist; {fix}")
    try:
        frame = read_any_delimiter(path, dtype={c: str for c in text if c}, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise CompError(f"{what} {path} is empty (no header); write its header and rows, or {fix}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompError(f"{what} {path} could not be read as CSV ({first}); fix the file") from None
    if frame.empty:
        raise CompError(f"no rows in {path} ({what}: only a header); add its rows, or {fix}")
    return frame


def require_columns(frame: pd.DataFrame, columns: dict[str, str | None], name: str) -> None:
    """Each configured column must exist; the error lists the columns that do."""
    have = [str(c) for c in frame.columns]
    for key, col in columns.items():
        if col is not None and col not in frame.columns:
            raise CompError(
                f"{key} column {col!r} not in {name}{did_you_mean(col, have)} "
                f"(columns are: {', '.join(have)}); fix {key} in comp.yaml"
            )


def check_ids(ids: pd.Series, name: str) -> None:
    if ids.isna().any():
        rows = np.flatnonzero(ids.isna().to_numpy())[:5].tolist()
        raise CompError(f"{name} has empty ids in rows {rows}; every row needs an id")
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        examples = duplicate_examples(ids)
        raise CompError(
            f"{name} has {dup.nunique()} duplicated ids ({len(dup)} rows), e.g. {examples}; "
            "ids must be unique (predictions are joined by id)"
        )


def normalise_labels(labels: pd.Series, name: str) -> pd.Series:
    """Labels as strings exactly as written (`007` is not `7`); only an empty cell is missing, an error."""
    empty = labels.isna() | (labels.astype(str).str.strip() == "")
    if empty.any():
        rows = np.flatnonzero(empty.to_numpy())[:5].tolist()
        raise CompError(
            f"{name} has {int(empty.sum())} rows with an empty label (first rows: {rows}); "
            "fill them or drop those rows"
        )
    if labels.dtype.kind == "f" and np.all(labels == labels.round()):  # an in-memory table, not a file
        labels = labels.astype(np.int64)
    return labels.astype(str)


NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def class_order(names: Iterable[str]) -> list[str]:
    """Class names sorted: numerically when every name is a number (ties by text), else as text."""
    names = sorted(set(names))
    if names and all(NUMBER.fullmatch(n) for n in names):
        return sorted(names, key=lambda n: (float(n), n))
    return names


def resolve_classes(labels: pd.Series, explicit: tuple[Any, ...] | None) -> tuple[str, ...]:
    """The classes in model-output order: data.classes as listed (compared as text), else class_order."""
    found = class_order(labels.astype(str))
    if explicit is None:
        return tuple(found)
    listed = tuple(str(c) for c in explicit)
    unknown = [v for v in found if v not in listed]
    if unknown:
        raise CompError(f"labels {unknown[:5]} are not in data.classes {list(listed)}; add them there")
    return listed


def canonical(frame: pd.DataFrame, data: DataConfig, kind: str, ws: Layout, *, labelled: bool) -> pd.DataFrame:
    """The rows as comp reads them (id, path, [label], [group], [bx0..by1], other columns) from the data section's
    columns; kind: the task kind (config `task`)."""
    root = ws.path(data.image_root)
    out = pd.DataFrame({"id": frame[data.id_col].astype(str).to_numpy()})
    rel = frame[data.image_col]
    if rel.isna().any():
        rows = np.flatnonzero(rel.isna().to_numpy())[:5].tolist()
        raise CompError(f"{'train.csv' if labelled else 'test.csv'}: column {data.image_col!r} has {int(rel.isna().sum())} "
                        f"empty image paths (first rows: {rows}); fill them or drop those rows")
    out["path"] = [str(root / str(p)) for p in rel]
    if labelled and label_columns(data, kind) == (data.label_col,) and kind != "multilabel":
        out["label"] = normalise_labels(frame[data.label_col], "train.csv").to_numpy()
    if data.group_col and labelled:
        out["group"] = frame[data.group_col].astype(str).to_numpy()
    if data.bbox_cols:
        for dst, src in zip(BBOX, data.bbox_cols):
            out[dst] = pd.to_numeric(frame[src], errors="coerce").to_numpy()
    for col in frame.columns:
        if col not in out.columns and col not in (data.id_col, data.image_col, data.label_col):
            out[col] = frame[col].to_numpy()
    return out


def check_exist(frame: pd.DataFrame, name: str) -> None:
    """Missing files are an error naming how many and which."""
    exists = np.array([Path(p).is_file() for p in frame["path"]])
    if not exists.all():
        missing = frame["path"][~exists].tolist()
        raise CompError(
            f"{len(missing)} of {len(frame)} images in {name} do not exist, e.g. {missing[:3]}; "
            "check data.image_root and the image column in comp.yaml"
        )


def check_files(frame: pd.DataFrame, ws: Layout, name: str, progress: Progress) -> pd.DataFrame:
    """Missing files and corrupt images are errors naming how many and which."""
    check_exist(frame, name)
    info = check_images(frame["path"].tolist(), ws.image_check_json, progress=progress)
    bad = info[~info["ok"]]
    if len(bad):
        examples = "; ".join(f"{p} ({e})" for p, e in zip(bad["path"][:3], bad["error"][:3]))
        raise CompError(
            f"{len(bad)} images in {name} could not be decoded, e.g. {examples}; "
            "remove those rows or replace the files"
        )
    return info


def load_tables(cfg: Config, ws: Layout, *, check_images: bool = True, progress: Progress = SILENT) -> Tables:
    """Read and validate data.train_csv (and data.test_csv when set) into canonical frames."""
    d = cfg.data
    check_kind(cfg.task)
    train_raw = read_csv(ws.path(d.train_csv), "train_csv", text=(d.id_col, *label_columns(d, cfg.task), d.group_col),
                         fix="fix data.train_csv in comp.yaml or create the file")
    cols = {"data.id_col": d.id_col, "data.image_col": d.image_col, "data.group_col": d.group_col}
    cols.update(label_column_keys(d, cfg.task))
    for i, col in enumerate(d.bbox_cols or ()):
        cols[f"data.bbox_cols[{i}]"] = col
    require_columns(train_raw, cols, "train.csv")
    check_ids(train_raw[d.id_col], "train.csv")
    train = canonical(train_raw, d, cfg.task, ws, labelled=True)
    task, targets = task_targets(train, train_raw, d, cfg.task)
    test = None
    if d.test_csv:
        test_raw = read_csv(ws.path(d.test_csv), "test_csv", text=(d.id_col,),
                            fix="fix data.test_csv in comp.yaml or create the file")
        test_cols = {k: v for k, v in cols.items() if k not in (*label_column_keys(d, cfg.task), "data.group_col")}
        require_columns(test_raw, test_cols, "test.csv")
        check_ids(test_raw[d.id_col], "test.csv")
        test = canonical(test_raw, d, cfg.task, ws, labelled=False)
    if check_images:
        check_files(train, ws, "train.csv", progress)
        if test is not None:
            check_files(test, ws, "test.csv", progress)
    return Tables(train=train, test=test, classes=task.outputs, task=task, targets=targets)


# ---------------------------------------------------------------- targets of each task kind


def label_columns(data: DataConfig, kind: str) -> tuple[str, ...]:
    """The train.csv columns that hold the targets of a task of this kind."""
    if kind == "multilabel" and data.label_cols:
        return tuple(data.label_cols)
    if kind == "multitask":
        if not data.targets:
            raise CompError("task multitask needs data.targets: {head: column, ...} in comp.yaml "
                            "(e.g. {mask: mask, gender: gender, age: age_band})")
        return tuple(data.targets.values())
    return (data.label_col,)


def label_column_keys(data: DataConfig, kind: str) -> dict[str, str]:
    """{config key: column} of the target columns (for error messages naming the key to fix)."""
    if kind == "multilabel" and data.label_cols:
        return {f"data.label_cols[{i}]": c for i, c in enumerate(data.label_cols)}
    if kind == "multitask":
        return {f"data.targets.{h}": c for h, c in (data.targets or {}).items()}
    return {"data.label_col": data.label_col}


def task_targets(train: pd.DataFrame, raw: pd.DataFrame, data: DataConfig, kind: str) -> tuple[Task, np.ndarray]:
    """The task of this kind over train.csv (read as the data section says), its target array, and train's `label`
    text and `y` codes (set here)."""
    if kind == "multiclass":
        classes = resolve_classes(train["label"], data.classes)
        train["y"] = train["label"].map({c: i for i, c in enumerate(classes)}).astype(np.int64)
        return Task(kind, classes, labels=classes), train["y"].to_numpy()
    if kind == "binary":
        values = class_order(train["label"])
        if len(values) != 2:
            raise CompError(f"task binary needs exactly two label values in {data.label_col!r}, found {len(values)}: "
                            f"{values[:6]}; use task multiclass or fix train.csv")
        positive = values[1] if data.positive is None else str(data.positive)
        if positive not in values:
            raise CompError(f"data.positive {data.positive!r} is not a label of train.csv ({values}); set it to one of them")
        negative = values[0] if positive == values[1] else values[1]
        y = (train["label"] == positive).to_numpy().astype(np.int64)
        train["y"] = y
        return Task(kind, (positive,), labels=(negative, positive), target_name=data.label_col), y.astype(np.float32)
    if kind == "regression":
        values = pd.to_numeric(train["label"], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            rows = np.flatnonzero(bad.to_numpy())[:5].tolist()
            raise CompError(f"task regression needs a number in {data.label_col!r} on every row; rows {rows} are not "
                            f"(e.g. {train['label'][bad].head(3).tolist()}); fix train.csv or use another task")
        y = values.to_numpy(dtype=np.float64)
        train["y"] = quantile_bins(y, min(10, max(2, len(y) // 20)))
        return (Task(kind, (data.label_col,), scale=finite_scale(y), target_name=data.label_col), y.astype(np.float32))
    if kind == "multilabel":
        return _multilabel(train, raw, data)
    return _multitask(train, data)


def _multilabel(train: pd.DataFrame, raw: pd.DataFrame, data: DataConfig) -> tuple[Task, np.ndarray]:
    if data.label_cols:
        matrix = np.zeros((len(train), len(data.label_cols)), dtype=np.float32)
        for j, col in enumerate(data.label_cols):
            values = pd.to_numeric(train[col], errors="coerce")
            bad = ~values.isin([0, 1])
            if bad.any():
                rows = np.flatnonzero(bad.to_numpy())[:5].tolist()
                raise CompError(f"data.label_cols column {col!r} must hold 0 or 1; rows {rows} hold "
                                f"{train[col][bad].head(3).tolist()}; fix train.csv")
            matrix[:, j] = values.to_numpy(dtype=np.float32)
        tags = tuple(str(c) for c in data.label_cols)
        train["label"] = [" ".join(t for t, on in zip(tags, row) if on) for row in matrix > 0]
    else:
        text = raw[data.label_col].astype(object).where(raw[data.label_col].notna(), "").astype(str).to_numpy()
        split = [[t for t in (s.split(data.tag_sep) if data.tag_sep else s.split()) if t.strip()] for s in text]
        split = [[t.strip() for t in row] for row in split]
        found = class_order(t for row in split for t in row)
        if not found:
            raise CompError(f"column {data.label_col!r} of train.csv holds no tags; task multilabel needs tags "
                            "separated by spaces (or data.tag_sep)")
        tags = resolve_classes(pd.Series(found), data.classes) if data.classes else tuple(found)
        index = {t: j for j, t in enumerate(tags)}
        matrix = np.zeros((len(train), len(tags)), dtype=np.float32)
        for i, row in enumerate(split):
            matrix[i, [index[t] for t in row]] = 1.0
        train["label"] = text
    if len(tags) < 1:
        raise CompError("task multilabel needs at least one tag")
    train["y"] = matrix.argmax(axis=1).astype(np.int64) if matrix.size else 0
    return Task("multilabel", tags, labels=tags, tag_sep=data.tag_sep), matrix


def _multitask(train: pd.DataFrame, data: DataConfig) -> tuple[Task, np.ndarray]:
    heads, codes = [], []
    for name, col in (data.targets or {}).items():
        values = normalise_labels(train[col], f"train.csv column {col!r} (head {name})")
        classes = tuple(class_order(values))
        if len(classes) < 2:
            raise CompError(f"head {name!r} (column {col!r}) has only the value {classes}; a head needs two or more")
        heads.append(Head(name, col, classes))
        codes.append(values.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64))
    targets = np.stack(codes, axis=1)
    outputs = tuple(f"{h.name}={c}" for h in heads for c in h.classes)
    combine, labels, combos = None, (), ()
    if data.combine is not None:
        combine = Combiner.parse(data.combine, [h.name for h in heads])
        labels, combos = combos_of(heads, combine, class_order, seen=targets)
    task = Task("multitask", outputs, labels=labels, heads=tuple(heads), combine=combine, combos=combos)
    if combine is not None:
        train["y"] = task.combined_codes(targets)
        train["label"] = [labels[i] for i in train["y"]]
    else:
        train["y"] = task.stratify_codes(targets)
        train["label"] = [" ".join(row) for row in zip(*(train[h.column].astype(str) for h in heads))]
    return task, targets


def targets_by_id(tables: Tables, ids: Iterable[str], *, what: str = "the predictions") -> np.ndarray:
    """The training targets (Tables.targets) of the rows `ids`, in that order; ids not in train.csv are an error."""
    row_of = pd.Series(np.arange(len(tables.train)), index=tables.train["id"].astype(str))
    ids = [str(i) for i in ids]
    missing = [i for i in ids if i not in row_of.index]
    if missing:
        raise CompError(f"{what} has ids not in train.csv (e.g. {missing[:3]}); retrain on the current data")
    return np.asarray(tables.targets)[row_of.loc[ids].to_numpy()]
