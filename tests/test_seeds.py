"""train.seeds: one resumable run per (fold, seed), seed-averaged OOF and predictions, the --seeds option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import f1_score
from typer.testing import CliRunner

import comp.train.engine as engine
import comp.train.fold_train as train
from comp.cli import app
from comp.core.config import load_config
from comp.core.progress import SILENT
from comp.train.fold_train import fold_train
from comp.core.layout import Layout

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEEDS = [7, 8]
FAST = ["folds.k=2", "train.epochs=1"]


def seeded(root: Path, *extra: str):
    return load_config(root, "baseline", [*FAST, f"train.seeds=[{','.join(map(str, SEEDS))}]", *extra])


def best(root: Path, fold: int, seed: int) -> dict:
    return torch.load(root / "experiments" / "baseline" / f"fold{fold}" / f"seed{seed}" / "best.pt", weights_only=True)


def test_each_fold_and_seed_is_a_run_and_oof_is_the_seed_mean(tiny_ws: Path) -> None:
    ws = Layout.at(tiny_ws)
    scores = fold_train(seeded(tiny_ws), ws, "baseline")
    exp = tiny_ws / "experiments" / "baseline"
    for fold in (0, 1):
        assert not (exp / f"fold{fold}" / "best.pt").exists()  # the single-seed layout is not used
        for seed in SEEDS:
            assert (exp / f"fold{fold}" / f"seed{seed}" / "last.pt").is_file()
    oof = pd.read_csv(exp / "oof.csv", dtype={"id": str})
    train_csv = pd.read_csv(tiny_ws / "data" / "train.csv", dtype={"id": str})
    assert oof["id"].tolist() == train_csv["id"].tolist()
    cols = ["p_c0", "p_c1", "p_c2"]
    code = {"c0": 0, "c1": 1, "c2": 2}
    per_seed = {}
    for seed in SEEDS:  # each seed's own OOF, read from its checkpoints
        frame = pd.concat([pd.DataFrame(best(tiny_ws, f, seed)["val_probs"].numpy(), columns=cols,
                                        index=best(tiny_ws, f, seed)["val_ids"]) for f in (0, 1)])
        per_seed[seed] = frame.loc[oof["id"]].to_numpy(np.float64)
    mean = np.mean(list(per_seed.values()), axis=0)
    assert np.allclose(oof[cols].to_numpy(), mean, atol=2e-6)
    y = oof["label"].map(code).to_numpy()
    assert scores["oof"] == pytest.approx(f1_score(y, mean.argmax(1), average="macro"))
    for seed in SEEDS:
        assert scores["seed_oof"][str(seed)] == pytest.approx(f1_score(y, per_seed[seed].argmax(1), average="macro"))
        for f in (0, 1):
            assert scores["seed_folds"][str(seed)][f] == pytest.approx(best(tiny_ws, f, seed)["score"])
    assert scores["seeds"] == SEEDS and scores["complete"] and scores["missing_runs"] == []
    # the seeds differ (their own seed), and each run's checkpoint names its seed's config
    assert not torch.equal(best(tiny_ws, 0, 7)["val_probs"], best(tiny_ws, 0, 8)["val_probs"])
    assert best(tiny_ws, 0, 7)["train_hash"] != best(tiny_ws, 0, 8)["train_hash"]
    on_disk = json.loads((exp / "scores.json").read_text())
    assert on_disk["seed_oof"] == {str(s): pytest.approx(v) for s, v in scores["seed_oof"].items()}


class Killed(Exception):
    pass


def test_a_killed_multi_seed_run_resumes_without_retraining_finished_seeds(tiny_ws: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ws, cfg = Layout.at(tiny_ws), seeded(tiny_ws)
    real_fit = train.fit_fold
    calls = {"n": 0}

    def fit_then_die(run_cfg, *args, **kwargs):
        result = real_fit(run_cfg, *args, **kwargs)
        calls["n"] += 1
        raise Killed  # the process dies right after fold 0's first seed finished

    monkeypatch.setattr(train, "fit_fold", fit_then_die)
    with pytest.raises(Killed):
        fold_train(cfg, ws, "baseline")
    first = tiny_ws / "experiments" / "baseline" / "fold0" / "seed7" / "best.pt"
    stamp = first.stat().st_mtime_ns
    assert not (tiny_ws / "experiments" / "baseline" / "fold0" / "seed8").exists()

    monkeypatch.setattr(train, "fit_fold", real_fit)
    trained = []
    real_epochs = engine.run_epochs

    def run_epochs(run_cfg, tables, fold, *args, **kwargs):
        trained.append((fold, run_cfg.train.seed))
        return real_epochs(run_cfg, tables, fold, *args, **kwargs)

    monkeypatch.setattr(engine, "run_epochs", run_epochs)
    scores = fold_train(cfg, ws, "baseline")
    assert trained == [(0, 8), (1, 7), (1, 8)]  # seed 7 of fold 0 is not trained again
    assert first.stat().st_mtime_ns == stamp
    assert scores["complete"] and set(scores["seed_folds"]["7"]) == {0, 1}


def test_seeds_option_predict_averages_every_seed(tiny_ws: Path) -> None:
    result = CliRunner().invoke(app, ["fold-train", "-w", str(tiny_ws), "--k", "2", "--seeds", "2",
                                      "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    exp = tiny_ws / "experiments" / "baseline"
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["train"]["seeds"] == [7, 8]  # train.seed (7 in the fixture), +1
    from comp.infer.predict import predict_experiment

    cfg = load_config(tiny_ws, "baseline", ["folds.k=2", "train.epochs=1", "train.seeds=[7,8]"])
    record = predict_experiment(cfg.model_copy(update={"tta": cfg.tta.model_copy(update={"transforms": "none"})}),
                                Layout.at(tiny_ws), "baseline")
    assert record["folds"] == ["0-seed7", "0-seed8", "1-seed7", "1-seed8"]
    fold0 = pd.read_csv(exp / "fold0" / "test.csv", dtype={"id": str})
    mean = pd.read_csv(exp / "test.csv", dtype={"id": str})
    fold1 = pd.read_csv(exp / "fold1" / "test.csv", dtype={"id": str})
    cols = ["p_c0", "p_c1", "p_c2"]
    assert np.allclose(mean[cols], (fold0[cols].to_numpy() + fold1[cols].to_numpy()) / 2, atol=2e-6)
    # fold 0's table is the mean of its two seed models (each predicted here without comp's predict loop)
    from comp.infer.predict import load_fold_model, training_config
    from comp.train.seeds import checkpoint_hashes

    ws = Layout.at(tiny_ws)
    trained, recorded = training_config(ws, "baseline", cfg)
    hashes = checkpoint_hashes(ws, "baseline", ["0-seed7", "0-seed8"], recorded)
    from comp.data.tables import load_tables
    from comp.infer.predict import _loader

    tables = load_tables(trained, ws, check_images=False)
    loader = _loader(tables.test, np.arange(len(tables.test)), trained, ws, SILENT)
    probs = []
    for seed in (7, 8):
        model = load_fold_model(exp / "fold0" / f"seed{seed}" / "best.pt", trained, tables.classes,
                                train_hash=hashes[f"0-seed{seed}"])
        with torch.no_grad():
            probs.append(torch.cat([torch.softmax(model(x), 1) for x, _ in loader]).numpy())
    assert np.allclose(fold0[cols], np.mean(probs, axis=0), atol=2e-6)
    # the export bundle carries every seed of every fold
    from comp.export.members import member_spec

    bundle = tiny_ws / "bundle"
    bundle.mkdir()
    spec = member_spec(cfg, ws, "baseline", tables.classes, bundle)
    assert spec["folds"] == ["0-seed7", "0-seed8", "1-seed7", "1-seed8"]
    assert sorted(p.name for p in bundle.glob("*.safetensors")) == [
        f"baseline.fold{f}-seed{s}.safetensors" for f in (0, 1) for s in (7, 8)]


def test_tta_auto_scores_a_multi_seed_experiment_as_predict_averages_its_seeds(tiny_ws: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["fold-train", "-w", str(tiny_ws), "--k", "2", "--seeds", "2", "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", "-w", str(tiny_ws), "--tta", "auto", "--set", "folds.k=2",
                                 "--set", "train.epochs=1", "--set", "train.seeds=[7,8]"])
    assert result.exit_code == 0, result.output
    exp = tiny_ws / "experiments" / "baseline"
    record = json.loads((exp / "predict.json").read_text())
    chosen = record["tta_auto"]["chosen"]
    assert record["folds"] == ["0-seed7", "0-seed8", "1-seed7", "1-seed8"]
    # the chosen candidate's OOF score is the score of oof_tta.csv, which predict made from both seeds of each fold
    oof = pd.read_csv(exp / "oof_tta.csv", dtype={"id": str, "label": str})
    from sklearn.metrics import f1_score

    pred = np.array(["c0", "c1", "c2"])[oof[["p_c0", "p_c1", "p_c2"]].to_numpy().argmax(axis=1)]
    got = f1_score(oof["label"], pred, labels=["c0", "c1", "c2"], average="macro", zero_division=0)
    assert abs(record["tta_auto"]["scores"][chosen] - got) < 1e-9
