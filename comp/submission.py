"""Submission files exactly in the competition's format, validated before they are written; scoring them.

Never imports torch. The format is comp.yaml's `submission`: the id column's name, the
target column (kind `label`: original class values) or one column per class (kind
`probabilities`), rows in the sample submission's order (or the test CSV's).
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

import comp
from comp.config import Config, SubmissionConfig
from comp.data.tables import read_csv
from comp.errors import CompError, did_you_mean
from comp.metrics import Metric, get_metric
from comp.locks import short_lock
from comp.predictions import oof_path, oof_source_for, prediction_record
from comp.workspace import Workspace, csv_bytes, write_bytes, write_json

log = logging.getLogger("comp.submission")


def expected_ids(cfg: Config, ws: Workspace) -> tuple[list[str], list[str] | None]:
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


def _sample_in_test(ids: pd.Series, sample: Path, cfg: Config, ws: Workspace) -> None:
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


def build_submission(
    ids: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[Any],
    sub: SubmissionConfig,
    *,
    order: Sequence[str],
    sample_columns: list[str] | None = None,
) -> pd.DataFrame:
    """The submission table: probabilities (rows aligned with `ids`) put in `order`, in the configured format."""
    table = pd.DataFrame(np.asarray(probs, dtype=np.float64), index=pd.Index([str(i) for i in ids]),
                         columns=[str(c) for c in classes])
    missing = [i for i in order if i not in table.index]
    if missing:
        raise CompError(f"{len(missing)} submission ids have no prediction, e.g. {missing[:3]}; "
                        "rerun `comp predict` so test predictions cover the test CSV")
    table = table.loc[list(order)]
    if sub.kind == "label":
        labels = np.asarray(list(classes), dtype=object)[table.to_numpy().argmax(axis=1)]
        return pd.DataFrame({sub.id_col: list(order), sub.target_col: labels})
    cols = class_columns(classes, sample_columns, sub.id_col)
    return pd.concat([pd.DataFrame({sub.id_col: list(order)}), table[cols].reset_index(drop=True)], axis=1)


def validate_submission(frame: pd.DataFrame, sub: SubmissionConfig, *, expected: Sequence[str], classes: Sequence[Any]) -> None:
    """Raise CompError unless `frame` is a complete, well-formed submission for `expected` ids."""
    cols = [str(c) for c in frame.columns]
    value_cols = [sub.target_col] if sub.kind == "label" else [str(c) for c in classes]
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
    if values.isna().to_numpy().any():
        rows = np.flatnonzero(values.isna().to_numpy().any(axis=1))[:5].tolist()
        raise CompError(f"submission has NaN values in rows {rows}; predictions must be complete")
    if sub.kind == "label":
        _check_labels(frame[sub.target_col], classes)
    else:
        _check_probabilities(values.to_numpy(dtype=np.float64))


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
    ws: Workspace,
    name: str,
    frame: pd.DataFrame,
    sub: SubmissionConfig,
    *,
    expected: Sequence[str],
    classes: Sequence[Any],
    manifest: dict[str, Any],
) -> tuple[Path, Path]:
    """Validate the CSV as it will be written (re-read), then write submissions/<name>.csv and .json."""
    data = csv_bytes(frame)
    reread = pd.read_csv(io.BytesIO(data), dtype={sub.id_col: str, sub.target_col: str}, keep_default_na=False,
                         na_values=[""])
    validate_submission(reread, sub, expected=expected, classes=classes)
    csv_path = write_bytes(ws.submission_csv(name), data)
    doc = {"name": name, **manifest, "file": csv_path.name, "sha256": hashlib.sha256(data).hexdigest(),
           "rows": len(frame), "comp_version": comp.__version__,
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    json_path = write_json(ws.submission_json(name), doc)
    return csv_path, json_path


def score_submission(submission: Path, solution: Path, sub: SubmissionConfig, *, classes: Sequence[Any], metric: Metric) -> float:
    """The competition metric of a submission file against a solution file (id column + true target)."""
    text = (sub.id_col, sub.target_col)
    truth = read_csv(solution, "solution", text=text, fix="pass an existing --solution file")
    pred = read_csv(submission, "submission", text=text, fix="pass an existing submission file")
    for col in text:
        if col not in truth.columns:
            raise CompError(f"solution {solution} lacks column {col!r} (columns: {', '.join(map(str, truth.columns))}); "
                            "it needs the submission's id and target columns")
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


# ---------------------------------------------------------------- members -> blend -> submission


def read_member_table(path: Path, member: str, what: str, hint: str) -> pd.DataFrame:
    """A member's probability table (id, [fold, label], p_<class>...), ids and labels as written."""
    if not path.is_file():
        raise CompError(f"member {member!r} has no {what} ({path}); {hint}")
    return read_csv(path, f"member {member!r}'s {what}", text=("id", "label"), fix=hint)


