"""train.distill: each training row's target also holds a teacher experiment's probabilities for it.

Fold-safe in both directions. The student's fold f trains on rows of the other folds g; the
teacher's plain OOF for such a row comes from its fold-g model, which trained on fold f's rows, so
it would carry fold f's labels into the model validated on fold f. Instead each row of fold g gets
the probabilities of a "pair" model of the teacher's config trained without folds f and g
(experiments/<teacher>/pairs/fold{a}-{b}/, a < b, validated on both held-out folds; trained here
on first use, resumable, locked like a fold): it never saw the row, nor any row of fold f. A pseudo
row (test image) of fold f gets the teacher's fold-f model's test probabilities
(experiments/<teacher>/fold{f}/test.csv, from `comp predict -e <teacher>`), a model that never saw
fold f. The teacher must have trained on the student's folds file.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from comp.core.config import Config, build_config, read_yaml
from comp.core.errors import CompError
from comp.core.progress import SILENT, Progress
from comp.core.layout import Layout

if TYPE_CHECKING:
    from comp.data.tables import Tables

log = logging.getLogger("comp.distill")


def teacher_config(cfg: Config, ws: Layout) -> tuple[Config, dict]:
    """(the teacher's training config, its config.yaml record), refusing teachers that cannot serve."""
    name = cfg.train.distill.teacher
    path = ws.config_yaml(name)
    if not path.is_file():
        raise CompError(f"train.distill.teacher {name!r} has not been trained ({path} is missing); run "
                        f"`comp fold-train -e {name}` first")
    doc = read_yaml(path)
    teacher = build_config({k: v for k, v in doc.items() if k in Config.model_fields}, source=f"{path}: ")
    if teacher.pseudo is not None or teacher.train.distill is not None:
        raise CompError(f"train.distill.teacher {name!r} trains on pseudo labels or distils itself; its pair models "
                        "would need those too: pick a teacher without `pseudo` and `train.distill`")
    return teacher, doc


def check_folds(cfg: Config, ws: Layout, exp: str, doc: dict) -> None:
    """The teacher's folds file must be the student's (same path and fingerprint)."""
    mine = (read_yaml(ws.config_yaml(exp)) or {}).get("folds_file") or {}
    theirs = doc.get("folds_file") or {}
    if (mine.get("path"), mine.get("fingerprint")) != (theirs.get("path"), theirs.get("fingerprint")):
        raise CompError(f"train.distill.teacher {cfg.train.distill.teacher!r} trained on {theirs.get('path')} "
                        f"(fingerprint {theirs.get('fingerprint')}), the student on {mine.get('path')} "
                        f"({mine.get('fingerprint')}): teacher probabilities would come from models that saw the "
                        "student's validation rows; train the teacher on the same folds (folds.k, folds.seed)")


def pair_probs(name: str, teacher: Config, ws: Layout, tables: "Tables", fold_of: np.ndarray, a: int, b: int, *,
               progress: Progress = SILENT) -> tuple[list[str], np.ndarray]:
    """(ids of folds a and b, the pair model's probabilities for them): a model of the teacher's config trained on
    every fold except a and b; trained now unless finished (resumes from its last.pt)."""
    from comp.train.engine import FoldJob, fit_fold
    from comp.core.locks import fold_lock

    held = int(teacher.folds.k)  # the pair's validation "fold": a number no real fold has
    pair_of = np.where(np.isin(fold_of, [a, b]), held, fold_of)
    out_dir = ws.pair_dir(name, a, b)
    with fold_lock(out_dir):
        result = fit_fold(FoldJob(teacher, tables, pair_of, held, out_dir, ws=ws), progress=progress)
    expected = set(tables.train["id"].astype(str).to_numpy()[np.isin(fold_of, [a, b])])
    if set(result.val_ids) != expected:
        raise CompError(f"{out_dir} validated other rows than folds {a} and {b} now hold (the folds file changed); "
                        f"delete {out_dir.parent} and rerun")
    return list(result.val_ids), result.val_probs.astype(np.float64)


def teacher_targets(cfg: Config, ws: Layout, exp: str, tables: "Tables", ext: "Tables", ext_fold_of: np.ndarray,
                    fold: int, *, progress: Progress = SILENT) -> np.ndarray:
    """(N_ext, C) teacher probabilities of every row student fold `fold` trains on (NaN for the rest)."""
    from comp.train.engine import TRAIN_ONLY

    name = cfg.train.distill.teacher
    if name == exp:
        raise CompError(f"train.distill.teacher is the experiment itself ({exp!r}); name another experiment")
    if cfg.folds.k < 3:
        raise CompError(f"train.distill needs folds.k of 3 or more, got {cfg.folds.k}: a row's teacher model holds out "
                        "the row's fold and the student's fold and trains on the rest")
    teacher, doc = teacher_config(cfg, ws)
    check_folds(cfg, ws, exp, doc)
    if [str(c) for c in tables.classes] != [str(c) for c in ext.classes]:
        raise CompError("teacher and student predict different classes")
    n_real = len(tables.train)
    fold_of = np.asarray(ext_fold_of[:n_real])
    out = np.full((len(ext.train), len(tables.classes)), np.nan)
    row_of = {i: r for r, i in enumerate(tables.train["id"].astype(str))}
    for g in sorted(set(fold_of.tolist()) - {fold}):
        ids, probs = pair_probs(name, teacher, ws, tables, fold_of, min(fold, g), max(fold, g), progress=progress)
        for i, p in zip(ids, probs):
            if fold_of[row_of[i]] == g:
                out[row_of[i]] = p
    pseudo_rows = np.flatnonzero(np.asarray(ext_fold_of) == TRAIN_ONLY)
    if len(pseudo_rows):
        out[pseudo_rows] = teacher_test_probs(ws, name, fold, ext, pseudo_rows)
    trained = np.flatnonzero((np.asarray(ext_fold_of) != fold) & (np.asarray(ext_fold_of) >= TRAIN_ONLY))
    if np.isnan(out[trained]).any():
        raise CompError(f"teacher {name!r} has no probabilities for {int(np.isnan(out[trained]).any(axis=1).sum())} "
                        f"training rows of fold {fold}; retrain it on every fold of the student's folds file")
    return out.astype(np.float32)


def teacher_test_probs(ws: Layout, name: str, fold: int, ext: "Tables", rows: np.ndarray) -> np.ndarray:
    """The teacher's fold-`fold` model's test probabilities for the pseudo rows `rows` of the extended table."""
    from comp.infer.predictions import prediction_record
    from comp.recipes.pseudo import PREFIX
    from comp.blend.submission import read_member_table

    if prediction_record(ws, name) is None:
        raise CompError(f"teacher {name!r} has no complete test predictions for the pseudo rows; run "
                        f"`comp predict -e {name}`")
    table = read_member_table(ws.test_probs_csv(name, fold), name, f"fold {fold} test predictions",
                              f"run `comp predict -e {name}`")
    table = table.assign(id=table["id"].astype(str)).set_index("id")
    ids = [str(i).removeprefix(PREFIX) for i in ext.train["id"].to_numpy()[rows]]
    missing = [i for i in ids if i not in table.index]
    if missing:
        raise CompError(f"teacher {name!r}'s fold {fold} test predictions lack pseudo rows (e.g. {missing[:3]}); "
                        f"run `comp predict -e {name}`")
    return table.loc[ids, [f"p_{c}" for c in ext.classes]].to_numpy(dtype=np.float64)


def teacher_record(cfg: Config, ws: Layout) -> dict[str, Any]:
    """What scores.json records of the teacher: name, train_hash, alpha, temperature, where targets came from."""
    d = cfg.train.distill
    doc = read_yaml(ws.config_yaml(d.teacher)) if ws.config_yaml(d.teacher).is_file() else {}
    return {"teacher": d.teacher, "teacher_train_hash": doc.get("train_hash"), "alpha": d.alpha,
            "temperature": d.temperature,
            "targets": "training rows: teacher pair models trained without the student's fold and the row's fold; "
                       "pseudo rows: the teacher's model of the student's fold"}
