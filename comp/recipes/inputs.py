"""What one fold of an experiment trains on once its recipes apply: pseudo rows, teacher targets (fold_inputs),
and what scores.json records of them (recipe_scores)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from comp.core.config import Config
from comp.core.errors import CompError
from comp.core.progress import SILENT, Progress
from comp.core.layout import Layout, read_json

if TYPE_CHECKING:
    from comp.data.tables import Tables
    from comp.train.targets import RowTargets


def require_multiclass(tables: "Tables", what: str) -> None:
    kind = getattr(getattr(tables, "task", None), "kind", "multiclass")
    if kind != "multiclass":
        raise CompError(f"{what} supports multiclass tasks only, and this competition's task is {kind!r}; "
                        f"remove it from the experiment")


def with_train(tables: "Tables", train: Any) -> "Tables":
    """The same tables over another training frame (its targets re-derived from train['y'])."""
    fields = {f.name for f in dataclasses.fields(tables)}
    return dataclasses.replace(tables, train=train, **({"targets": None} if "targets" in fields else {}))


def fold_inputs(cfg: Config, ws: Layout, exp: str, tables: "Tables", fold_of: np.ndarray, fold: int, *,
                progress: Progress = SILENT) -> tuple["Tables", np.ndarray, "RowTargets | None"]:
    """(training table, fold of each row, per-row targets) of one fold: the inputs unchanged without pseudo or
    distill; else the table extended by the pseudo rows this fold keeps (fold_of -1: trained, never validated)
    and, for soft pseudo labels or distillation, the rows' targets."""
    if cfg.pseudo is None and cfg.train.distill is None:
        return tables, fold_of, None
    from comp.train.targets import RowTargets

    soft = None
    ext, ext_fold_of = tables, fold_of
    if cfg.pseudo is not None:
        from comp.recipes.pseudo import extend

        require_multiclass(tables, "pseudo")
        ext, ext_fold_of, soft = extend(cfg, ws, exp, tables, fold_of, fold)
    teacher = None
    d = cfg.train.distill
    if d is not None:
        from comp.recipes.distill import teacher_targets

        require_multiclass(tables, f"train.distill (teacher {d.teacher})")
        teacher = teacher_targets(cfg, ws, exp, tables, ext, ext_fold_of, fold, progress=progress)
    if soft is None and teacher is None:
        return ext, ext_fold_of, None
    return ext, ext_fold_of, RowTargets(y=ext.train["y"].to_numpy(), soft=soft, teacher=teacher,
                                        alpha=d.alpha if d else 0.0, temperature=d.temperature if d else 1.0)


def recipe_scores(cfg: Config, ws: Layout, exp: str, tables: "Tables", fold_of: np.ndarray,
                  per_seed: dict[int, dict[int, Any]], scores: dict) -> dict:
    """scores.json's recipe fields: per-seed fold and OOF scores (train.seeds), the pseudo labels' origin, the teacher."""
    out: dict[str, Any] = {}
    if cfg.train.seeds:
        from comp.core.metrics import get_metric

        metric = get_metric(cfg.metric, tables.task)
        row_of = {i: r for r, i in enumerate(tables.train["id"].astype(str))}
        targets = np.asarray(tables.targets)
        seed_oof = {}
        for seed, results in sorted(per_seed.items()):
            rows = [row_of[i] for r in results.values() for i in r.val_ids]
            probs = np.concatenate([r.val_probs for r in results.values()]) if results else None
            seed_oof[str(seed)] = metric(targets[rows], probs) if rows else None
        missing = [[f, int(s)] for f in range(cfg.folds.k) for s in cfg.train.seeds if f not in per_seed.get(s, {})]
        out.update({
            "seeds": list(cfg.train.seeds),
            "seed_folds": {str(s): {int(f): float(r.score) for f, r in sorted(per_seed.get(s, {}).items())}
                           for s in cfg.train.seeds},
            "seed_oof": seed_oof,
            "oof_is": "the OOF score of the seeds' mean probabilities",
            "missing_runs": missing,
            "complete": bool(scores.get("complete")) and not missing,
        })
    if cfg.pseudo is not None and ws.pseudo_json(exp).is_file():
        out["pseudo"] = read_json(ws.pseudo_json(exp))
    if cfg.train.distill is not None:
        from comp.recipes.distill import teacher_record

        out["distill"] = teacher_record(cfg, ws)
    return out
