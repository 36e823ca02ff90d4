"""`run_eda`: read the tables and images, compute the numbers, write eda/summary.json, PNGs and report.html."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from comp.core.config import Config
from comp.data.images import key_path
from comp.data.tables import Tables, as_written, load_tables, outside_root_warning
from comp.core.errors import CompError
from comp.eda import plots, stats
from comp.eda.duplicates import find_duplicates
from comp.eda.features import file_facts
from comp.eda.page import render_body
from comp.data.folds import check_record, folds_record
from comp.core.progress import SILENT, Progress
from comp.report.page import embed_images, page, save_figure
from comp.core.layout import Layout, write_csv, write_json, write_text

log = logging.getLogger("comp.eda")

MAX_LISTED = 1000  # pairs / problem files listed in summary.json (all of them go to the CSVs)


@dataclass(frozen=True)
class EdaResult:
    summary: dict
    report: Path
    pairs: pd.DataFrame  # near-duplicate pairs (duplicates.PAIR_COLUMNS)
    problems: pd.DataFrame  # set, id, path, problem, detail


def _records(frame: pd.DataFrame, limit: int = MAX_LISTED) -> list[dict]:
    return frame.head(limit).astype(object).where(frame.head(limit).notna(), None).to_dict("records")


def duplicate_summary(pairs: pd.DataFrame, threshold: int, *, folds: pd.DataFrame | None) -> dict:
    """Counts of near-duplicate pairs per kind (and across folds when a folds file exists), pairs listed."""
    kinds = pairs["kind"].value_counts()
    out = {"hash": "dhash64", "threshold": threshold, "confirm": "thumbnail pixel correlation",
           "n_train_test": int(kinds.get("test", 0)), "n_label_conflicts": int(kinds.get("label", 0)),
           "n_cross_group": int(kinds.get("group", 0)), "n_train_same_label": int(kinds.get("train", 0)),
           "n_exact": int(pairs["exact"].sum()), "n_candidates": int(pairs.attrs.get("n_candidates", len(pairs))),
           "n_unconfirmed": int(pairs.attrs.get("n_unconfirmed", 0))}
    if folds is not None:
        fold_of = dict(zip(folds["id"].astype(str), folds["fold"]))
        inner = pairs[pairs["kind"] != "test"]
        fa, fb = inner["id_a"].map(fold_of), inner["id_b"].map(fold_of)
        out["n_cross_fold"] = int((fa.notna() & fb.notna() & (fa != fb)).sum())
    out["pairs"] = _records(pairs)
    return out


def _facts(tables: Tables, ws: Layout, progress: Progress) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    train = file_facts(tables.train, ws, progress=progress)
    test = file_facts(tables.test, ws, progress=progress) if tables.test is not None else None
    return train, test


def _folds(ws: Layout, cfg: Config, tables: Tables,
           view: tuple[pd.DataFrame, tuple[str, ...]] | None = None) -> tuple[dict | None, pd.DataFrame, pd.DataFrame | None]:
    """(fold summary, fold x class counts, the folds frame) of the folds file in use, if any."""
    path = ws.folds_csv(cfg.folds.k, cfg.folds.seed)
    if not path.is_file():
        return None, pd.DataFrame(), None
    try:  # the same check every reader makes: made from this data, with these settings
        check_record(path, folds_record(tables, k=cfg.folds.k, seed=cfg.folds.seed, group_col=cfg.data.group_col,
                                        stratify=tuple(cfg.folds.stratify)))
    except CompError as exc:
        log.warning("%s", exc)
        return {"file": str(path), "error": str(exc)}, pd.DataFrame(), None
    shown, names = view or (tables.train, tables.classes)
    summary, counts = stats.fold_stats(path, shown, classes=names)
    return summary, counts, (stats.read_folds_table(path) if len(counts) else None)


def summarise(tables: Tables, train: pd.DataFrame, *, test: pd.DataFrame | None) -> dict:
    """Every number of the report except duplicates, problems and folds.

    Class-based numbers follow the task kind (stats.display_view): tags for multilabel (an image counts under
    each of its tags), target bins for regression, the combined label for multitask; "task" holds the kind's own.
    """
    s_train = stats.image_stats(train)
    s_test = stats.image_stats(test) if test is not None else None
    shown, groups_shown = stats.display_view(tables.task, train, tables.targets)
    plain, _ = stats.display_view(tables.task, tables.train, tables.targets)
    return {
        "n_train": int(len(train)), "n_test": int(len(test)) if test is not None else 0,
        "n_classes": tables.n_classes,
        "classes": stats.class_stats(plain, groups_shown),
        "groups": stats.group_stats(tables.train),
        "images": {"train": s_train, "test": s_test,
                   "flags": stats.compare_sets(train, test, s_train=s_train, s_test=s_test) if test is not None else []},
        "colour": stats.colour_stats(shown, test, classes=groups_shown),
        "task": stats.task_stats(tables.task, tables.targets, tables.train),
    }


def outside_root_flags(cfg: Config, ws: Layout, tables: Tables) -> list[str]:
    """A warning (logged, and a flag of the report) per table whose image paths leave data.image_root."""
    if cfg.data.allow_outside_root:
        return []
    root = ws.path(cfg.data.image_root)
    shown = key_path(os.path.abspath(root), ws.root)  # relative to the workspace: the flags go into report.html
    found = [outside_root_warning([as_written(p, root) for p in frame["path"]], root, name, shown_root=shown)
             for name, frame in (("train.csv", tables.train), ("test.csv", tables.test)) if frame is not None]
    for line in filter(None, found):
        log.warning("%s", line)
    return [line for line in found if line]


def run_eda(
    cfg: Config,
    ws: Layout,
    *,
    samples: int = 8,
    threshold: int = 6,
    seed: int = 0,
    progress: Progress = SILENT,
) -> EdaResult:
    """Read train/test tables and images (and folds/*.csv); write eda/summary.json, PNGs and report.html."""
    if samples < 1:
        raise CompError(f"sample images per class must be 1 or more, got {samples} (--samples)")
    if not 0 <= threshold <= 64:
        raise CompError(f"the near-duplicate threshold is a Hamming distance in 0..64, got {threshold} (--threshold)")
    tables = load_tables(cfg, ws, check_images=False, progress=progress)
    train, test = _facts(tables, ws, progress)
    summary = summarise(tables, train, test=test)
    summary["images"]["flags"] += outside_root_flags(cfg, ws, tables)
    pairs = find_duplicates(train, test, threshold=threshold)
    problems = pd.concat([stats.problem_files(train, "train")]
                         + ([stats.problem_files(test, "test")] if test is not None else []), ignore_index=True)
    summary["folds"], fold_counts, folds = _folds(ws, cfg, tables, stats.display_view(tables.task, tables.train,
                                                                                        tables.targets))
    summary["duplicates"] = duplicate_summary(pairs, threshold, folds=folds)
    summary["problems"] = {"counts": {k: int(v) for k, v in problems["problem"].value_counts().items()},
                           "files": _records(problems)}
    out = ws.eda_dir
    write_csv(out / "duplicates.csv", pairs)
    write_csv(out / "problems.csv", problems)
    figures = draw_figures(out, tables, train=train, test=test, pairs=pairs, fold_counts=fold_counts,
                           samples=samples, seed=seed, margin=cfg.image.bbox_margin, progress=progress)
    summary["figures"] = sorted(figures.values())
    write_json(out / "summary.json", summary)
    body = render_body(summary, figures, pairs=pairs, problems=problems, ws=ws)
    report = write_text(out / "report.html", page("comp eda: data report", embed_images(body, out)))
    log.debug("wrote %s", report)
    return EdaResult(summary=summary, report=report, pairs=pairs, problems=problems)


ACTIONABLE = {"label": 0, "group": 1, "test": 2, "train": 3}  # label conflicts and cross-group leaks lead


def actionable_first(pairs: pd.DataFrame) -> pd.DataFrame:
    """Pairs with label conflicts, then across groups, then train/test, then same-label train pairs."""
    order = pairs["kind"].map(ACTIONABLE).fillna(len(ACTIONABLE))
    return pairs.assign(_k=order).sort_values(["_k", "distance"], kind="stable").drop(columns="_k")


def draw_figures(
    out: Path,
    tables: Tables,
    *,
    train: pd.DataFrame,
    test: pd.DataFrame | None,
    pairs: pd.DataFrame,
    fold_counts: pd.DataFrame,
    samples: int,
    seed: int,
    margin: float,
    progress: Progress = SILENT,
) -> dict[str, str]:
    """Write the report's PNGs into `out`; return {figure key: file name}."""
    shown, groups_shown = stats.display_view(tables.task, train, tables.targets)
    plain, _ = stats.display_view(tables.task, tables.train, tables.targets)
    todo: dict[str, Any] = {"classes": lambda: plots.plot_classes(stats.class_stats(plain, groups_shown)["counts"])}
    todo.update(plots.task_figures(stats.task_stats(tables.task, tables.targets, tables.train)))
    if "group" in tables.train:
        todo["groups"] = lambda: plots.plot_groups(tables.train)
    if train["ok"].any():
        picked = plots.pick_samples(shown, groups_shown, n=samples, seed=seed)
        todo["images"] = lambda: plots.plot_images(train, test)
        todo["colour"] = lambda: plots.plot_colour(shown, test, classes=groups_shown)
        todo["samples"] = lambda: plots.plot_samples(picked, samples)
        if "bx0" in train:
            todo["crops"] = lambda: plots.plot_samples(picked, samples, crop=margin)
    if len(pairs):
        todo["duplicates"] = lambda: plots.plot_pairs(actionable_first(pairs))
    if len(fold_counts):
        todo["folds"] = lambda: plots.plot_folds(fold_counts)
    names = {}
    for key in progress.track(list(todo), description="plots"):
        names[key] = save_figure(todo[key](), out / f"{key}.png").name
    return names

