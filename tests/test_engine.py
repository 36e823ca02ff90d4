"""fit_fold: checkpoints, resume after an interruption, NaN handling, EMA, options; schedules and precision."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import comp.train.engine as engine
from comp.core.config import TrainConfig, load_config
from comp.data.dataset import ImageDataset
from comp.data.tables import load_tables
from comp.train.engine import FoldJob, FoldResult, NonFiniteLoss, fit_fold, split_indices
from comp.core.errors import CompError
from comp.data.folds import ensure_folds
from comp.model.factory import build_model
from comp.run.device import resolve_amp, resolve_device
from comp.train.parts import build_optimizer, build_scheduler, lr_factor
from comp.core.layout import Layout

CKPT_KEYS = {"model", "fold", "epoch", "score", "val_loss", "train_hash", "model_name", "n_classes", "classes", "weights"}


def setup(root: Path, *overrides: str):
    cfg = load_config(root, "baseline", ["folds.k=2", *overrides])
    ws = Layout.at(root)
    tables = load_tables(cfg, ws)
    fold_of = ensure_folds(ws, tables, cfg).fold_of(tables.train)
    return cfg, ws, tables, fold_of


def fit(root: Path, *overrides: str, fold: int = 0, out: str = "out", **kwargs) -> FoldResult:
    cfg, ws, tables, fold_of = setup(root, *overrides)
    return fit_fold(FoldJob(cfg, tables, fold_of, fold, root / out, ws=ws), **kwargs)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Stop(Exception):
    """Stands in for a kill (or optuna.TrialPruned) after an epoch."""


# ---------------------------------------------------------------- fit_fold


def test_fit_fold_writes_checkpoints_history_and_returns_val_probs(tiny_ws: Path) -> None:
    cfg, ws, tables, fold_of = setup(tiny_ws)
    res = fit_fold(FoldJob(cfg, tables, fold_of, 1, tiny_ws / "f1", ws=ws))
    val = tables.train[fold_of == 1]
    assert res.fold == 1 and res.val_ids == val["id"].tolist()
    assert res.val_probs.shape == (len(val), 3)
    assert np.allclose(res.val_probs.sum(1), 1, atol=1e-5)
    assert list(res.history.columns) == ["epoch", "train_loss", "val_loss", "metric", "lr", "seconds"]
    assert res.history["epoch"].tolist() == [1, 2] and res.minutes > 0
    assert res.score == res.history["metric"].max()
    best = torch.load(tiny_ws / "f1" / "best.pt", weights_only=True)
    assert CKPT_KEYS <= set(best) and best["fold"] == 1 and best["weights"] == "raw"
    assert best["classes"] == ["c0", "c1", "c2"] and best["n_classes"] == 3 and best["train_hash"] == cfg.train_hash()
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in best["model"])
    model = build_model(cfg.model, 3)
    model.load_state_dict(best["model"])  # predict's path: strict load into a fresh model
    last = torch.load(tiny_ws / "f1" / "last.pt", weights_only=True)
    assert last["finished"] and last["next_epoch"] == 2
    # a finished fold is never continued: no optimizer, schedule or RNG state is written (or waited for) for it
    assert all(last[k] is None for k in ("optimizer", "scheduler", "scaler", "rng")) and last["model"]
    assert (tiny_ws / "f1" / "history.csv").read_text().startswith("epoch,train_loss,val_loss,metric,lr,seconds\n")
    assert not list((tiny_ws / "f1").glob(".*tmp"))


def test_interrupted_fit_resumes_to_the_same_result(tiny_ws: Path) -> None:
    """Kill after epoch 1 (on_epoch raises), rerun: it resumes at epoch 2 and ends where an uninterrupted fit does."""
    over = ("train.epochs=3", "train.ema=true", "train.ema_decay=0.5")
    whole = fit(tiny_ws, *over, out="whole")

    def stop_after_first(epoch: int, info: dict) -> None:
        assert {"score", "val_loss", "improved", "epoch", "train_loss", "lr"} <= set(info) and info["epoch"] == epoch + 1
        if epoch == 0:
            raise Stop

    with pytest.raises(Stop):
        fit(tiny_ws, *over, out="cut", on_epoch=stop_after_first)
    last = torch.load(tiny_ws / "cut" / "last.pt", weights_only=True)
    assert last["next_epoch"] == 1 and not last["finished"]
    assert all(last[k] is not None for k in ("optimizer", "scheduler", "scaler", "rng"))  # what resuming needs
    seen = []
    resumed = fit(tiny_ws, *over, out="cut", on_epoch=lambda e, info: seen.append(e))
    assert seen == [1, 2]
    assert resumed.history["epoch"].tolist() == [1, 2, 3]
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
    assert (tiny_ws / "out" / "best.pt").is_file() and again.history["epoch"].tolist() == [1, 2]
    np.testing.assert_array_equal(again.val_probs, first.val_probs)  # same seed, same fit


def test_changed_config_starts_the_fold_over(tiny_ws: Path) -> None:
    first = fit(tiny_ws, "train.epochs=1")
    res = fit(tiny_ws, "train.epochs=2")
    assert res.history["epoch"].tolist() == [1, 2]
    assert res.history["train_loss"].iloc[0] == first.history["train_loss"].iloc[0]  # epoch 0 ran again, same seed
    old, new = (load_config(tiny_ws, "baseline", ["folds.k=2", f"train.epochs={n}"]).train_hash() for n in (1, 2))
    assert old != new
    assert [torch.load(tiny_ws / "out" / f, weights_only=True)["train_hash"] for f in ("best.pt", "last.pt")] == [new, new]


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
    res = fit(tiny_ws, "train.ema=true", "train.ema_decay=0.9", "train.checkpoint=best")
    assert {"ema_metric", "ema_val_loss"} <= set(res.history.columns)
    best = torch.load(tiny_ws / "out" / "best.pt", weights_only=True)
    row = res.history.iloc[res.best_epoch]
    ema_wins = row["ema_metric"] > row["metric"] or (
        row["ema_metric"] == row["metric"] and row["ema_val_loss"] < row["val_loss"])
    assert best["weights"] == ("ema" if ema_wins else "raw")  # the better candidate of the best epoch
    prefix = "ema_" if ema_wins else ""
    assert (res.score, res.val_loss) == pytest.approx((row[f"{prefix}metric"], row[f"{prefix}val_loss"]))
    assert not np.allclose(res.history["ema_val_loss"], res.history["val_loss"])  # the EMA is another model


def test_checkpoint_last_keeps_the_final_epochs_average_without_looking_at_the_fold(tiny_ws: Path) -> None:
    res = fit(tiny_ws, "train.ema=true", "train.ema_decay=0.9", "train.epochs=3")
    best = torch.load(tiny_ws / "out" / "best.pt", weights_only=True)
    assert best["weights"] == "ema" and best["epoch"] == 2 and res.best_epoch == 2
    last_row = res.history.iloc[-1]
    assert (res.score, res.val_loss) == pytest.approx((last_row["ema_metric"], last_row["ema_val_loss"]))
    assert res.epoch_probs.shape == (3, *res.val_probs.shape)
    assert np.array_equal(res.epoch_probs[-1], res.val_probs)  # the kept checkpoint's OOF is the last epoch's


def test_ema_weights_are_saved_when_the_ema_candidate_wins(tiny_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_pick = engine.pick
    monkeypatch.setattr(engine, "pick", lambda cands, metric: cands[-1] if cands[-1].weights == "ema" else real_pick(cands, metric))
    res = fit(tiny_ws, "train.ema=true", "train.ema_decay=0.9", "train.epochs=1")
    best = torch.load(tiny_ws / "out" / "best.pt", weights_only=True)
    last = torch.load(tiny_ws / "out" / "last.pt", weights_only=True)
    assert best["weights"] == "ema" and res.val_loss == pytest.approx(res.history["ema_val_loss"].iloc[0])
    assert all(torch.equal(best["model"][k], last["ema"][k]) for k in best["model"])  # the EMA's weights, not the raw
    assert not all(torch.equal(best["model"][k], last["model"][k]) for k in best["model"])


class Spy:
    """What one fit trains with, seen through hooks on the objects engine.build_parts returns."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parts = None
        self.loss = None  # the loss module build_parts made
        self.targets: list[torch.Tensor] = []  # what the loss received, batch by batch
        self.step_norms: list[float] = []  # total gradient norm as each optimizer step sees it
        self.forwards: list[tuple[bool, torch.dtype]] = []  # (training?, output dtype) of each model forward
        self.mixes: list[tuple[torch.Tensor, ...]] = []  # (images, target) before and after MixUp
        real = engine.build_parts

        def build_parts(*args, **kwargs):
            parts = self.parts = real(*args, **kwargs)
            parts.optimizer.register_step_pre_hook(self._on_step)
            parts.model.register_forward_hook(lambda m, i, out: self.forwards.append((m.training, out.dtype)))
            self.loss = loss = parts.loss
            parts.loss = lambda logits, y: self.targets.append(y.detach().clone()) or loss(logits, y)
            if parts.mixup is not None:
                parts.mixup = MixSpy(parts.mixup, self.mixes)
            return parts

        monkeypatch.setattr(engine, "build_parts", build_parts)

    def _on_step(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        grads = [p.grad.flatten() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self.step_norms.append(float(torch.linalg.vector_norm(torch.cat(grads))))

    def train_forwards(self) -> list[torch.dtype]:
        return [dtype for training, dtype in self.forwards if training]


class MixSpy:
    """Stands in for the engine's SeededMixup: records each batch before and after mixing."""

    def __init__(self, mixup, record: list) -> None:
        self.mixup, self.record = mixup, record

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        before = (x.clone(), y.clone())  # timm mixes in place
        out = self.mixup(x, y)
        self.record.append((*before, out[0].clone(), out[1].clone()))
        return out

    def __getattr__(self, name: str):
        return getattr(self.mixup, name)


def imbalanced_ws(make_ws) -> Path:
    """c0 keeps 6 images per person, c1 and c2 keep 1: per fold of k=2 the training rows are 12, 2, 2."""
    root = make_ws("imbalanced", images_per_group=6)
    train = pd.read_csv(root / "data" / "train.csv")
    keep = (train["label"] == "c0") | train["id"].str.endswith("_0")
    train[keep].to_csv(root / "data" / "train.csv", index=False)
    return root


def train_counts(root: Path, fold: int = 0) -> np.ndarray:
    _, _, tables, fold_of = setup(root)
    return np.bincount(tables.train["y"].to_numpy()[fold_of != fold], minlength=tables.n_classes)


def finite(res: FoldResult) -> bool:
    return bool(np.isfinite(res.history[["train_loss", "val_loss", "metric", "lr"]].to_numpy()).all()
                and np.allclose(res.val_probs.sum(1), 1, atol=1e-5))


def test_sgd_uses_nesterov_momentum_and_the_step_schedule_drops_the_lr(tiny_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    res = fit(tiny_ws, "train.epochs=3", "train.optimizer=sgd", "train.momentum=0.8", "train.scheduler=step",
              "train.step_size=2", "train.step_gamma=0.5")
    opt = spy.parts.optimizer
    assert type(opt) is torch.optim.SGD and all(g["momentum"] == 0.8 and g["nesterov"] for g in opt.param_groups)
    assert any("momentum_buffer" in s for s in opt.state.values())  # SGD really stepped with momentum
    assert res.history["lr"].tolist() == pytest.approx([3e-3, 3e-3, 1.5e-3])  # x step_gamma after step_size epochs
    assert finite(res)


def test_grad_accum_steps_every_n_batches_and_clip_grad_bounds_the_norm(tiny_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unclipped = []
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, clip: unclipped.append(float(
        real_clip(params, clip))) or unclipped[-1])
    spy = Spy(monkeypatch)
    clip = 0.05
    res = fit(tiny_ws, "train.epochs=2", "train.batch_size=4", "train.grad_accum=3", f"train.clip_grad={clip}")
    batches = int(train_counts(tiny_ws).sum()) // 4  # drop_last
    assert len(spy.train_forwards()) == 2 * batches
    steps = 2 * math.ceil(batches / 3)  # every 3rd batch, and the epoch's last
    assert torch.load(tiny_ws / "out" / "last.pt", weights_only=True)["step"] == steps == len(spy.step_norms)
    assert batches % 3 != 0 and steps < 2 * batches  # the remainder step and the accumulation both happened
    assert max(spy.step_norms) <= clip * (1 + 1e-4)
    assert len(unclipped) == steps and max(unclipped) > 2 * clip  # the gradients did need clipping
    assert finite(res)


def test_balanced_sampler_draws_classes_evenly_with_focal_loss_and_onecycle(make_ws, monkeypatch: pytest.MonkeyPatch) -> None:
    root = imbalanced_ws(make_ws)
    counts = train_counts(root)
    assert counts[0] >= 5 * counts[1:].max()  # the input is imbalanced
    spy = Spy(monkeypatch)
    res = fit(root, "train.epochs=3", "train.batch_size=4", "train.scheduler=onecycle", "train.loss=focal",
              "train.focal_gamma=1.5", "train.sampler=balanced", "train.sample_ratio=1.5")
    drawn = torch.cat(spy.targets).numpy()
    assert len(drawn) == 3 * (round(1.5 * counts.sum()) // 4 * 4)  # sample_ratio sets the draws per epoch
    share = np.bincount(drawn, minlength=3) / len(drawn)
    assert share[0] < 0.5 < counts[0] / counts.sum() and share[1:].min() > 0.2  # near 1/3 each, unlike the input
    assert type(spy.loss).__name__ == "FocalLoss" and spy.loss.gamma == 1.5
    lrs = res.history["lr"].tolist()  # one-cycle: starts at lr/25, rises, then anneals
    assert lrs[0] == pytest.approx(3e-3 / 25) and lrs[0] < lrs[1] and lrs[2] < lrs[1]
    assert finite(res)


def test_mixup_feeds_convex_mixes_of_images_and_soft_targets(tiny_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    res = fit(tiny_ws, "train.epochs=2", "train.scheduler=none", "train.loss=f1", "augment.mixup_alpha=0.4",
              "train.label_smoothing=0.1")
    assert type(spy.loss).__name__ == "SoftF1Loss" and spy.loss.smoothing == 0.0  # MixUp smooths, the loss does not
    assert res.history["lr"].tolist() == [3e-3, 3e-3]  # no schedule
    assert spy.mixes and len(spy.mixes) == len(spy.targets)
    on, off = 1 - 0.1 + 0.1 / 3, 0.1 / 3
    lams = []
    for x, y, x_mixed, y_mixed in spy.mixes:
        flipped = x.flip(0)
        lam = float(((x_mixed - flipped) * (x - flipped)).sum() / ((x - flipped) ** 2).sum())
        lams.append(lam)
        assert 0 <= lam <= 1 and torch.allclose(x_mixed, lam * x + (1 - lam) * flipped, atol=1e-4)
        hard = torch.nn.functional.one_hot(y, 3).float() * (on - off) + off
        assert torch.allclose(y_mixed, lam * hard + (1 - lam) * hard.flip(0), atol=1e-4)
    assert any(0.05 < lam < 0.95 for lam in lams)  # really mixed, not just passed through
    targets = torch.cat(spy.targets)
    assert targets.ndim == 2 and torch.allclose(targets.sum(1), torch.ones(len(targets)), atol=1e-5)
    assert finite(res)


def test_weighted_ce_bf16_warmup_and_workers(make_ws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = imbalanced_ws(make_ws)
    counts = train_counts(root)
    pids = tmp_path / "pids"
    pids.mkdir()
    real_fetch = ImageDataset.__getitems__

    def fetch(self, items):  # runs in whichever process loads the batch
        (pids / str(os.getpid())).touch()
        return real_fetch(self, items)

    monkeypatch.setattr(ImageDataset, "__getitems__", fetch)
    spy = Spy(monkeypatch)
    res = fit(root, "train.epochs=1", "train.loss=weighted_ce", "train.amp=bf16", "train.warmup_epochs=0.5",
              "train.num_workers=2")
    weight = spy.loss.weight.numpy()
    assert weight[1] / weight[0] == pytest.approx(counts[0] / counts[1])  # inverse class frequency
    assert set(spy.train_forwards()) == {torch.bfloat16}  # the forward ran under bf16 autocast
    batches = int(counts.sum()) // 8
    warm = round(0.5 * batches)
    assert res.history["lr"].iloc[0] == pytest.approx(3e-3 / (warm + 1))  # the first batch trains warming up
    loaded_by = {int(p.name) for p in pids.iterdir()}
    assert loaded_by and os.getpid() not in loaded_by  # batches came from worker processes
    assert finite(res)


def test_without_amp_the_forward_stays_float32(tiny_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    fit(tiny_ws, "train.epochs=1", "train.amp=off")
    assert spy.train_forwards() and set(spy.train_forwards()) == {torch.float32}


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
    res = fit(tiny_ws, "train.epochs=6", "train.early_stopping=2", "train.checkpoint=best")
    assert res.history["epoch"].tolist() == [1, 2, 3] and res.best_epoch == 0


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
    opt = build_optimizer(model, TrainConfig(lr=3e-4))
    sched = build_scheduler(opt, TrainConfig(lr=3e-4), 5)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "s.pt")
    back = torch.load(tmp_path / "s.pt", weights_only=True)
    sched2 = build_scheduler(build_optimizer(model, TrainConfig(lr=3e-4)), TrainConfig(lr=3e-4), 5)
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
