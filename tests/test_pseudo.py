"""`comp pseudo`: per-fold pseudo labels from the members' fold models, added to training rows only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

import comp.train.fold_train as train
from comp.cli import app
from comp.core.config import load_config
from comp.train.engine import TRAIN_ONLY, UNUSED
from comp.core.errors import CompError
from comp.api.workflows import ensemble
from comp.infer.predictions import sha256
from comp.recipes.pseudo import make_pseudo
from comp.recipes.inputs import experiment_recipes
from comp.train.fold_train import fold_train as fold_train_only
from comp.core.layout import Layout

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["folds.k=2", "train.epochs=1"]
COLS = ["p_c0", "p_c1", "p_c2"]


def fold_train(cfg, ws, exp, **kwargs):
    """fold_train with the experiment's recipes handed in, as comp.api.workflows does."""
    return fold_train_only(cfg, ws, exp, recipes=experiment_recipes(cfg, ws, exp), **kwargs)


@pytest.fixture
def submitted(tiny_ws: Path) -> Path:
    """baseline trained on 2 folds, predicted without TTA, and submitted as `sub`."""
    ws = Layout.at(tiny_ws)
    fold_train(load_config(tiny_ws, "baseline", FAST), ws, "baseline")
    (tiny_ws / "experiments" / "baseline.yaml").write_text(yaml.safe_dump(
        {**yaml.safe_load((tiny_ws / "experiments" / "baseline.yaml").read_text()), "folds": {"k": 2},
         "tta": {"transforms": "none"}}))
    ensemble(ws, ["baseline"], name="sub", weights="equal", overrides=["train.epochs=1"])
    return tiny_ws


