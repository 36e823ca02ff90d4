"""Submission files exactly in the competition's format, validated before they are written; scoring them.

Never imports torch. The format is comp.yaml's `submission`: the id column's name and, by kind
(which fits the task, comp/core/tasks.py): `label` (the target column of original class values; a
multitask without data.combine: one column per head), `probabilities` (one column per class or
tag), `tags` (the target column of separated predicted tags), `prob` (the target column of the
positive class's probability), `value` (the target column of the predicted number); rows in the
sample submission's order (or the test CSV's).
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from comp.core import __version__
from comp.core.config import Config, SubmissionConfig
from comp.data.tables import check_ids, read_csv
from comp.core.errors import CompError, did_you_mean
from comp.core.metrics import Metric, get_metric
from comp.core.locks import short_lock
from comp.infer.predictions import oof_path, oof_source_for, prediction_record
from comp.core.tasks import Task, submission_kind
from comp.core.layout import Layout, csv_bytes, write_bytes, write_json

log = logging.getLogger("comp.blend.submission")


def expected_ids(cfg: Config, ws: Layout) -> tuple[list[str], list[str] | None]:
    """(ids in submission order, the sample's columns or None) from sample_csv, else test_csv."""
    sub = cfg.submission
    if sub.sample_csv:
        path, col, what = ws.path(sub.sample_csv), sub.id_col, "submission.sample_csv"
    elif cfg.data.test_csv:
        path, col, what = ws.path(cfg.data.test_csv), cfg.data.id_col, "data.test_csv"
    else:
        raise CompError("neither submission.sample_csv nor data.test_csv is set in comp.yaml; set one so ids are known")
    frame = read_csv(path, what, text=(col,), fix=f"fix {what} in comp.yaml or create the file")
    if col not in frame.columns:
        have = [str(c) for c in frame.columns]
        raise CompError(f"id column {col!r} not in {path}{did_you_mean(col, have)} (columns: {', '.join(have)}); "
                        "fix submission.id_col in comp.yaml")
    if sub.sample_csv and cfg.data.test_csv:
        _sample_in_test(frame[col].astype(str), path, cfg, ws)
    columns = [str(c) for c in frame.columns] if sub.sample_csv else None
    return frame[col].astype(str).tolist(), columns


def _sample_in_test(ids: pd.Series, sample: Path, cfg: Config, ws: Layout) -> None:
    """Every id of the sample submission must be a row of test.csv, or no prediction can exist for it."""
    test = ws.path(cfg.data.test_csv)
    test_ids = read_csv(test, "data.test_csv", text=(cfg.data.id_col,))
    if cfg.data.id_col not in test_ids.columns:
        return  # load_tables names the missing column
    absent = ids[~ids.isin(set(test_ids[cfg.data.id_col].astype(str)))]
    if len(absent):
        raise CompError(f"{len(absent)} ids of {sample} are not in {test} (e.g. {absent.head(3).tolist()}); the sample "
                        f"submission and the test CSV must list the same ids: fix {sample.name} or {test.name}")


def class_columns(classes: Sequence[Any], sample_columns: list[str] | None, id_col: str) -> list[str]:
    """Probability columns: the class names, in the sample's column order when it lists them all."""
    names = [str(c) for c in classes]
    if sample_columns and set(names) <= set(sample_columns):
        return [c for c in sample_columns if c in names]
    return names


def resolved_kind(sub: SubmissionConfig, task: Task | None) -> str:
    """submission.kind for the task (the task's default when unset)."""
    return submission_kind("multiclass" if task is None else task.kind, sub.kind)


def value_columns(sub: SubmissionConfig, task: Task | None, classes: Sequence[Any]) -> list[str]:
    """The columns a submission of this kind holds besides the id."""
    kind = resolved_kind(sub, task)
    if task is not None and task.kind == "multitask":
        if kind == "label":
            return [sub.target_col] if task.combine is not None else [h.column for h in task.heads]
        return [str(c) for c in (task.labels if task.combine is not None else task.outputs)]
    if kind == "probabilities":
        return [str(c) for c in classes]
    return [sub.target_col]


def build_submission(
    ids: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[Any],
    sub: SubmissionConfig,
    *,
    order: Sequence[str],
    sample_columns: list[str] | None = None,
    task: Task | None = None,
    thresholds: np.ndarray | None = None,
) -> pd.DataFrame:
    """The submission table: probabilities (rows aligned with `ids`) put in `order`, in the configured format.

    task: the task the outputs belong to (default: multiclass over `classes`); thresholds: fitted decision
    thresholds for tags / binary labels (default 0.5).
    """
    table = pd.DataFrame(np.asarray(probs, dtype=np.float64), index=pd.Index([str(i) for i in ids]),
                         columns=[str(c) for c in classes])
    missing = [i for i in order if i not in table.index]
    if missing:
        raise CompError(f"{len(missing)} submission ids have no prediction, e.g. {missing[:3]}; "
                        "rerun `comp predict` so test predictions cover the test CSV")
    table = table.loc[list(order)]
    kind = resolved_kind(sub, task)
    if task is not None and task.kind != "multiclass":
        return _task_submission(table, task, kind, sub, order, sample_columns, thresholds)
    if kind == "label":
        labels = np.asarray(list(classes), dtype=object)[table.to_numpy().argmax(axis=1)]
        return pd.DataFrame({sub.id_col: list(order), sub.target_col: labels})
    cols = class_columns(classes, sample_columns, sub.id_col)
    return pd.concat([pd.DataFrame({sub.id_col: list(order)}), table[cols].reset_index(drop=True)], axis=1)


def _task_submission(table: pd.DataFrame, task: Task, kind: str, sub: SubmissionConfig, order: Sequence[str],
                     sample_columns: list[str] | None, thresholds: np.ndarray | None) -> pd.DataFrame:
    values = table.to_numpy()
    head = pd.DataFrame({sub.id_col: list(order)})
    if task.kind == "multitask" and kind == "label" and task.combine is None:
        for h, picked in zip(task.heads, task.head_values(values).values()):
            head[h.column] = picked
        return head
    if kind == "probabilities":
        probs = task.class_probs(values) if task.kind == "multitask" and task.combine is not None else values
        names = [str(c) for c in (task.labels if task.kind == "multitask" and task.combine is not None else task.outputs)]
        frame = pd.DataFrame(probs, columns=names)
        cols = class_columns(names, sample_columns, sub.id_col)
        return pd.concat([head, frame[cols]], axis=1)
    if kind == "prob":
        head[sub.target_col] = values[:, 0]
    elif kind == "value":
        head[sub.target_col] = values[:, 0]
    else:  # label (binary, multitask with combine) or tags
        head[sub.target_col] = task.decide(values, thresholds)
    return head


def validate_submission(frame: pd.DataFrame, sub: SubmissionConfig, *, expected: Sequence[str], classes: Sequence[Any],
                        task: Task | None = None) -> None:
    """Raise CompError unless `frame` is a complete, well-formed submission for `expected` ids."""
    cols = [str(c) for c in frame.columns]
    kind = resolved_kind(sub, task)
    value_cols = value_columns(sub, task, classes)
    for col in [sub.id_col, *value_cols]:
        if col not in cols:
            raise CompError(f"submission lacks column {col!r}{did_you_mean(col, cols)} (columns: {', '.join(cols)})")
    if len(frame) != len(expected):
        raise CompError(f"submission has {len(frame)} rows, expected {len(expected)} (one per test id)")
    ids = frame[sub.id_col].astype(str)
    if frame[sub.id_col].isna().any() or ids.duplicated().any():
        dup = ids[ids.duplicated()].unique()[:3].tolist()
        raise CompError(f"submission ids must be unique and non-empty; duplicated/empty ids e.g. {dup}")
    unknown, absent = sorted(set(ids) - set(expected)), sorted(set(expected) - set(ids))
    if unknown or absent:
        raise CompError(f"submission ids differ from the test ids: {len(unknown)} unknown (e.g. {unknown[:3]}), "
                        f"{len(absent)} missing (e.g. {absent[:3]})")
    values = frame[value_cols]
    if kind == "tags":  # an image with no tag predicted has an empty cell
        values = values.fillna("")
    if values.isna().to_numpy().any():
        rows = np.flatnonzero(values.isna().to_numpy().any(axis=1))[:5].tolist()
        raise CompError(f"submission has NaN values in rows {rows}; predictions must be complete")
    if task is not None and task.kind != "multiclass":
        _check_task_values(frame, values, task, kind, sub)
    elif kind == "label":
        _check_labels(frame[sub.target_col], classes)
    else:
        _check_probabilities(values.to_numpy(dtype=np.float64))


def _check_task_values(frame: pd.DataFrame, values: pd.DataFrame, task: Task, kind: str, sub: SubmissionConfig) -> None:
    if kind == "tags":
        known = set(task.outputs)
        sep = task.tag_sep
        bad = sorted({t for cell in values[sub.target_col].astype(str) for t in (cell.split(sep) if sep else cell.split())
                      if t.strip() and t.strip() not in known})
        if bad:
            raise CompError(f"submission has tags not among the tags of train.csv: {bad[:5]} (known: {sorted(known)[:20]})")
    elif kind in ("prob", "value") or (kind == "probabilities" and task.kind == "multilabel"):
        numbers = pd.DataFrame(values).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(numbers).all():
            rows = np.flatnonzero(~np.isfinite(numbers).all(axis=1))[:5].tolist()
            raise CompError(f"submission has non-numeric or infinite values in rows {rows}")
        if kind != "value" and (np.any(numbers < 0) or np.any(numbers > 1)):
            raise CompError(f"submission probabilities must lie in [0, 1]; got min {numbers.min():.4g}, max {numbers.max():.4g}")
    elif kind == "probabilities":
        _check_probabilities(values.to_numpy(dtype=np.float64))
    elif task.kind == "multitask" and task.combine is None:
        for h in task.heads:
            _check_labels(frame[h.column], h.classes, what=f"submission column {h.column!r}")
    else:
        _check_labels(frame[sub.target_col], task.labels)


def _check_labels(labels: pd.Series, classes: Sequence[Any], what: str = "submission") -> None:
    known = {str(c) for c in classes}
    bad = sorted({str(v) for v in labels} - known)
    if bad:
        raise CompError(f"{what} has labels not among the classes: {bad[:5]} (known: {sorted(known)[:20]})")


def _check_probabilities(values: np.ndarray) -> None:
    if np.any(values < 0) or np.any(values > 1):
        raise CompError(f"submission probabilities must lie in [0, 1]; got min {values.min():.4g}, max {values.max():.4g}")
    sums = values.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-3)
    if len(bad):
        raise CompError(f"submission probabilities must sum to 1 per row; rows {bad[:5].tolist()} sum to {sums[bad[:5]].round(4).tolist()}")


