"""fit_fold: checkpoints, resume after an interruption, NaN handling, EMA, options; schedules and precision."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import comp.engine as engine
from comp.config import TrainConfig, load_config
from comp.data.tables import load_tables
from comp.engine import FoldResult, NonFiniteLoss, fit_fold, split_indices
from comp.errors import CompError
from comp.folds import ensure_folds
from comp.models import build_model
from comp.optim import build_optimizer, build_scheduler, lr_factor, resolve_amp, resolve_device
from comp.workspace import Workspace

CKPT_KEYS = {"model", "fold", "epoch", "score", "val_loss", "train_hash", "model_name", "n_classes", "classes", "weights"}


def setup(root: Path, *overrides: str):
    cfg = load_config(root, "baseline", ["folds.k=2", *overrides])
    ws = Workspace.at(root)
    tables = load_tables(cfg, ws)
    fold_of = ensure_folds(ws, tables, cfg).fold_of(tables.train)
    return cfg, ws, tables, fold_of


def fit(root: Path, *overrides: str, fold: int = 0, out: str = "out", **kwargs) -> FoldResult:
    cfg, ws, tables, fold_of = setup(root, *overrides)
    return fit_fold(cfg, tables, fold_of, fold, root / out, ws=ws, **kwargs)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Stop(Exception):
    """Stands in for a kill (or optuna.TrialPruned) after an epoch."""


# ---------------------------------------------------------------- fit_fold


def test_fit_fold_writes_checkpoints_history_and_returns_val_probs(tiny_ws: Path) -> None:
    cfg, ws, tables, fold_of = setup(tiny_ws)
    res = fit_fold(cfg, tables, fold_of, 1, tiny_ws / "f1", ws=ws)
    val = tables.train[fold_of == 1]
    assert res.fold == 1 and res.val_ids == val["id"].tolist()
    assert res.val_probs.shape == (len(val), 3)
    assert np.allclose(res.val_probs.sum(1), 1, atol=1e-5)
    assert list(res.history.columns) == ["epoch", "train_loss", "val_loss", "metric", "lr", "seconds"]
    assert res.history["epoch"].tolist() == [0, 1] and res.minutes > 0
    assert res.score == res.history["metric"].max()
    best = torch.load(tiny_ws / "f1" / "best.pt", weights_only=True)
    assert CKPT_KEYS <= set(best) and best["fold"] == 1 and best["weights"] == "raw"
    assert best["classes"] == ["c0", "c1", "c2"] and best["n_classes"] == 3 and best["train_hash"] == cfg.train_hash()
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in best["model"])
    model = build_model(cfg.model, 3)
    model.load_state_dict(best["model"])  # predict's path: strict load into a fresh model
    last = torch.load(tiny_ws / "f1" / "last.pt", weights_only=True)
    assert last["finished"] and last["next_epoch"] == 2 and {"optimizer", "scheduler", "scaler", "rng"} <= set(last)
    assert (tiny_ws / "f1" / "history.csv").read_text().startswith("epoch,train_loss,val_loss,metric,lr,seconds\n")
    assert not list((tiny_ws / "f1").glob(".*tmp"))


def test_interrupted_fit_resumes_to_the_same_result(tiny_ws: Path) -> None:
    """Kill after epoch 1 (on_epoch raises), rerun: it resumes at epoch 2 and ends where an uninterrupted fit does."""
    over = ("train.epochs=3", "train.ema=true", "train.ema_decay=0.5")
    whole = fit(tiny_ws, *over, out="whole")

    def stop_after_first(epoch: int, info: dict) -> None:
        assert set(info) == {"score", "val_loss"}
        if epoch == 0:
            raise Stop

    with pytest.raises(Stop):
        fit(tiny_ws, *over, out="cut", on_epoch=stop_after_first)
    last = torch.load(tiny_ws / "cut" / "last.pt", weights_only=True)
    assert last["next_epoch"] == 1 and not last["finished"]
    seen = []
    resumed = fit(tiny_ws, *over, out="cut", on_epoch=lambda e, info: seen.append(e))
    assert seen == [1, 2]
    assert resumed.history["epoch"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(resumed.val_probs, whole.val_probs)
    assert resumed.history["train_loss"].tolist() == whole.history["train_loss"].tolist()


def test_finished_fold_is_returned_without_training(tiny_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = fit(tiny_ws)
    stamp = (tiny_ws / "out" / "best.pt").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(engine, "train_one_epoch", no_training)
    again = fit(tiny_ws)
    assert again.score == first.score and again.best_epoch == first.best_epoch
    np.testing.assert_array_equal(again.val_probs, first.val_probs)
    assert (tiny_ws / "out" / "best.pt").stat().st_mtime_ns == stamp


def test_finished_fold_without_best_checkpoint_is_trained_again(tiny_ws: Path) -> None:
    first = fit(tiny_ws)
    (tiny_ws / "out" / "best.pt").unlink()
    again = fit(tiny_ws)
    assert (tiny_ws / "out" / "best.pt").is_file() and again.history["epoch"].tolist() == [0, 1]
    np.testing.assert_array_equal(again.val_probs, first.val_probs)  # same seed, same fit


def test_changed_config_starts_the_fold_over(tiny_ws: Path) -> None:
    fit(tiny_ws, "train.epochs=1")
    res = fit(tiny_ws, "train.epochs=2")
    assert res.history["epoch"].tolist() == [0, 1]
    assert torch.load(tiny_ws / "out" / "best.pt", weights_only=True)["train_hash"] != ""


def test_nan_loss_stops_with_a_clear_error_and_keeps_last_good_checkpoint(tiny_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_build = engine.build_parts
    poisoned = {"on": False}

    def build_parts(*args, **kwargs):
        parts = real_build(*args, **kwargs)
        loss = parts.loss
        parts.loss = lambda logits, y: loss(logits, y) * (math.nan if poisoned["on"] else 1.0)
        return parts

    monkeypatch.setattr(engine, "build_parts", build_parts)
    with pytest.raises(NonFiniteLoss, match=r"loss became nan in epoch 2 by batch \d+ \(lr .*\).*Lower train.lr"):
        fit(tiny_ws, "train.epochs=3", on_epoch=lambda e, info: poisoned.update(on=True))
    last = torch.load(tiny_ws / "out" / "last.pt", weights_only=True)
    assert last["next_epoch"] == 1 and torch.isfinite(torch.cat([v.float().flatten() for v in last["model"].values()])).all()


def test_huge_learning_rate_is_a_non_finite_loss(tiny_ws: Path) -> None:
    with pytest.raises(NonFiniteLoss, match="rerun under a new experiment name or with --force"):
        fit(tiny_ws, "train.lr=1e30", "train.epochs=1")


def test_ema_is_validated_as_its_own_candidate(tiny_ws: Path) -> None:
    res = fit(tiny_ws, "train.ema=true", "train.ema_decay=0.9")
    assert {"ema_metric", "ema_val_loss"} <= set(res.history.columns)
    best = torch.load(tiny_ws / "out" / "best.pt", weights_only=True)
    assert best["weights"] in ("raw", "ema")
    row = res.history.iloc[res.best_epoch]
    assert res.score == max(row["metric"], row["ema_metric"])


@pytest.mark.parametrize("overrides", [
    ("train.optimizer=sgd", "train.scheduler=step", "train.step_size=1", "train.grad_accum=2", "train.clip_grad=1.0"),
    ("train.scheduler=onecycle", "train.loss=focal", "train.sampler=balanced", "train.sample_ratio=1.5"),
    ("train.scheduler=none", "train.loss=f1", "augment.mixup_alpha=0.4", "train.label_smoothing=0.1"),
    ("train.loss=weighted_ce", "train.amp=bf16", "train.warmup_epochs=0.5", "train.num_workers=2"),
], ids=["sgd-step-accum-clip", "onecycle-focal-sampler", "none-f1-mixup", "weighted-bf16-workers"])
def test_training_options_run_and_stay_finite(tiny_ws: Path, overrides: tuple[str, ...]) -> None:
    res = fit(tiny_ws, "train.epochs=1", *overrides)
    assert np.isfinite(res.history[["train_loss", "val_loss", "metric", "lr"]].to_numpy()).all()
    assert np.allclose(res.val_probs.sum(1), 1, atol=1e-5)


def test_fit_leaves_the_callers_random_state_alone(tiny_ws: Path) -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    expected = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(123)
    np.random.seed(123)
    fit(tiny_ws, "train.epochs=1")
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])


def test_early_stopping_on_the_metric(tiny_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The metric never improves after epoch 1, so patience 2 stops after epoch 3 of 6."""
    monkeypatch.setattr(engine, "pick", lambda cands, metric: engine.Candidate(
        "raw", cands[0].module, cands[0].probs, 1.0, 0.5))
    res = fit(tiny_ws, "train.epochs=6", "train.early_stopping=2")
    assert res.history["epoch"].tolist() == [0, 1, 2] and res.best_epoch == 0


