"""What each fold's choice of epoch is worth: the kept checkpoint, the best epoch on the fold, and a nested choice.

A fold's validation rows are the only rows that score it. Picking the epoch whose score on those rows is highest
(train.checkpoint: best, early stopping) reports the maximum of several noisy scores, which sits above what the
checkpoint scores on new data. The nested estimate chooses fold f's epoch on the other folds' curves (the epoch
whose mean score over folds g != f is best), then scores fold f at that epoch: no row scores a choice made on it.

All three come from the per-epoch validation probabilities fit_fold records (FoldResult.epoch_probs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from comp.core.metrics import Metric

Score = Callable[[list[str], np.ndarray], float]  # (validation ids, probabilities) -> the metric


def epoch_curves(results: Mapping[int, object], score: Score) -> dict[int, np.ndarray] | None:
    """{fold: (E,) the metric after each epoch}, or None when a fold has no per-epoch probabilities."""
    curves = {}
    for fold, res in results.items():
        probs = getattr(res, "epoch_probs", None)
        if probs is None or len(probs) == 0:
            return None
        curves[fold] = np.array([score(res.val_ids, p) for p in probs], dtype=np.float64)
    return curves


def best_index(values: np.ndarray, metric: Metric) -> int:
    """Index of the best value in the metric's direction (the first of equals)."""
    return int(np.argmax(values) if metric.greater_is_better else np.argmin(values))


def nested_epochs(curves: Mapping[int, np.ndarray], metric: Metric) -> dict[int, int]:
    """{fold: epoch index chosen on the other folds' curves}; over the epochs every other fold ran (the fold's own
    last epoch when it stopped sooner). With one fold there is nothing else to choose on: its last epoch."""
    chosen = {}
    for fold, own in curves.items():
        others = [c for f, c in curves.items() if f != fold]
        if not others:
            chosen[fold] = len(own) - 1
            continue
        n = min(len(c) for c in others)
        mean = np.mean([c[:n] for c in others], axis=0)
        chosen[fold] = min(best_index(mean, metric), len(own) - 1)
    return chosen


def figure(results: Mapping[int, object], epochs: Mapping[int, int], score: Score) -> dict:
    """{"mean", "oof", "folds", "epochs"} of each fold's probabilities after epochs[fold] (0-based index)."""
    folds = sorted(epochs)
    per_fold = [score(results[f].val_ids, results[f].epoch_probs[epochs[f]]) for f in folds]
    ids = [i for f in folds for i in results[f].val_ids]
    probs = np.concatenate([results[f].epoch_probs[epochs[f]] for f in folds])
    return {"mean": float(np.mean(per_fold)), "oof": float(score(ids, probs)),
            "folds": {int(f): float(s) for f, s in zip(folds, per_fold)},
            "epochs": {int(f): int(epochs[f]) + 1 for f in folds}}  # from 1, as history.csv


def selection_scores(results: Mapping[int, object], *, mode: str, epochs_planned: int, metric: Metric,
                     score: Score, kept_mean: float | None, kept_oof: float | None) -> dict:
    """scores.json's selection keys: checkpoint, honest, honest_oof, honest_source and selection
    ({kept, best_on_fold, nested}); {} when some fold lacks per-epoch probabilities.

    The honest figure is the kept checkpoint's own CV when nothing was chosen on the scored rows (mode last, every
    fold ran its planned epochs), else the nested estimate.
    """
    out: dict = {"checkpoint": mode}
    curves = epoch_curves(results, score)
    if curves is None or kept_mean is None:
        return out
    best = {f: best_index(c, metric) for f, c in curves.items()}
    nested = nested_epochs(curves, metric)
    kept = {"mean": kept_mean, "oof": kept_oof,
            "epochs": {int(f): int(results[f].best_epoch) + 1 for f in sorted(results)}}
    selection = {"kept": kept, "best_on_fold": figure(results, best, score),
                 "nested": figure(results, nested, score)}
    chose_nothing = mode == "last" and all(len(c) == epochs_planned for c in curves.values())
    source = "kept" if chose_nothing else "nested"
    return {**out, "honest": selection[source]["mean"], "honest_oof": selection[source]["oof"],
            "honest_source": source, "selection": selection}


def keep_nested_epochs(results: Mapping[int, object], runs: Mapping[int, list], *, metric: Metric,
                       score: Score) -> dict[int, int]:
    """train.checkpoint: nested: make each fold's best.pt the weights of the epoch chosen on the other folds.

    results: {fold: result with epoch_probs} (seeds averaged); runs: {fold: [run folder, ...]} (one per seed).
    Each run's best.pt is rewritten from fold{i}/epochs/<epoch>.pt when it holds another epoch, so the checkpoint
    that predicts the test set is the one whose validation probabilities the CV scores. The per-epoch weights stay
    (a fold trained later can change the other folds' choice). Returns {fold: chosen epoch index}.
    """
    import torch

    from comp.model.checkpoint import BestCheckpoint, load_best, load_checkpoint, save_checkpoint
    from comp.train.fold_state import epoch_weights_path, run_epoch_probs
    from comp.core.errors import CompError

    curves = epoch_curves(results, score)
    if curves is None:
        raise CompError("train.checkpoint=nested needs every fold's per-epoch validation probabilities, and a fold "
                        "was trained before comp recorded them; retrain with --force")
    chosen = nested_epochs(curves, metric)
    for fold, epoch in chosen.items():
        for out_dir in runs[fold]:
            best = load_best(out_dir / "best.pt")
            if best is None or best.base.epoch == epoch:
                continue
            weights = load_checkpoint(epoch_weights_path(out_dir, epoch))
            probs = run_epoch_probs(out_dir)
            if weights is None or probs is None:
                raise CompError(f"{out_dir}: the weights of epoch {epoch + 1} (chosen on the other folds) are gone; "
                                "retrain this fold with --force")
            base = type(best.base)(**{**best.base.as_dict(), "epoch": epoch})
            val_probs = torch.from_numpy(probs[epoch])
            save_checkpoint(out_dir / "best.pt", BestCheckpoint(
                base, weights["model"], float(score(best.val_ids, probs[epoch])), float(weights["val_loss"]),
                str(weights["weights"]), best.val_ids, val_probs).as_dict())
    return chosen
