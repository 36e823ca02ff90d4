"""`comp fold-train` end to end through the CLI: artifacts, skipping finished folds, refusals, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

import comp.train.engine as engine
import comp.train.fold_train as train
from comp.cli import app
from comp.core.config import load_config
from comp.train.fold_train import fold_train
from comp.core.layout import Layout

runner = CliRunner()
SCORE_KEYS = {"metric", "folds", "mean", "std", "oof", "k", "best_epochs", "minutes", "train_hash"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(root: Path, *args: str):
    return runner.invoke(app, ["fold-train", "-w", str(root), *args])


def count_fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the folds that actually train (not those returned as finished)."""
    trained: list[int] = []
    real = engine.run_epochs

    def run_epochs(cfg, tables, fold, *args, **kwargs):
        trained.append(fold)
        return real(cfg, tables, fold, *args, **kwargs)

    monkeypatch.setattr(engine, "run_epochs", run_epochs)
    return trained


def test_fold_train_k2_writes_every_artifact(tiny_ws: Path) -> None:
    result = cli(tiny_ws, "--k", "2")
    assert result.exit_code == 0, result.output
    assert "CV macro_f1:" in result.output and "OOF macro_f1:" in result.output and "kept epoch" in result.output
    assert "honest CV macro_f1:" in result.output and "train.checkpoint=last" in result.output
    exp = tiny_ws / "experiments" / "baseline"
    train_csv = pd.read_csv(tiny_ws / "data" / "train.csv", dtype={"id": str})
    folds = pd.read_csv(tiny_ws / "folds" / "k2-s42.csv", dtype={"id": str})
    oof = pd.read_csv(exp / "oof.csv", dtype={"id": str})
    assert list(oof.columns) == ["id", "fold", "label", "p_c0", "p_c1", "p_c2"]
    assert sorted(oof["id"]) == sorted(train_csv["id"]) and oof["id"].is_unique
    assert oof["id"].tolist() == train_csv["id"].tolist()  # train.csv order
    assert dict(zip(oof["id"], oof["fold"])) == dict(zip(folds["id"], folds["fold"]))
    assert np.allclose(oof.filter(like="p_").sum(axis=1), 1.0, atol=1e-4)
    assert (oof["label"] == train_csv["label"]).all()
    scores = json.loads((exp / "scores.json").read_text())
    assert SCORE_KEYS <= set(scores) and scores["k"] == 2 and scores["metric"] == "macro_f1"
    assert set(scores["folds"]) == {"0", "1"} and scores["complete"] and scores["oof_rows"] == len(train_csv)
    assert scores["mean"] == pytest.approx(np.mean(list(scores["folds"].values())))
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["train_hash"] == scores["train_hash"] and config["folds"]["k"] == 2
    for fold in (0, 1):
        best = torch.load(exp / f"fold{fold}" / "best.pt", weights_only=True)
        assert best["fold"] == fold and best["train_hash"] == scores["train_hash"]
        assert best["score"] == scores["folds"][str(fold)] and best["epoch"] + 1 == scores["best_epochs"][str(fold)]
        history = pd.read_csv(exp / f"fold{fold}" / "history.csv")
        assert list(history.columns) == ["epoch", "train_loss", "val_loss", "metric", "lr", "seconds"]
    report = (exp / "report.html").read_text()
    assert "Fold training" in report and 'alt="OOF confusion matrix"' in report and 'alt="per-class precision/recall/F1"' in report
    assert (exp / "report" / "train-curves.png").stat().st_size > 1000


