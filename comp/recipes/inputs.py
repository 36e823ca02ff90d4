"""What one fold of an experiment trains on once its recipes apply: pseudo rows, teacher targets (fold_inputs),
and what scores.json records of them (recipe_record); experiment_recipes hands both to fold-train."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from comp.core.config import Config
from comp.recipes._tables import require_multiclass
from comp.core.progress import SILENT, Progress
from comp.core.layout import Layout, read_json

if TYPE_CHECKING:
    from comp.data.tables import Tables
    from comp.train.targets import RowTargets


def fold_inputs(cfg: Config, ws: Layout, exp: str, tables: "Tables", fold_of: np.ndarray, fold: int, *,
                progress: Progress = SILENT) -> tuple["Tables", np.ndarray, "RowTargets | None"]:
    """(training table, fold of each row, per-row targets) of one fold: the inputs unchanged without pseudo or
    distill; else the table extended by the pseudo rows this fold keeps (fold_of -1: trained, never validated)
    and, for soft pseudo labels or distillation, the rows' targets."""
    if not cfg.uses_recipes:
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


def recipe_record(cfg: Config, ws: Layout, exp: str) -> dict:
    """scores.json's recipe fields: the pseudo labels' origin, the teacher."""
    out: dict[str, Any] = {}
    if cfg.pseudo is not None and ws.pseudo_json(exp).is_file():
        out["pseudo"] = read_json(ws.pseudo_json(exp))
    if cfg.train.distill is not None:
        from comp.recipes.distill import teacher_record

        out["distill"] = teacher_record(cfg, ws)
    return out


@dataclasses.dataclass(frozen=True)
class ExperimentRecipes:
    """An experiment's recipes as fold-train takes them (comp.train.fold_train.Recipes)."""

    cfg: Config
    ws: Layout
    exp: str

    def fold_inputs(self, tables: "Tables", fold_of: np.ndarray, fold: int, *,
                    progress: Progress = SILENT) -> tuple["Tables", np.ndarray, "RowTargets | None"]:
        return fold_inputs(self.cfg, self.ws, self.exp, tables, fold_of, fold, progress=progress)

    def record(self) -> dict:
        return recipe_record(self.cfg, self.ws, self.exp)


def experiment_recipes(cfg: Config, ws: Layout, exp: str) -> ExperimentRecipes | None:
    """The recipes fold-train must be handed for this experiment, or None when it sets none."""
    if not cfg.uses_recipes:
        return None
    return ExperimentRecipes(cfg, ws, exp)
