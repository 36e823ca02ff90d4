"""`comp ensemble --method auto`: the blend with the best nested score, never one below the plain mean's.

Candidates, each scored by its nested estimate (for each fold, fitted without it and scored on it): the plain
mean of the members (equal weights), the mean with weights fitted on OOF, and, for multiclass, a logistic-regression
stacker. The plain mean needs no fitting, so it is the floor: another candidate is chosen only when its nested score
beats the plain mean's. Picking the best of three nested scores is itself a small selection; every candidate's
score is recorded in the manifest so the margin can be judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from comp.core.config import Config
from comp.core.metrics import get_metric
from comp.core.layout import Layout


def auto_candidates(cfg: Config, ws: Layout, members: Sequence[str], *, oof_source: str = "auto",
                    seed: int = 0) -> list[dict[str, Any]]:
    """[{method, weights, stacker, nested, nested_folds}], the plain mean first; nested scores on the members' OOF
    made as their test predictions."""
    from comp.data.tables import load_tables
    from comp.blend.ensemble import fit_blend, wants_thresholds
    from comp.blend.submission import member_oof, member_records, resolved_kind

    tables = load_tables(cfg, ws, check_images=False)
    task, metric = tables.task, get_metric(cfg.metric, tables.task)
    records = member_records(ws, members, tables.train, oof_source=oof_source)
    oof_probs, y, folds = member_oof(ws, members, tables.classes, oof_sources={m: r["oof_source"] for m, r in records.items()},
                                     tables=tables)
    thresholds = wants_thresholds(task, resolved_kind(cfg.submission, task), metric)
    out = []
    for weights in ("equal", "auto") if len(members) > 1 else ("equal",):
        fit = fit_blend(oof_probs, y, folds, metric, method="mean", weights=weights, seed=seed, task=task,
                        thresholds=thresholds)
        out.append({"method": "mean", "weights": weights, "nested": fit.nested, "nested_folds": list(fit.nested_folds)})
    if task.kind == "multiclass" and len(np.unique(folds)) > 1 and len(np.unique(y)) > 1:
        from comp.blend.stack import fit_stack

        stack = fit_stack(oof_probs, y, folds, metric, kind="logreg", seed=seed)
        out.append({"method": "stack", "weights": None, "stacker": "logreg", "nested": stack.nested,
                    "nested_folds": list(stack.nested_folds)})
    return out


def choose(candidates: list[dict[str, Any]], greater_is_better: bool) -> dict[str, Any]:
    """The candidate with the best nested score; the plain mean (first) unless another strictly beats it."""
    sign = 1 if greater_is_better else -1
    best = candidates[0]
    for c in candidates[1:]:
        if sign * c["nested"] > sign * best["nested"]:
            best = c
    return best