def write_submission(
    ws: Layout,
    name: str,
    frame: pd.DataFrame,
    sub: SubmissionConfig,
    *,
    expected: Sequence[str],
    classes: Sequence[Any],
    manifest: dict[str, Any],
    task: Task | None = None,
) -> tuple[Path, Path]:
    """Validate the CSV as it will be written (re-read), then write submissions/<name>.csv and .json."""
    data = csv_bytes(frame)
    text = {sub.id_col: str, sub.target_col: str, **{h.column: str for h in (task.heads if task else ())}}
    reread = pd.read_csv(io.BytesIO(data), dtype=text, keep_default_na=False, na_values=[""])
    validate_submission(reread, sub, expected=expected, classes=classes, task=task)
    csv_path = write_bytes(ws.submission_csv(name), data)
    doc = {"name": name, **manifest, "file": csv_path.name, "sha256": hashlib.sha256(data).hexdigest(),
           "rows": len(frame), "comp_version": __version__,
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    json_path = write_json(ws.submission_json(name), doc)
    return csv_path, json_path


def score_submission(submission: Path, solution: Path, sub: SubmissionConfig, *, classes: Sequence[Any], metric: Metric,
                     task: Task | None = None) -> float:
    """The competition metric of a submission file against a solution file (id column + true target).

    With a task other than multiclass the solution holds the target as train.csv does (tags, a two-valued
    label, a number, the combined label or one column per head).
    """
    if task is not None and task.kind != "multiclass":
        return _score_task(submission, solution, sub, classes=classes, metric=metric, task=task)
    text = (sub.id_col, sub.target_col)
    truth = read_csv(solution, "solution", text=text, fix="pass an existing --solution file")
    pred = read_csv(submission, "submission", text=text, fix="pass an existing submission file")
    for col in text:
        if col not in truth.columns:
            raise CompError(f"solution {solution} lacks column {col!r} (columns: {', '.join(map(str, truth.columns))}); "
                            "it needs the submission's id and target columns")
    _check_solution_ids(truth, sub, solution)
    expected = truth[sub.id_col].astype(str).tolist()
    try:
        validate_submission(pred, sub, expected=expected, classes=classes)
    except CompError as exc:
        raise CompError(f"{submission}: {exc}") from None
    _check_labels(truth[sub.target_col], classes, what=f"solution {solution}")
    code = {str(c): i for i, c in enumerate(classes)}
    y = truth[sub.target_col].astype(str).map(code).to_numpy()
    pred = pred.set_index(pred[sub.id_col].astype(str)).loc[expected]
    if sub.kind == "label":
        probs = np.zeros((len(y), len(classes)))
        probs[np.arange(len(y)), pred[sub.target_col].astype(str).map(code).to_numpy()] = 1.0
    else:
        probs = pred[[str(c) for c in classes]].to_numpy(dtype=np.float64)
    return metric(y, probs)


def _check_solution_ids(truth: pd.DataFrame, sub: SubmissionConfig, solution: Path) -> None:
    """The solution's ids are unique and present (checked before the submission, which is judged against them)."""
    try:
        check_ids(truth[sub.id_col], f"solution {solution} (column {sub.id_col!r})")
    except CompError as exc:
        raise CompError(f"{exc}; keep one row per id in {solution.name}") from None


def _score_task(submission: Path, solution: Path, sub: SubmissionConfig, *, classes: Sequence[Any], metric: Metric,
                task: Task) -> float:
    kind = resolved_kind(sub, task)
    heads = [h.column for h in task.heads] if task.kind == "multitask" and task.combine is None else []
    truth_cols = heads or [sub.target_col]
    text = (sub.id_col, sub.target_col, *heads)
    truth = read_csv(solution, "solution", text=text, fix="pass an existing --solution file")
    pred = read_csv(submission, "submission", text=text, fix="pass an existing submission file")
    for col in (sub.id_col, *truth_cols):
        if col not in truth.columns:
            raise CompError(f"solution {solution} lacks column {col!r} (columns: {', '.join(map(str, truth.columns))}); "
                            "it needs the submission's id and the true target")
    _check_solution_ids(truth, sub, solution)
    expected = truth[sub.id_col].astype(str).tolist()
    if kind == "tags" and sub.target_col in pred.columns:
        pred[sub.target_col] = pred[sub.target_col].astype(object).where(pred[sub.target_col].notna(), "")
    try:
        validate_submission(pred, sub, expected=expected, classes=classes, task=task)
    except CompError as exc:
        raise CompError(f"{submission}: {exc}") from None
    pred = pred.set_index(pred[sub.id_col].astype(str)).loc[expected]
    y = solution_targets(truth, task, sub, what=f"solution {solution}")
    if task.kind == "multilabel":
        if kind == "probabilities":
            outputs = pred[[str(c) for c in classes]].to_numpy(dtype=np.float64)
        else:
            outputs = tag_matrix(pred[sub.target_col], task, what=str(submission))
    elif task.kind in ("binary", "regression"):
        if kind == "label":
            outputs = (pred[sub.target_col].astype(str) == task.labels[1]).to_numpy(dtype=np.float64)[:, None]
        else:
            outputs = pd.to_numeric(pred[sub.target_col]).to_numpy(dtype=np.float64)[:, None]
    else:  # multitask
        return _score_multitask(pred, y, task, sub, kind, metric)
    return metric(y, outputs)


def _score_multitask(pred: pd.DataFrame, y: np.ndarray, task: Task, sub: SubmissionConfig, kind: str,
                     metric: Metric) -> float:
    """multitask: the combined label's score (with data.combine) or the mean of the heads' scores."""
    from comp.core.metrics import get_metric

    base = get_metric(metric.name)  # the multiclass metric, applied to the combined label or to each head
    if task.combine is not None:
        code = {c: i for i, c in enumerate(task.labels)}
        if kind == "probabilities":
            probs = pred[list(task.labels)].to_numpy(dtype=np.float64)
        else:
            probs = np.eye(len(task.labels))[pred[sub.target_col].astype(str).map(code).to_numpy()]
        return base(y, probs)
    scores = []
    for i, (h, s) in enumerate(zip(task.heads, task.head_slices())):
        if kind == "probabilities":
            probs = pred[[f"{h.name}={c}" for c in h.classes]].to_numpy(dtype=np.float64)
        else:
            code = {c: j for j, c in enumerate(h.classes)}
            probs = np.eye(len(h.classes))[pred[h.column].astype(str).map(code).to_numpy()]
        scores.append(base(y[:, i], probs))
    return float(np.mean(scores))


def tag_matrix(cells: pd.Series, task: Task, *, what: str) -> np.ndarray:
    """Separated tags per row -> a 0/1 matrix over the task's tags (unknown tags are an error)."""
    index = {t: j for j, t in enumerate(task.outputs)}
    out = np.zeros((len(cells), len(index)))
    for i, cell in enumerate(cells.astype(object).where(cells.notna(), "").astype(str)):
        for tag in (cell.split(task.tag_sep) if task.tag_sep else cell.split()):
            tag = tag.strip()
            if not tag:
                continue
            if tag not in index:
                raise CompError(f"{what} has the tag {tag!r}, not among the tags of train.csv ({sorted(index)[:20]})")
            out[i, index[tag]] = 1.0
    return out


def solution_targets(truth: pd.DataFrame, task: Task, sub: SubmissionConfig, *, what: str) -> np.ndarray:
    """The true targets of a solution file in the task's form (as Tables.targets)."""
    if task.kind == "multilabel":
        return tag_matrix(truth[sub.target_col], task, what=what)
    if task.kind == "binary":
        _check_labels(truth[sub.target_col], task.labels, what=what)
        return (truth[sub.target_col].astype(str) == task.labels[1]).to_numpy(dtype=np.float64)
    if task.kind == "regression":
        values = pd.to_numeric(truth[sub.target_col], errors="coerce")
        if values.isna().any():
            raise CompError(f"{what} has non-numeric targets (e.g. {truth[sub.target_col][values.isna()].iloc[0]!r})")
        return values.to_numpy(dtype=np.float64)
    if task.combine is not None:
        _check_labels(truth[sub.target_col], task.labels, what=what)
        code = {c: i for i, c in enumerate(task.labels)}
        return truth[sub.target_col].astype(str).map(code).to_numpy(dtype=np.int64)
    cols = []
    for h in task.heads:
        _check_labels(truth[h.column], h.classes, what=f"{what} column {h.column!r}")
        cols.append(truth[h.column].astype(str).map({c: i for i, c in enumerate(h.classes)}).to_numpy(dtype=np.int64))
    return np.stack(cols, axis=1)


# ---------------------------------------------------------------- members -> blend -> submission


def read_member_table(path: Path, member: str, what: str, hint: str) -> pd.DataFrame:
    """A member's probability table (id, [fold, label], p_<class>...), ids and labels as written."""
    if not path.is_file():
        raise CompError(f"member {member!r} has no {what} ({path}); {hint}")
    return read_csv(path, f"member {member!r}'s {what}", text=("id", "label"), fix=hint)


def make_submission(
    cfg: Config,
    ws: Layout,
    members: Sequence[str],
    *,
    name: str,
    method: str = "mean",
    weights: str = "auto",
    bias: bool = False,
    oof_source: str = "auto",
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit a blend of members' OOF probabilities, apply it to their test probabilities, write the submission.

    Args:
        cfg, ws: the competition's config and workspace (classes, metric, submission format).
        members: experiment names; each needs current predictions (predict.json matching its files).
        name: the submission name (submissions/<name>.csv and .json).
        method: mean | geometric | rank | vote.
        weights: auto (fitted on OOF) | equal | 'w1,w2,...'.
        bias: also fit per-class logit biases on OOF.
        oof_source: auto (each member's OOF made as its test predictions: re-predicted with its TTA, or
            training's OOF when it used none) | tta | plain (refused for members predicted with TTA).
        seed: seed of the weight search.
        extra: more manifest fields (e.g. how `--method auto` chose this blend).
    """
    from comp.data.tables import load_tables
    from comp.blend.ensemble import (align_members, apply_bias, blend, check_method, fit_blend, parse_weights, wants_thresholds,
                               warn_zero_weights)

    if not members:
        raise CompError("ensemble needs at least one member: -e NAME (repeatable)")
    if len(set(members)) != len(members):
        raise CompError(f"members are listed twice: {list(members)}; give each -e once")
    ws.submission_csv(name)  # a plain name, checked before any work
    tables = load_tables(cfg, ws, check_images=False)
    task = tables.task
    metric = get_metric(cfg.metric, task)
    check_method(method, task)
    kind = resolved_kind(cfg.submission, task)
    records = member_records(ws, members, tables.train, oof_source=oof_source)
    sources = {m: r["oof_source"] for m, r in records.items()}
    oof_probs, y, folds = member_oof(ws, members, tables.classes, oof_sources=sources, tables=tables)
    fit = fit_blend(oof_probs, y, folds, metric, method=method, weights=parse_weights(weights, len(members)), bias=bias,
                    seed=seed, task=task, thresholds=wants_thresholds(task, kind, metric))
    if isinstance(weights, str) and weights == "auto":  # weights the user gave are theirs to choose
        warn_zero_weights(members, fit.weights, name=name)
    test_frames = [read_member_table(ws.test_probs_csv(m), m, "test predictions", f"run `comp predict -e {m}`") for m in members]
    test_ids, test_probs = align_members(test_frames, tables.classes, names=members)
    probs = apply_bias(blend(test_probs, fit.weights, method=method, task=task), fit.bias)
    order, sample_columns = expected_ids(cfg, ws)
    frame = build_submission(test_ids, probs, tables.classes, cfg.submission, order=order, sample_columns=sample_columns,
                             task=task, thresholds=fit.thresholds)
    manifest = {
        "members": list(members), **blend_manifest(fit, weights, method=method, seed=seed), "metric": cfg.metric,
        "task": task.kind, "submission_kind": kind,
        "oof_source": sources, "tta": {m: r["tta"] for m, r in records.items()},
        "scores_from": "OOF predictions made as each member's test predictions (same folds, checkpoints and TTA)",
        "member_oof": {m: metric(y, p) for m, p in zip(members, oof_probs)},
        "config_hashes": {m: _hashes(ws, m, records[m]["record"]) for m in members},
        **(extra or {}),
    }
    with short_lock(ws.submissions_lock, f"writing submission {name}"):  # the csv and its manifest together
        csv_path, json_path = write_submission(ws, name, frame, cfg.submission, expected=order,
                                               classes=tables.classes, manifest=manifest, task=task)
    oof_blend = {"task": task, "y": y, "thresholds": fit.thresholds,
                 "probs": apply_bias(blend(oof_probs, fit.weights, method=method, task=task), fit.bias)}
    return {**manifest, "csv": str(csv_path), "json": str(json_path), "outputs": [str(c) for c in tables.classes],
            "oof_blend": oof_blend}


def blend_manifest(fit: Any, weights: str, *, method: str, seed: int) -> dict[str, Any]:
    """The manifest's blend: weights (rounded for reading, unrounded so `comp export` reproduces it), biases, scores."""
    return {"weights": [round(float(w), 6) for w in fit.weights], "method": method,
            "weights_full": [float(w) for w in fit.weights], "weights_mode": weights,
            "bias": None if fit.bias is None else [round(float(b), 4) for b in fit.bias], "seed": seed,
            "thresholds": None if getattr(fit, "thresholds", None) is None else [float(t) for t in fit.thresholds],
            "oof": fit.oof, "insample_fold_mean": fit.insample, "nested": fit.nested,
            "nested_folds": list(fit.nested_folds)}


def member_records(ws: Layout, members: Sequence[str], train: pd.DataFrame, *, oof_source: str) -> dict[str, dict]:
    """Each member's prediction record, checked to be complete, on the current data, with OOF made like its test set."""
    from comp.data.folds import check_trained_on

    out = {}
    for m in members:
        record = prediction_record(ws, m)
        if record is None:
            raise CompError(f"member {m!r} has no complete test predictions ({ws.predict_json(m)} missing or not "
                            f"matching its files); run `comp predict -e {m}` (comp ensemble does it for you)")
        check_trained_on(ws, m, train)
        tta = str(record.get("tta"))
        source = oof_source_for(tta, oof_source, m)
        if source == "tta" and not record.get("oof_tta"):
            raise CompError(f"member {m!r} was predicted with TTA {tta} but its OOF rows were not; run "
                            f"`comp predict -e {m} --tta {tta} --oof` (comp ensemble does it for you)")
        out[m] = {"tta": tta, "oof_source": source, "record": record}
    return out


def member_oof(ws: Layout, members: Sequence[str], classes: Sequence[Any], *,
               oof_sources: dict[str, str], tables: Any = None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(members' OOF probabilities joined by id, targets y, folds) in the first member's row order.

    tables: the loaded Tables (their targets are y, looked up by id); without them y is the class index of the
    OOF table's label (multiclass).
    """
    from comp.blend.ensemble import align_members

    frames = [read_member_table(oof_path(ws, m, oof_sources[m]), m, f"{oof_sources[m]} OOF table",
                                f"run `comp fold-train -e {m}`" + (" then `comp predict --oof`" if oof_sources[m] == "tta" else ""))
              for m in members]
    ids, probs = align_members(frames, classes, names=members)
    first = frames[0].set_index("id").loc[ids]
    if tables is not None and tables.task.kind != "multiclass":
        from comp.data.tables import targets_by_id

        y = targets_by_id(tables, ids, what=f"{members[0]}'s OOF table")
    else:
        code = {str(c): i for i, c in enumerate(classes)}
        y = first["label"].astype(str).map(code)
        if y.isna().any():
            raise CompError(f"{members[0]}'s OOF table has labels not in train.csv (e.g. {first['label'][y.isna()].iloc[0]!r}); retrain it")
        y = y.to_numpy(dtype=np.int64)
    folds = first["fold"].to_numpy()
    for m, frame in zip(members[1:], frames[1:]):
        if not np.array_equal(frame.set_index("id").loc[ids, "fold"].to_numpy(), folds):
            log.warning("%s uses other folds than %s: the nested estimate follows %s's folds, so it may be slightly optimistic "
                        "for %s; train members on the same folds (folds.k, folds.seed)", m, members[0], members[0], m)
    return probs, y, folds


def _hashes(ws: Layout, exp: str, record: dict[str, Any]) -> dict[str, Any]:
    """config_hash / train_hash recorded beside the member's checkpoints; the TTA and files of its (checked) record."""
    from comp.core.config import read_yaml

    doc = read_yaml(ws.config_yaml(exp)) if ws.config_yaml(exp).is_file() else {}
    return {"config_hash": doc.get("config_hash"), "train_hash": doc.get("train_hash"), "tta": record.get("tta"),
            "predictions": record.get("files")}
