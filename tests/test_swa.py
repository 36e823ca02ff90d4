"""SWA (train.swa) as a best.pt candidate with its BatchNorm recomputed, its lr and resume; progressive resizing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import comp.train.engine as engine
from comp.core.config import load_config
from comp.data.checked import load_checked_tables
from comp.data.dataset import set_epoch
from comp.train.engine import Candidate, FoldJob, fit_fold
from comp.data.folds import ensure_folds
from comp.model.factory import build_model
from comp.core.progress import SILENT
from comp.core.layout import Layout

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def setup(root: Path, *overrides: str):
    cfg = load_config(root, "baseline", ["folds.k=2", *overrides])
    ws = Layout.at(root)
    tables = load_checked_tables(cfg, ws)
    fold_of = ensure_folds(ws, tables, cfg).fold_of(tables.train)
    return cfg, ws, tables, fold_of


def favour_swa(monkeypatch: pytest.MonkeyPatch) -> None:
    """Score the SWA candidate above any other, so the selection must pick it."""
    real = engine.validate

    def validate(*args, **kwargs):
        return [Candidate(c.weights, c.module, c.probs, c.val_loss, 2.0) if c.weights == "swa" else c
                for c in real(*args, **kwargs)]

    monkeypatch.setattr(engine, "validate", validate)


def test_swa_is_chosen_when_better_with_its_batchnorm_recomputed(tiny_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, ws, tables, fold_of = setup(tiny_ws, "train.epochs=2", "train.swa={start: 0.5}")
    favour_swa(monkeypatch)
    out = tiny_ws / "run"
    result = fit_fold(FoldJob(cfg, tables, fold_of, 0, out, ws=ws))
    best = torch.load(out / "best.pt", weights_only=True)
    last = torch.load(out / "last.pt", weights_only=True)
    assert best["weights"] == "swa" and result.best_epoch == 1 and result.score == 2.0
    history = pd.read_csv(out / "history.csv")
    assert np.isnan(history["swa_metric"][0]) and history["swa_metric"][1] == 2.0  # averaged from epoch 2 on
    assert int(last["swa"]["n_averaged"]) == 1  # one epoch averaged: the SWA weights are that epoch's weights
    params = {k: v for k, v in last["model"].items() if "running" not in k and "num_batches" not in k}
    for key, value in params.items():
        assert torch.equal(best["model"][key], value), key
    # BatchNorm statistics: recomputed over the epoch's training batches (a cumulative mean), not the raw model's
    train_idx, val_idx = engine.split_indices(fold_of, 0)
    loader, _ = engine.build_loaders(cfg, tables, train_idx, val_idx, ws=ws, seed=cfg.train.seed + 0, progress=SILENT)
    model = build_model(cfg.model.model_copy(update={"pretrained": False}), tables.n_classes)
    model.load_state_dict(last["model"])
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    set_epoch(loader, 1)
    with torch.no_grad():
        for images, _ in loader:
            model(images.render("cpu"))  # the training batches as the engine renders them (augment.backend torch)
    state = model.state_dict()
    means = [k for k in state if k.endswith("running_mean")]
    assert means
    for key in means:
        assert torch.allclose(best["model"][key], state[key], atol=1e-5), key
        assert not torch.allclose(best["model"][key], last["model"][key], atol=1e-4), key


def test_raw_weights_stay_best_when_swa_is_worse(tiny_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, ws, tables, fold_of = setup(tiny_ws, "train.epochs=2", "train.swa={start: 0.5}", "train.checkpoint=best")
    real = engine.validate
    monkeypatch.setattr(engine, "validate", lambda *a, **k: [
        Candidate(c.weights, c.module, c.probs, c.val_loss, -1.0) if c.weights == "swa" else c for c in real(*a, **k)])
    fit_fold(FoldJob(cfg, tables, fold_of, 0, tiny_ws / "run", ws=ws))
    assert torch.load(tiny_ws / "run" / "best.pt", weights_only=True)["weights"] == "raw"


def test_swa_lr_and_resume_from_last(tiny_ws: Path) -> None:
    cfg, ws, tables, fold_of = setup(tiny_ws, "train.epochs=3", "train.swa={start: 0.34, lr: 0.0123}")
    whole = tiny_ws / "whole"
    fit_fold(FoldJob(cfg, tables, fold_of, 1, whole, ws=ws))
    history = pd.read_csv(whole / "history.csv")
    assert history["lr"][0] != pytest.approx(0.0123)
    assert history["lr"][1:].tolist() == pytest.approx([0.0123, 0.0123])  # constant from SWA's start (epoch 2)

    class Stop(Exception):
        pass

    def stop_after_second(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise Stop

    killed = tiny_ws / "killed"
    with pytest.raises(Stop):
        fit_fold(FoldJob(cfg, tables, fold_of, 1, killed, ws=ws), on_epoch=stop_after_second)
    fit_fold(FoldJob(cfg, tables, fold_of, 1, killed, ws=ws))  # resumes from last.pt (epoch 3 only)
    a = torch.load(whole / "last.pt", weights_only=True)
    b = torch.load(killed / "last.pt", weights_only=True)
    assert int(a["swa"]["n_averaged"]) == 2
    for key, value in a["swa"].items():
        assert torch.equal(value, b["swa"][key]), key
    pd.testing.assert_frame_equal(history.drop(columns="seconds"),
                                  pd.read_csv(killed / "history.csv").drop(columns="seconds"))


def test_progressive_resizing_trains_each_epoch_at_its_size(tiny_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, ws, tables, fold_of = setup(tiny_ws, "train.epochs=3", "image.schedule=[[0, 16], [1, 24], [2, [32, 28]]]")
    seen: list[tuple[bool, tuple[int, int]]] = []
    real = engine.build_parts

    def build_parts(*args, **kwargs):
        parts = real(*args, **kwargs)
        parts.model.register_forward_pre_hook(lambda m, inp: seen.append((m.training, tuple(inp[0].shape[-2:]))))
        return parts

    monkeypatch.setattr(engine, "build_parts", build_parts)
    fit_fold(FoldJob(cfg, tables, fold_of, 0, tiny_ws / "run", ws=ws))
    train_sizes = [size for training, size in seen if training]
    eval_sizes = {size for training, size in seen if not training}
    batches = len(train_sizes) // 3
    assert train_sizes == [(16, 16)] * batches + [(24, 24)] * batches + [(32, 28)] * batches
    assert eval_sizes == {(32, 32)}  # validation at image.size


def test_schedule_and_swa_are_checked(tiny_ws: Path) -> None:
    from comp.core.errors import CompError

    with pytest.raises(CompError, match="image.schedule must start at epoch 0"):
        load_config(tiny_ws, "baseline", ["image.schedule=[[1, 16]]"])
    with pytest.raises(CompError, match="train.swa.start"):
        load_config(tiny_ws, "baseline", ["train.swa={start: 1.5}"])
    plain = load_config(tiny_ws, "baseline")
    assert plain.train_hash() == load_config(tiny_ws, "baseline", ["train.swa=null"]).train_hash()
    assert plain.train_hash() != load_config(tiny_ws, "baseline", ["train.swa={start: 0.5}"]).train_hash()
