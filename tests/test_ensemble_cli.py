"""predict -> ensemble -> evaluate -> leaderboard through the CLI on tiny workspaces.

Fast tests use fold checkpoints written by a fixture (build_model + torch.save, in the engine's
checkpoint format); the last test trains both experiments for real with `comp fold-train`
(about 4 s on an idle 2-core machine, ~45 s when it is shared).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from comp.cli import app
from comp.core.config import load_config
from comp.data.tables import load_tables
from comp.model.factory import build_model
from comp.infer.predictions import prediction_record, stale_reason
from comp.core.layout import Layout, read_json, write_csv
from conftest import TINY_EXPERIMENT, write_fake_best

runner = CliRunner()
K = 2


def invoke(ws: Path, *args: str):
    return runner.invoke(app, [*args, "--workspace", str(ws)])


def fake_experiment(ws_root: Path, exp: str, *, skill: float, seed: int, tta: str = "hflip") -> None:
    """config.yaml, fold{i}/best.pt (random weights) and an oof.csv whose quality is `skill`."""
    spec = {**TINY_EXPERIMENT, "tta": {"transforms": tta}}
    (ws_root / "experiments" / f"{exp}.yaml").write_text(yaml.safe_dump(spec))
    ws, cfg = Layout.at(ws_root), load_config(ws_root, exp, [f"folds.k={K}"])
    ws.write_config(exp, cfg)
    tables = load_tables(cfg, ws, check_images=False)
    names = [str(c) for c in tables.classes]
    fold = pd.factorize(tables.train["group"])[0] % K
    for f in range(K):
        torch.manual_seed(seed + f)
        model = build_model(cfg.model.model_copy(update={"pretrained": False}), len(names))
        write_fake_best(ws, exp, f, cfg, model, names)
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1, (len(tables.train), len(names)))
    z[np.arange(len(z)), tables.train["y"].to_numpy()] += skill
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    oof = pd.DataFrame({"id": tables.train["id"], "fold": fold, "label": tables.train["label"]})
    oof[[f"p_{c}" for c in names]] = p
    write_csv(ws.oof_csv(exp), oof)


@pytest.fixture
def two_members(tiny_ws: Path) -> Path:
    fake_experiment(tiny_ws, "good", skill=4.0, seed=1)
    fake_experiment(tiny_ws, "noise", skill=0.0, seed=2, tta="flip")
    return tiny_ws


def test_ensemble_predicts_missing_members_and_writes_a_valid_submission(two_members):
    ws = Layout.at(two_members)
    result = invoke(two_members, "ensemble", "-e", "good", "-e", "noise", "--name", "blend", "--bias")
    assert result.exit_code == 0, result.output
    assert "nested" in result.output
    for exp in ("good", "noise"):
        assert ws.test_probs_csv(exp).is_file() and all(ws.test_probs_csv(exp, f).is_file() for f in range(K))
    manifest = read_json(ws.submission_json("blend"))
    assert manifest["members"] == ["good", "noise"] and manifest["weights"][0] > manifest["weights"][1]
    assert manifest["config_hashes"]["noise"]["tta"] == "flip" and manifest["tta"] == {"good": "hflip", "noise": "flip"}
    assert manifest["oof_source"] == {"good": "tta", "noise": "tta"}
    sub = pd.read_csv(ws.submission_csv("blend"))
    sample = pd.read_csv(two_members / "data" / "sample_submission.csv")
    assert sub.columns.tolist() == ["ImageID", "ans"] and sub["ImageID"].tolist() == sample["ImageID"].tolist()
    assert set(sub["ans"]) <= {"c0", "c1", "c2"}

    scored = invoke(two_members, "evaluate", str(ws.submission_csv("blend")), "--solution", str(two_members / "solution.csv"))
    assert scored.exit_code == 0 and "macro_f1 =" in scored.output

    recorded = invoke(two_members, "leaderboard", "--record", "blend", "--lb", "0.61")
    assert recorded.exit_code == 0, recorded.output
    assert read_json(ws.leaderboard_json)["blend"]["lb"] == 0.61
    assert 'alt="CV vs leaderboard"' in ws.report_html("good").read_text()
    board = invoke(two_members, "leaderboard")
    assert board.exit_code == 0 and "blend" in board.output and "good" in board.output


def is_stale(ws: Layout, exp: str, *, tta: str = "hflip", oof: bool = False) -> bool:
    reason = stale_reason(prediction_record(ws, exp), tta=tta, merge="mean", oof=oof, ckpts=ws.fold_checkpoints(exp))
    return reason is not None


def test_predictions_go_stale_with_newer_checkpoints_or_other_tta(two_members):
    ws = Layout.at(two_members)
    assert invoke(two_members, "predict", "-e", "good", "--oof").exit_code == 0
    assert not is_stale(ws, "good", oof=True)
    assert is_stale(ws, "good", tta="d4")
    oof, tta = pd.read_csv(ws.oof_csv("good")), pd.read_csv(ws.exp_dir("good") / "oof_tta.csv")
    assert tta[["id", "fold", "label"]].equals(oof[["id", "fold", "label"]])
    assert np.allclose(tta.filter(like="p_").sum(axis=1), 1.0, atol=1e-5)
    ckpt = ws.fold_checkpoints("good")[0]
    later = time.time() + 5
    os.utime(ckpt, (later, later))
    assert not is_stale(ws, "good", oof=True)  # a new mtime alone (a copy): the same bytes, judged by content
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert is_stale(ws, "good")


def test_a_kill_between_predict_writes_leaves_nothing_trusted(two_members, monkeypatch):
    """predict.json is the commit point: new files under the old record are stale, never used as fresh."""
    import comp.infer.predictions as predictions

    ws = Layout.at(two_members)
    assert invoke(two_members, "predict", "-e", "good", "--tta", "none").exit_code == 0
    old_record = ws.predict_json("good").read_bytes()

    def killed(path, obj):
        raise KeyboardInterrupt("killed after the tables, before predict.json")

    monkeypatch.setattr(predictions, "write_json", killed)
    assert invoke(two_members, "predict", "-e", "good", "--tta", "ten_crop").exit_code != 0
    monkeypatch.undo()
    assert ws.predict_json("good").read_bytes() == old_record  # the old record stayed...
    assert prediction_record(ws, "good") is None  # ...but no longer matches the files: nothing is trusted
    result = invoke(two_members, "ensemble", "-e", "good", "--tta", "none", "--name", "after-kill")
    assert result.exit_code == 0, result.output
    assert "because it has no complete predictions" in result.output
    assert prediction_record(ws, "good")["tta"] == "none"


def test_ensemble_uses_the_tta_the_user_chose_and_scores_oof_made_the_same_way(two_members):
    ws = Layout.at(two_members)
    assert invoke(two_members, "predict", "-e", "good", "--tta", "none").exit_code == 0
    before = ws.test_probs_csv("good").read_bytes()
    result = invoke(two_members, "ensemble", "-e", "good", "--name", "plain")
    assert result.exit_code == 0, result.output
    assert "predictions on disk are current" in result.output
    assert ws.test_probs_csv("good").read_bytes() == before  # not re-predicted with the experiment's hflip
    manifest = read_json(ws.submission_json("plain"))
    assert manifest["tta"] == {"good": "none"} and manifest["oof_source"] == {"good": "plain"}

    assert invoke(two_members, "predict", "-e", "good", "--tta", "flip").exit_code == 0  # test only, no --oof
    refused = invoke(two_members, "ensemble", "-e", "good", "--name", "x", "--oof-source", "plain")
    assert refused.exit_code == 2 and "would not be the CV of the submission" in refused.output
    result = invoke(two_members, "ensemble", "-e", "good", "--name", "flipped")
    assert result.exit_code == 0, result.output
    assert "TTA flip (recorded in predict.json) and its OOF rows" in result.output
    manifest = read_json(ws.submission_json("flipped"))
    assert manifest["tta"] == {"good": "flip"} and manifest["oof_source"] == {"good": "tta"}
    # the reported score is the metric of the OOF re-predicted with flip, computed here by hand
    from sklearn.metrics import f1_score

    oof_tta = pd.read_csv(ws.oof_tta_csv("good"), dtype={"id": str, "label": str})
    cols = [c for c in oof_tta.columns if c.startswith("p_")]
    pred = np.array([c[2:] for c in cols])[oof_tta[cols].to_numpy().argmax(axis=1)]
    assert manifest["oof"] == pytest.approx(f1_score(oof_tta["label"], pred, average="macro"))
    assert prediction_record(ws, "good")["tta"] == "flip"


def test_predict_refuses_a_checkpoint_of_another_config(two_members):
    ws = Layout.at(two_members)
    path = ws.best_ckpt("good", 1)
    ckpt = torch.load(path, weights_only=True)
    torch.save({**ckpt, "train_hash": "0123456789abcdef"}, path)
    result = invoke(two_members, "predict", "-e", "good")
    assert result.exit_code == 2
    assert "trained with config 0123456789abcdef" in result.output


def test_ensemble_and_leaderboard_errors(two_members):
    bad = invoke(two_members, "ensemble", "-e", "good", "--method", "median")
    assert bad.exit_code == 2 and "--method must be one of" in bad.output
    weights = invoke(two_members, "ensemble", "-e", "good", "-e", "noise", "--weights", "1,2,3")
    assert weights.exit_code == 2 and "3 numbers for 2 members" in weights.output
    missing = invoke(two_members, "ensemble", "-e", "good", "--oof-source", "tta", "--name", "x")
    assert missing.exit_code == 0, missing.output  # stale members are re-predicted with --oof first
    record = invoke(two_members, "leaderboard", "--record", "nope", "--lb", "0.5")
    assert record.exit_code == 2 and "no submission 'nope'" in record.output


def test_end_to_end_with_real_training(tiny_ws):
    spec = {**TINY_EXPERIMENT, "tta": {"transforms": "flip"}, "train": {**TINY_EXPERIMENT["train"], "seed": 11}}
    (tiny_ws / "experiments" / "second.yaml").write_text(yaml.safe_dump(spec))
    for exp in ("baseline", "second"):
        trained = invoke(tiny_ws, "fold-train", "--k", str(K), "-e", exp)
        assert trained.exit_code == 0, trained.output
    result = invoke(tiny_ws, "ensemble", "-e", "baseline", "-e", "second", "--name", "final", "--oof-source", "tta")
    assert result.exit_code == 0, result.output
    scored = invoke(tiny_ws, "evaluate", str(tiny_ws / "submissions" / "final.csv"), "--solution", str(tiny_ws / "solution.csv"))
    assert scored.exit_code == 0 and "macro_f1 =" in scored.output
    manifest = read_json(tiny_ws / "submissions" / "final.json")
    assert manifest["nested"] <= manifest["insample_fold_mean"] + 1e-9


def test_leaderboard_rows_and_record_errors(tmp_path):
    from comp.core.errors import CompError
    from comp.blend.leaderboard import experiment_rows, record_lb, submission_rows
    from comp.core.layout import write_json, write_yaml

    ws = Layout.at(tmp_path)
    write_yaml(ws.config_yaml("a"), {"model": {"name": "m"}, "image": {"size": 64}, "train": {"epochs": 3}, "folds": {"k": 2}})
    write_json(ws.scores_json("a"), {"mean": 0.8, "std": 0.1, "oof": 0.79, "minutes": {"0": 1.5, "1": 2.0}})
    rows = experiment_rows(ws)
    row = rows.iloc[0].to_dict()
    assert np.isnan(row.pop("best_on_fold"))  # no epoch selection recorded
    assert row == {"experiment": "a", "model": "m", "image": "64", "epochs": 3, "folds": "0/2", "partial": True,
                   "cv_mean": 0.8, "cv_std": 0.1, "honest": 0.8, "cv_minus_honest": 0.0, "oof": 0.79, "minutes": 3.5}
    write_json(ws.submission_json("s"), {"members": ["a"], "method": "mean", "oof": 0.8, "nested": 0.78})
    with pytest.raises(CompError, match="finite"):
        record_lb(ws, "s", float("nan"))
    with pytest.raises(CompError, match="did you mean s"):
        record_lb(ws, "s1", 0.7)
    record_lb(ws, "s", 0.75)
    assert submission_rows(ws).iloc[0]["lb"] == 0.75
