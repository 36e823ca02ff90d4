"""`comp init --from folders`: train/<class>/<image> (and a flat test folder) -> train and test tables."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from comp.core.errors import CompError
from comp.init.plan import (N_EXAMPLES, Plan, SkipLog, is_hidden, output, rel_to, require_dir, scan_images,
                             submission_from_sample)
from comp.core.layout import Layout


def class_images(train_dir: Path, skips: SkipLog) -> list[tuple[str, Path]]:
    """(class name, image) for every image below a class folder, class folders sorted by name."""
    pairs = []
    for entry in sorted(train_dir.iterdir()):
        if is_hidden(entry, train_dir):
            if entry.is_file():
                skips.add("hidden files", entry.name)
        elif entry.is_file():
            skips.add("files outside class folders", entry.name)
        else:
            images = scan_images(entry, skips)
            if not images:
                skips.add("class folders without images", entry.name)
            pairs.extend((entry.name, p) for p in images)
    if not pairs:
        raise CompError(f"no images in class folders under {train_dir}; the layout is {train_dir}/<class>/<image>.jpg")
    return pairs


def file_id(path: Path, folder: Path) -> str:
    """'cat/001' for folder/cat/001.jpg: unique across classes, stable, no extension."""
    return path.relative_to(folder).with_suffix("").as_posix()


def test_order(files: list[Path], test_dir: Path, sample: pd.DataFrame, id_col: str, skips: SkipLog) -> pd.DataFrame:
    """Test files in the sample submission's order; ids as the sample writes them (with or without extension)."""
    ids = sample[id_col].astype(str).tolist()
    by_name = {p.relative_to(test_dir).as_posix(): p for p in files}
    by_stem = {file_id(p, test_dir): p for p in files}
    table = by_name if sum(i in by_name for i in ids) >= sum(i in by_stem for i in ids) else by_stem
    missing = [i for i in ids if i not in table]
    if missing:
        raise CompError(f"{len(missing)} of {len(ids)} ids in the sample submission have no image in {test_dir}, "
                        f"e.g. {missing[:N_EXAMPLES]}; check --test and --sample")
    for extra in sorted(set(table) - set(ids)):
        skips.add("test images not in the sample submission", extra)
    return pd.DataFrame({"id": ids, "file": [table[i] for i in ids]})


def test_table(test_dir: Path, root: Path, sample: pd.DataFrame | None, id_col: str, skips: SkipLog) -> pd.DataFrame:
    """id, path (relative to root) of each test image, in the sample's order when there is a sample."""
    test_dir = require_dir(test_dir, "test folder")
    files = scan_images(test_dir, skips)
    if sample is not None:
        order = test_order(files, test_dir, sample, id_col, skips)
    else:
        order = pd.DataFrame({"id": [file_id(p, test_dir) for p in files], "file": files})
    return pd.DataFrame({"id": order["id"],
                         "path": [Path(p).resolve().relative_to(root.resolve()).as_posix() for p in order["file"]]})


def init_folders(
    train_dir: Path,
    ws: Layout,
    *,
    test_dir: Path | None = None,
    sample_csv: Path | None = None,
    metric: str = "accuracy",
    out_train: str | None = None,
    out_test: str | None = None,
) -> Plan:
    """Read a class-per-folder tree (and a test folder) into a Plan with generated train/test tables."""
    train_dir = require_dir(Path(train_dir), "train folder")
    skips = SkipLog()
    pairs = class_images(train_dir, skips)
    classes = sorted({c for c, _ in pairs})
    root = Path(os.path.commonpath([os.path.abspath(train_dir)] + ([os.path.abspath(test_dir)] if test_dir else [])))
    train = pd.DataFrame({"id": [file_id(p, train_dir) for _, p in pairs],
                          "path": [p.resolve().relative_to(root.resolve()).as_posix() for _, p in pairs],
                          "label": [c for c, _ in pairs]})
    sub = {"id_col": "id", "target_col": "label", "kind": "label"}
    sample = None
    if sample_csv is not None:
        sub, sample = submission_from_sample(Path(sample_csv), ws, classes)
    test = None if test_dir is None else test_table(Path(test_dir), root, sample, sub["id_col"], skips)
    comp = {
        "data": {"train_csv": output(ws, out_train, "train", (sample_csv,)),
                 "test_csv": output(ws, out_test, "test", (sample_csv,)) if test is not None else None,
                 "image_root": rel_to(ws, root), "id_col": "id", "image_col": "path", "label_col": "label"},
        "metric": metric,
        "submission": sub,
    }
    notes = [f"{len(train)} training images in {len(classes)} classes: {', '.join(classes[:10])}"
             f"{' ...' if len(classes) > 10 else ''}"]
    notes.append(f"{len(test)} test images" if test is not None else "no --test folder: data.test_csv left unset")
    return Plan(comp=comp, train=train, test=test, generated=("train", "test") if test is not None else ("train",),
                sources=tuple(p for p in (sample_csv,) if p is not None), skipped=skips.freeze(), notes=tuple(notes))
