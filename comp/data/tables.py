"""Load comp.yaml's train/test tables into canonical frames, validating everything a run depends on.

Canonical columns: id (str), path (absolute str), label (str, exactly as written), y (int code),
group (when data.group_col is set), bx0 by0 bx1 by1 (when data.bbox_cols is set). Every other
column of the CSV is kept under its own name (e.g. gender, for --stratify).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from comp.config import Config
from comp.data.images import check_images
from comp.errors import CompError, did_you_mean
from comp.progress import SILENT, Progress
from comp.workspace import Workspace

BBOX = ("bx0", "by0", "bx1", "by1")


@dataclass(frozen=True)
class Tables:
    train: pd.DataFrame
    test: pd.DataFrame | None
    classes: tuple[str, ...]  # class names as written, in model-output order

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def read_csv(path: Path | str, what: str, *, text: Iterable[str | None] = (), fix: str = "") -> pd.DataFrame:
    """A CSV for comp: `text` columns as strings exactly as written, only an empty cell missing; never empty."""
    path = Path(path)
    fix = fix or "fix its path in comp.yaml or create the file"
    if not path.is_file():
        raise CompError(f"{what} {path} does not exist; {fix}")
    try:
        frame = pd.read_csv(path, dtype={c: str for c in text if c}, keep_default_na=False, na_values=[""])
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
        examples = ", ".join(map(repr, dup.unique()[:5]))
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


def canonical(frame: pd.DataFrame, cfg: Config, ws: Workspace, *, labelled: bool) -> pd.DataFrame:
    d = cfg.data
    root = ws.path(d.image_root)
    out = pd.DataFrame({"id": frame[d.id_col].astype(str).to_numpy()})
    rel = frame[d.image_col]
    if rel.isna().any():
        rows = np.flatnonzero(rel.isna().to_numpy())[:5].tolist()
        raise CompError(f"{'train.csv' if labelled else 'test.csv'}: column {d.image_col!r} has {int(rel.isna().sum())} "
                        f"empty image paths (first rows: {rows}); fill them or drop those rows")
    out["path"] = [str(root / str(p)) for p in rel]
    if labelled:
        out["label"] = normalise_labels(frame[d.label_col], "train.csv").to_numpy()
    if d.group_col and labelled:
        out["group"] = frame[d.group_col].astype(str).to_numpy()
    if d.bbox_cols:
        for dst, src in zip(BBOX, d.bbox_cols):
            out[dst] = pd.to_numeric(frame[src], errors="coerce").to_numpy()
    for col in frame.columns:
        if col not in out.columns and col not in (d.id_col, d.image_col, d.label_col):
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


def check_files(frame: pd.DataFrame, ws: Workspace, name: str, progress: Progress) -> pd.DataFrame:
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


def load_tables(cfg: Config, ws: Workspace, *, check_images: bool = True, progress: Progress = SILENT) -> Tables:
    """Read and validate data.train_csv (and data.test_csv when set) into canonical frames."""
    d = cfg.data
    train_raw = read_csv(ws.path(d.train_csv), "train_csv", text=(d.id_col, d.label_col, d.group_col),
                         fix="fix data.train_csv in comp.yaml or create the file")
    cols = {"data.id_col": d.id_col, "data.image_col": d.image_col, "data.label_col": d.label_col,
            "data.group_col": d.group_col}
    for i, col in enumerate(d.bbox_cols or ()):
        cols[f"data.bbox_cols[{i}]"] = col
    require_columns(train_raw, cols, "train.csv")
    check_ids(train_raw[d.id_col], "train.csv")
    train = canonical(train_raw, cfg, ws, labelled=True)
    classes = resolve_classes(train["label"], d.classes)
    code = {c: i for i, c in enumerate(classes)}
    train["y"] = train["label"].map(code).astype(np.int64)
    test = None
    if d.test_csv:
        test_raw = read_csv(ws.path(d.test_csv), "test_csv", text=(d.id_col,),
                            fix="fix data.test_csv in comp.yaml or create the file")
        test_cols = {k: v for k, v in cols.items() if k not in ("data.label_col", "data.group_col")}
        require_columns(test_raw, test_cols, "test.csv")
        check_ids(test_raw[d.id_col], "test.csv")
        test = canonical(test_raw, cfg, ws, labelled=False)
    if check_images:
        check_files(train, ws, "train.csv", progress)
        if test is not None:
            check_files(test, ws, "test.csv", progress)
    return Tables(train=train, test=test, classes=classes)