def test_pseudo_rows_come_from_each_folds_own_models_and_never_validate(submitted: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root, ws = submitted, Layout.at(submitted)
    result = CliRunner().invoke(app, ["pseudo", "-w", str(root), "--from", "sub", "--threshold", "0.4", "-e", "pl"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(root / "experiments" / "pl" / "pseudo.csv", dtype={"id": str, "label": str})
    assert set(table["fold"]) <= {0, 1} and len(table)
    for fold in (0, 1):  # fold f's labels: the argmax of the member's fold-f model, rows above the threshold
        member = pd.read_csv(root / "experiments" / "baseline" / f"fold{fold}" / "test.csv", dtype={"id": str})
        probs = member[COLS].to_numpy()
        keep = probs.max(axis=1) >= 0.4
        mine = table[table["fold"] == fold]
        assert mine["id"].tolist() == member["id"][keep].tolist()
        assert mine["label"].tolist() == [COLS[i][2:] for i in probs[keep].argmax(axis=1)]
    layer = yaml.safe_load((root / "experiments" / "pl.yaml").read_text())
    assert layer["pseudo"] == {"source": "sub", "sha256": sha256(root / "submissions" / "sub.csv"), "threshold": 0.4,
                               "soft": False, "table_sha256": sha256(root / "experiments" / "pl" / "pseudo.csv")}
    assert layer["model"]["name"] == "test_resnet"  # the base experiment's settings

    seen = []
    real = train.fit_fold

    def fit_fold(job, **kwargs):
        seen.append((job.fold, job.tables.train.copy(), np.asarray(job.fold_of).copy()))
        return real(job, **kwargs)

    monkeypatch.setattr(train, "fit_fold", fit_fold)
    scores = fold_train(load_config(root, "pl", ["train.epochs=1"]), ws, "pl")
    train_ids = set(pd.read_csv(root / "data" / "train.csv", dtype={"id": str})["id"])
    for fold, frame, fold_of in seen:
        pseudo = frame["id"].str.startswith("pseudo:").to_numpy()
        assert not np.any(fold_of[pseudo] == fold)  # never a validation row
        assert set(fold_of[pseudo]) <= {TRAIN_ONLY, UNUSED} and set(fold_of[~pseudo]) <= {0, 1}
        kept = table[table["fold"] == fold]
        trained = frame[pseudo & (fold_of == TRAIN_ONLY)]
        assert sorted(trained["id"].str.removeprefix("pseudo:")) == sorted(kept["id"])
        assert dict(zip(trained["id"].str.removeprefix("pseudo:"), trained["label"])) == dict(zip(kept["id"], kept["label"]))
        best = torch.load(root / "experiments" / "pl" / f"fold{fold}" / "best.pt", weights_only=True)
        assert set(best["val_ids"]) <= train_ids  # validated on labelled rows only
    oof = pd.read_csv(root / "experiments" / "pl" / "oof.csv", dtype={"id": str})
    assert set(oof["id"]) == train_ids
    recorded = json.loads((root / "experiments" / "pl" / "scores.json").read_text())["pseudo"]
    assert recorded["source"] == "sub" and recorded["sha256"] == layer["pseudo"]["sha256"]
    assert recorded["threshold"] == 0.4
    counts = {str(f): g["label"].value_counts().to_dict() for f, g in table.groupby("fold")}
    assert recorded["kept_per_class"] == counts and scores["pseudo"] == recorded
    config = yaml.safe_load((root / "experiments" / "pl" / "config.yaml").read_text())
    assert config["pseudo"]["source"] == "sub"


def test_soft_labels_are_the_blended_probabilities(submitted: Path) -> None:
    from comp.data.tables import load_tables
    from comp.recipes.inputs import fold_inputs

    ws = Layout.at(submitted)
    make_pseudo(ws, "sub", "soft", threshold=0.0, soft=True)
    cfg = load_config(submitted, "soft")
    tables = load_tables(cfg, ws, check_images=False)
    fold_of = np.resize([0, 1], len(tables.train))
    ext, ext_fold_of, targets = fold_inputs(cfg, ws, "soft", tables, fold_of, 1)
    member = pd.read_csv(submitted / "experiments" / "baseline" / "fold1" / "test.csv", dtype={"id": str})
    rows = [list(ext.train["id"]).index("pseudo:" + i) for i in member["id"]]
    assert np.allclose(targets.soft[rows], member[COLS].to_numpy(), atol=1e-6)
    real = np.arange(len(tables.train))
    assert np.array_equal(targets.soft[real].argmax(1), tables.train["y"].to_numpy())
    assert np.all(ext_fold_of[rows] == TRAIN_ONLY)


def test_refusals(submitted: Path) -> None:
    ws = Layout.at(submitted)
    labels = submitted / "labels.csv"
    pd.read_csv(submitted / "submissions" / "sub.csv").to_csv(labels, index=False)  # kind: label, no probabilities
    with pytest.raises(CompError, match="labels without probabilities"):
        make_pseudo(ws, str(labels), "x", threshold=0.9, soft=False)
    with pytest.raises(CompError, match="labels without probabilities"):
        make_pseudo(ws, str(labels), "x", threshold=0.0, soft=True)
    done = make_pseudo(ws, str(labels), "hard", threshold=0.0, soft=False)  # hard labels only: accepted
    assert done["rows_per_fold"] == {"-1": 9}
    with pytest.raises(CompError, match="--threshold"):
        make_pseudo(ws, "sub", "y", threshold=1.5, soft=False)
    make_pseudo(ws, "sub", "z", threshold=0.0, soft=False)
    with pytest.raises(CompError, match="exists"):
        make_pseudo(ws, "sub", "z", threshold=0.0, soft=False)
    (submitted / "experiments" / "z" / "pseudo.csv").write_text("id,path,fold,label,confidence\n")
    with pytest.raises(CompError, match="differs from the table"):
        fold_train(load_config(submitted, "z", ["train.epochs=1"]), ws, "z")


def test_fold_train_refuses_a_pseudo_experiment_without_its_recipes(tiny_ws: Path) -> None:
    """fold-train never imports the recipes: called without them on an experiment that sets pseudo, it says so
    instead of silently training without the pseudo rows."""
    (tiny_ws / "experiments" / "pl.yaml").write_text("pseudo: {source: sub, sha256: abc}\n")
    cfg = load_config(tiny_ws, "pl", ["train.epochs=1"])
    with pytest.raises(CompError, match="sets pseudo or train.distill.*experiment_recipes"):
        fold_train_only(cfg, Layout.at(tiny_ws), "pl")
    assert not (tiny_ws / "experiments" / "pl").exists()  # refused before anything was written