def test_rerun_skips_finished_folds_and_resumes_an_interrupted_one(tiny_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill during fold 1 (after its first epoch); the rerun trains only fold 1, from epoch 2."""
    cfg = load_config(tiny_ws, "baseline", ["folds.k=2"])
    ws = Layout.at(tiny_ws)
    real_fit = engine.fit_fold

    def killed_in_fold_1(job, **kw):
        def on_epoch(epoch: int, info: dict) -> None:
            if job.fold == 1:
                raise KeyboardInterrupt

        return real_fit(job, **{**kw, "on_epoch": on_epoch})

    monkeypatch.setattr(train, "fit_fold", killed_in_fold_1)
    with pytest.raises(KeyboardInterrupt):
        fold_train(cfg, ws, "baseline")
    monkeypatch.setattr(train, "fit_fold", real_fit)
    stamp = ws.best_ckpt("baseline", 0).stat().st_mtime_ns
    assert torch.load(ws.last_ckpt("baseline", 1), weights_only=True)["next_epoch"] == 1
    trained = count_fits(monkeypatch)
    result = cli(tiny_ws, "--k", "2")
    assert result.exit_code == 0, result.output
    assert trained == [1] and "fold 1 epoch 2/2" in result.output and "fold 1 epoch 1/2" not in result.output
    assert ws.best_ckpt("baseline", 0).stat().st_mtime_ns == stamp
    assert len(pd.read_csv(ws.oof_csv("baseline"))) == 36
    trained.clear()
    assert cli(tiny_ws, "--k", "2").exit_code == 0 and trained == []


def test_fold_subsets_write_what_exists_and_say_so(tiny_ws: Path) -> None:
    result = cli(tiny_ws, "--k", "2", "--fold", "1")
    assert result.exit_code == 0, result.output
    assert "folds not trained yet: [0]" in result.output
    scores = json.loads((tiny_ws / "experiments" / "baseline" / "scores.json").read_text())
    assert not scores["complete"] and scores["missing_folds"] == [0] and list(scores["folds"]) == ["1"]
    oof = pd.read_csv(tiny_ws / "experiments" / "baseline" / "oof.csv")
    assert set(oof["fold"]) == {1} and len(oof) == scores["oof_rows"] < 36
    assert cli(tiny_ws, "--k", "2", "--fold", "0").exit_code == 0
    scores = json.loads((tiny_ws / "experiments" / "baseline" / "scores.json").read_text())
    assert scores["complete"] and scores["oof_rows"] == 36


def test_changed_config_is_refused_unless_forced(tiny_ws: Path) -> None:
    assert cli(tiny_ws, "--k", "2", "--set", "train.epochs=1").exit_code == 0
    refused = cli(tiny_ws, "--k", "2", "--set", "train.epochs=1", "--set", "train.lr=0.001")
    assert refused.exit_code == 2
    assert "was trained with another config" in refused.output and "use a new experiment name" in refused.output
    assert "--force" in refused.output
    forced = cli(tiny_ws, "--k", "2", "--set", "train.epochs=1", "--set", "train.lr=0.001", "--force")
    assert forced.exit_code == 0, forced.output
    scores = json.loads((tiny_ws / "experiments" / "baseline" / "scores.json").read_text())
    assert scores["train_hash"] == load_config(tiny_ws, "baseline", ["folds.k=2", "train.epochs=1", "train.lr=0.001"]).train_hash()


def test_same_seed_gives_identical_oof_bytes(make_ws) -> None:
    a, b = make_ws("a"), make_ws("b")
    for root in (a, b):
        assert cli(root, "--k", "2", "--set", "augment.preset=medium").exit_code == 0
    oof_a = (a / "experiments" / "baseline" / "oof.csv").read_bytes()
    assert oof_a == (b / "experiments" / "baseline" / "oof.csv").read_bytes()
    assert cli(a, "--k", "2", "--set", "augment.preset=medium", "--set", "train.seed=8", "-e", "baseline",
               "--force").exit_code == 0
    assert (a / "experiments" / "baseline" / "oof.csv").read_bytes() != oof_a


def test_bad_fold_arguments_and_nan_loss_are_clear_errors(tiny_ws: Path) -> None:
    out = cli(tiny_ws, "--k", "2", "--fold", "3")
    assert out.exit_code == 2 and "fold 3 does not exist with k=2 (folds are 0..1)" in out.output
    out = cli(tiny_ws, "--k", "2", "--fold", "zero")
    assert out.exit_code == 2 and "--folds takes 'all' or fold numbers" in out.output and "'zero'" in out.output
    out = cli(tiny_ws, "--k", "2", "--set", "train.lr=1e30", "--set", "train.epochs=1")
    assert out.exit_code == 2 and "training loss became nan" in out.output and "Lower train.lr" in out.output