def test_split_indices_errors() -> None:
    with pytest.raises(CompError, match=r"fold 5 does not exist; the folds are \[0, 1\]"):
        split_indices(np.array([0, 1, 0, 1]), 5)
    with pytest.raises(CompError, match="leaves no training rows"):
        split_indices(np.array([0, 0]), 0)


def test_batch_larger_than_training_rows_is_an_error(tiny_ws: Path) -> None:
    with pytest.raises(CompError, match="train.batch_size=64"):
        fit(tiny_ws, "train.batch_size=64")


# ---------------------------------------------------------------- schedules, precision, device


def schedule(**kw) -> list[float]:
    cfg = TrainConfig(epochs=4, lr=1.0, **kw)
    f = lr_factor(cfg, steps_per_epoch=10)
    return [f(s) for s in range(40)]


def test_cosine_warms_up_then_decays_to_zero() -> None:
    lrs = schedule(scheduler="cosine", warmup_epochs=1)
    assert lrs[0] < lrs[5] < lrs[9] <= 1.0 and max(lrs) == pytest.approx(1.0, abs=0.01)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.01


def test_onecycle_step_and_none_schedules() -> None:
    one = schedule(scheduler="onecycle", warmup_epochs=0)
    assert one[0] == pytest.approx(1 / 25) and max(one) == pytest.approx(1.0, abs=0.01) and one[-1] < 0.01
    step = schedule(scheduler="step", warmup_epochs=0, step_size=2, step_gamma=0.1)
    assert step[0] == step[19] == 1.0 and step[20] == step[39] == pytest.approx(0.1)
    assert schedule(scheduler="none", warmup_epochs=0) == [1.0] * 40


def test_scheduler_and_optimizer_states_load_with_weights_only(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, TrainConfig())
    sched = build_scheduler(opt, TrainConfig(), 5)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "s.pt")
    back = torch.load(tmp_path / "s.pt", weights_only=True)
    sched2 = build_scheduler(build_optimizer(model, TrainConfig()), TrainConfig(), 5)
    sched2.load_state_dict(back["sched"])
    assert sched2.last_epoch == 1
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]  # no decay on biases


def test_amp_off_survives_yaml(tiny_ws: Path) -> None:
    """YAML 1.1 reads `off` as false; `--set train.amp=off` must still mean off."""
    assert load_config(tiny_ws, "baseline", ["train.amp=off"]).train.amp == "off"


def test_amp_and_device_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) == torch.bfloat16
    with pytest.raises(CompError, match="train.amp=fp16 needs a CUDA GPU"):
        resolve_amp("fp16", cpu)
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(CompError, match="train.device=cuda but no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(CompError, match="is not a device"):
        resolve_device("tpu9")