def make_submission(
    cfg: Config,
    ws: Workspace,
    members: Sequence[str],
    *,
    name: str,
    method: str = "mean",
    weights: str = "auto",
    bias: bool = False,
    oof_source: str = "auto",
    seed: int = 0,
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
    """
    from comp.data.tables import load_tables
    from comp.ensemble import align_members, apply_bias, blend, fit_blend, parse_weights

    if not members:
        raise CompError("ensemble needs at least one member: -e NAME (repeatable)")
    if len(set(members)) != len(members):
        raise CompError(f"members are listed twice: {list(members)}; give each -e once")
    ws.submission_csv(name)  # a plain name, checked before any work
    metric = get_metric(cfg.metric)
    tables = load_tables(cfg, ws, check_images=False)
    records = member_records(ws, members, tables.train, oof_source=oof_source)
    sources = {m: r["oof_source"] for m, r in records.items()}
    oof_probs, y, folds = member_oof(ws, members, tables.classes, oof_sources=sources)
    fit = fit_blend(oof_probs, y, folds, metric, method=method,
                    weights=parse_weights(weights, len(members)), bias=bias, seed=seed)
    test_frames = [read_member_table(ws.test_probs_csv(m), m, "test predictions", f"run `comp predict -e {m}`") for m in members]
    test_ids, test_probs = align_members(test_frames, tables.classes, names=members)
    probs = apply_bias(blend(test_probs, fit.weights, method=method), fit.bias)
    order, sample_columns = expected_ids(cfg, ws)
    frame = build_submission(test_ids, probs, tables.classes, cfg.submission, order=order, sample_columns=sample_columns)
    manifest = {
        "members": list(members), **blend_manifest(fit, weights, method=method, seed=seed), "metric": cfg.metric,
        "oof_source": sources, "tta": {m: r["tta"] for m, r in records.items()},
        "scores_from": "OOF predictions made as each member's test predictions (same folds, checkpoints and TTA)",
        "member_oof": {m: metric(y, p) for m, p in zip(members, oof_probs)},
        "config_hashes": {m: _hashes(ws, m, records[m]["record"]) for m in members},
    }
    with short_lock(ws.submissions_lock, f"writing submission {name}"):  # the csv and its manifest together
        csv_path, json_path = write_submission(ws, name, frame, cfg.submission, expected=order,
                                               classes=tables.classes, manifest=manifest)
    return {**manifest, "csv": str(csv_path), "json": str(json_path)}


def blend_manifest(fit: Any, weights: str, *, method: str, seed: int) -> dict[str, Any]:
    """The manifest's blend: weights (rounded for reading, unrounded so `comp export` reproduces it), biases, scores."""
    return {"weights": [round(float(w), 6) for w in fit.weights], "method": method,
            "weights_full": [float(w) for w in fit.weights], "weights_mode": weights,
            "bias": None if fit.bias is None else [round(float(b), 4) for b in fit.bias], "seed": seed,
            "oof": fit.oof, "insample_fold_mean": fit.insample, "nested": fit.nested,
            "nested_folds": list(fit.nested_folds)}


def member_records(ws: Workspace, members: Sequence[str], train: pd.DataFrame, *, oof_source: str) -> dict[str, dict]:
    """Each member's prediction record, checked to be complete, on the current data, with OOF made like its test set."""
    from comp.folds import check_trained_on

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


def member_oof(ws: Workspace, members: Sequence[str], classes: Sequence[Any], *,
               oof_sources: dict[str, str]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(members' OOF probabilities joined by id, labels y, folds) in the first member's row order."""
    from comp.ensemble import align_members

    frames = [read_member_table(oof_path(ws, m, oof_sources[m]), m, f"{oof_sources[m]} OOF table",
                                f"run `comp fold-train -e {m}`" + (" then `comp predict --oof`" if oof_sources[m] == "tta" else ""))
              for m in members]
    ids, probs = align_members(frames, classes, names=members)
    first = frames[0].set_index("id").loc[ids]
    code = {str(c): i for i, c in enumerate(classes)}
    y = first["label"].astype(str).map(code)
    if y.isna().any():
        raise CompError(f"{members[0]}'s OOF table has labels not in train.csv (e.g. {first['label'][y.isna()].iloc[0]!r}); retrain it")
    folds = first["fold"].to_numpy()
    for m, frame in zip(members[1:], frames[1:]):
        if not np.array_equal(frame.set_index("id").loc[ids, "fold"].to_numpy(), folds):
            log.warning("%s uses other folds than %s: the nested estimate follows %s's folds, so it may be slightly optimistic "
                        "for %s; train members on the same folds (folds.k, folds.seed)", m, members[0], members[0], m)
    return probs, y.to_numpy(dtype=np.int64), folds


def _hashes(ws: Workspace, exp: str, record: dict[str, Any]) -> dict[str, Any]:
    """config_hash / train_hash recorded beside the member's checkpoints; the TTA and files of its (checked) record."""
    from comp.config import read_yaml

    doc = read_yaml(ws.config_yaml(exp)) if ws.config_yaml(exp).is_file() else {}
    return {"config_hash": doc.get("config_hash"), "train_hash": doc.get("train_hash"), "tta": record.get("tta"),
            "predictions": record.get("files")}
