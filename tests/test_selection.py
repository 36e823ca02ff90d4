"""How each fold's epoch is chosen: best-on-fold is optimistic, the nested choice is not, last chooses nothing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from comp.core.metrics import get_metric
from comp.train.selection import nested_epochs, selection_scores

ACCURACY = get_metric("accuracy")


@dataclass
class Res:
    val_ids: list[str]
    epoch_probs: np.ndarray
    best_epoch: int


def fold_result(fold: int, correct_per_epoch: list[int], n: int = 20) -> tuple[Res, dict[str, int]]:
    """A fold of n rows (all class 0) whose epoch e gets correct_per_epoch[e] of them right."""
    ids = [f"f{fold}r{i}" for i in range(n)]
    probs = np.zeros((len(correct_per_epoch), n, 2), dtype=np.float32)
    for e, right in enumerate(correct_per_epoch):
        probs[e, :right, 0], probs[e, right:, 1] = 0.9, 0.9
        probs[e, :right, 1], probs[e, right:, 0] = 0.1, 0.1
    return Res(ids, probs, len(correct_per_epoch) - 1), {i: 0 for i in ids}


def score_from(labels: dict[str, int]):
    return lambda ids, probs: ACCURACY(np.array([labels[i] for i in ids]), probs)


def folds_with_a_noisy_early_peak():
    """Fold 0 peaks by luck at epoch 2 (18/20) and ends at 13/20; the others climb steadily to their last epoch."""
    curves = {0: [10, 18, 11, 13], 1: [8, 10, 13, 16], 2: [9, 11, 14, 17]}
    results, labels = {}, {}
    for f, c in curves.items():
        results[f], own = fold_result(f, c)
        labels.update(own)
    return results, score_from(labels)


def test_nested_choice_ignores_the_folds_own_rows() -> None:
    results, score = folds_with_a_noisy_early_peak()
    curves = {f: np.array([score(r.val_ids, p) for p in r.epoch_probs]) for f, r in results.items()}
    chosen = nested_epochs(curves, ACCURACY)
    assert chosen[0] == 3  # folds 1 and 2 are best at their last epoch, whatever fold 0's peak
    assert chosen[1] == 3 and chosen[2] == 3  # fold 1: (0.65+0.85)/2 at epoch 4 beats (0.9+0.55)/2 at epoch 2


def test_best_on_fold_flatters_and_the_nested_estimate_does_not() -> None:
    results, score = folds_with_a_noisy_early_peak()
    kept = float(np.mean([score(r.val_ids, r.epoch_probs[-1]) for r in results.values()]))
    out = selection_scores(results, mode="best", epochs_planned=4, metric=ACCURACY, score=score,
                           kept_mean=kept, kept_oof=kept)
    sel = out["selection"]
    assert sel["best_on_fold"]["epochs"][0] == 2 and sel["best_on_fold"]["folds"][0] == pytest.approx(0.9)
    assert sel["nested"]["mean"] < sel["best_on_fold"]["mean"]
    assert sel["nested"]["folds"][0] == pytest.approx(0.65)  # fold 0 scored at the epoch the others chose
    assert out["honest_source"] == "nested" and out["honest"] == sel["nested"]["mean"]


def test_last_mode_is_its_own_honest_estimate_unless_a_fold_stopped_early() -> None:
    results, score = folds_with_a_noisy_early_peak()
    kept = float(np.mean([score(r.val_ids, r.epoch_probs[-1]) for r in results.values()]))
    out = selection_scores(results, mode="last", epochs_planned=4, metric=ACCURACY, score=score,
                           kept_mean=kept, kept_oof=kept)
    assert out["honest_source"] == "kept" and out["honest"] == pytest.approx(kept)
    stopped = selection_scores(results, mode="last", epochs_planned=6, metric=ACCURACY, score=score,
                               kept_mean=kept, kept_oof=kept)  # the folds ran 4 of 6 epochs: early stopping chose
    assert stopped["honest_source"] == "nested"


def test_lower_is_better_metrics_choose_the_lowest_epoch() -> None:
    log_loss = get_metric("log_loss")
    curves = {0: np.array([0.9, 0.5, 0.45]), 1: np.array([0.8, 0.6, 0.4]), 2: np.array([0.7, 0.65, 0.3])}
    assert nested_epochs(curves, log_loss) == {0: 2, 1: 2, 2: 2}


def test_no_selection_figures_without_per_epoch_probabilities() -> None:
    results, score = folds_with_a_noisy_early_peak()
    results[1].epoch_probs = None
    assert selection_scores(results, mode="best", epochs_planned=4, metric=ACCURACY, score=score,
                            kept_mean=0.5, kept_oof=0.5) == {"checkpoint": "best"}


# ---------------------------------------------------------------- through fold-train


def train_mode(root, mode: str, *extra: str) -> dict:
    from comp.core.config import load_config
    from comp.train.fold_train import fold_train
    from comp.core.layout import Layout

    cfg = load_config(root, "baseline", ["folds.k=3", "train.epochs=4", f"train.checkpoint={mode}", *extra])
    return fold_train(cfg, Layout.at(root), "baseline", force=True)


@pytest.mark.usefixtures("one_torch_thread")
def test_nested_mode_predicts_with_the_checkpoint_whose_oof_it_reports(tiny_ws) -> None:
    import pandas as pd
    import torch

    # a high lr on 36 images makes the validation curve noisy; no augmentation keeps that curve a matter of training
    # alone (the last assertion needs some fold whose nested epoch is not the last)
    scores = train_mode(tiny_ws, "nested", "train.lr=0.05", "augment.preset=none")
    exp = tiny_ws / "experiments" / "baseline"
    sel = scores["selection"]
    assert scores["checkpoint"] == "nested" and scores["honest_source"] == "nested"
    assert scores["mean"] == pytest.approx(sel["nested"]["mean"]) and scores["oof"] == pytest.approx(scores["honest_oof"])
    for fold in range(3):
        best = torch.load(exp / f"fold{fold}" / "best.pt", weights_only=True)
        assert best["epoch"] + 1 == sel["nested"]["epochs"][fold] == scores["best_epochs"][fold]
        kept = torch.load(exp / f"fold{fold}" / "epochs" / f"{best['epoch'] + 1}.pt", weights_only=True)
        assert all(torch.equal(best["model"][k], kept["model"][k]) for k in kept["model"])  # the chosen epoch's weights
        oof = pd.read_csv(exp / "oof.csv", dtype={"id": str}).set_index("id").loc[best["val_ids"]]
        assert np.allclose(oof.filter(like="p_").to_numpy(), best["val_probs"].numpy(), atol=1e-6)
    assert sel["best_on_fold"]["mean"] >= scores["honest"]  # the maximum over epochs on the fold's own rows
    assert set(sel["nested"]["epochs"].values()) != {4}  # some fold chose an earlier epoch: best.pt was rewritten


@pytest.mark.usefixtures("one_torch_thread")
def test_best_mode_reports_both_figures_and_last_mode_keeps_the_final_epoch(tiny_ws) -> None:
    best = train_mode(tiny_ws, "best", "train.lr=0.05")
    assert best["honest_source"] == "nested" and best["mean"] == pytest.approx(best["selection"]["best_on_fold"]["mean"])
    last = train_mode(tiny_ws, "last", "train.lr=0.05")
    assert last["honest_source"] == "kept" and last["honest"] == pytest.approx(last["mean"])
    assert last["best_epochs"] == {0: 4, 1: 4, 2: 4}
    assert not (tiny_ws / "experiments" / "baseline" / "fold0" / "epochs").exists()  # only nested keeps every epoch
