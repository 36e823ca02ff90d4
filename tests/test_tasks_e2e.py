"""Each task kind end to end through the CLI on tiny real images: init -> folds -> fold-train -> predict ->
ensemble -> evaluate. The scores comp records and prints are recomputed here with scikit-learn from the
files comp wrote (OOF table, submission, hidden solution), and the submission's format is checked against
the sample submission."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import f1_score, roc_auc_score
from typer.testing import CliRunner

from comp.cli import app

from task_data import TAGS, build_task_workspace
from test_init import build_mask

runner = CliRunner()


def cli(*args) -> str:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, f"comp {' '.join(map(str, args))}\n{r.output}"
    return r.output


def init_from_csv(tmp_path: Path, kind: str) -> Path:
    root = build_task_workspace(tmp_path / kind, kind, subjects=20, n_test=10)
    (root / "comp.yaml").unlink()
    out = cli("init", root / "data" / "train.csv", "--test", root / "data" / "test.csv",
              "--sample", root / "data" / "sample_submission.csv", "--workspace", root)
    assert f"task: {kind}" in out
    comp = yaml.safe_load((root / "comp.yaml").read_text())
    comp["folds"] = {"k": 2, "seed": 0}  # a tiny table: two folds
    (root / "comp.yaml").write_text(yaml.safe_dump(comp, sort_keys=False))
    return root


def run_stages(root: Path) -> tuple[dict, float, pd.DataFrame, pd.DataFrame]:
    """folds -> fold-train -> predict -> ensemble -> evaluate; (scores.json, printed score, oof, submission)."""
    cli("folds", "-w", root)
    cli("fold-train", "-w", root)
    cli("predict", "-w", root)
    cli("ensemble", "-e", "baseline", "--name", "sub", "-w", root)
    out = cli("evaluate", root / "submissions" / "sub.csv", "--solution", root / "solution.csv", "-w", root)
    printed = float(re.search(r"= (-?[\d.]+(?:e-?\d+)?)", out).group(1))
    scores = json.loads((root / "experiments" / "baseline" / "scores.json").read_text())
    oof = pd.read_csv(root / "experiments" / "baseline" / "oof.csv", dtype={"id": str})
    sub = pd.read_csv(root / "submissions" / "sub.csv", dtype={"ImageID": str}, keep_default_na=False)
    return scores, printed, oof, sub


def check_format(root: Path, sub: pd.DataFrame, sample_csv: Path, id_col: str = "ImageID") -> pd.DataFrame:
    """Columns and ids exactly as the sample's; the solution joined in the submission's order."""
    sample = pd.read_csv(sample_csv, dtype=str, keep_default_na=False)
    assert list(sub.columns) == list(sample.columns)
    assert sub[id_col].tolist() == sample[id_col].tolist()
    solution = pd.read_csv(root / "solution.csv", dtype={id_col: str}, keep_default_na=False)
    return solution.set_index(id_col).loc[sub[id_col]].reset_index()


def by_id(oof: pd.DataFrame, root: Path) -> pd.DataFrame:
    train = pd.read_csv(root / "data" / "train.csv", dtype={"id": str}, keep_default_na=False)
    assert sorted(oof["id"]) == sorted(train["id"])  # every training row predicted out of fold once
    return train.set_index("id").loc[oof["id"]].reset_index()


def tag_matrix(values) -> np.ndarray:
    return np.array([[t in str(v).split() for t in TAGS] for v in values], dtype=bool)


def test_multilabel_end_to_end(tmp_path):
    root = init_from_csv(tmp_path, "multilabel")
    scores, printed, oof, sub = run_stages(root)
    truth = tag_matrix(by_id(oof, root)["tags"])
    probs = oof[[f"p_{t}" for t in TAGS]].to_numpy()
    assert scores["metric"] == "micro_f1"
    assert scores["oof"] == pytest.approx(f1_score(truth, probs >= 0.5, average="micro", zero_division=0))
    solution = check_format(root, sub, root / "data" / "sample_submission.csv")
    assert all(set(v.split()) <= set(TAGS) for v in sub["ans"])  # tags from the tag set, space-separated
    expected = f1_score(tag_matrix(solution["ans"]), tag_matrix(sub["ans"]), average="micro", zero_division=0)
    assert printed == pytest.approx(expected, abs=1e-5)


def test_binary_end_to_end(tmp_path):
    root = init_from_csv(tmp_path, "binary")
    scores, printed, oof, sub = run_stages(root)
    truth = by_id(oof, root)["label"] == "yes"
    assert scores["metric"] == "roc_auc"
    assert scores["oof"] == pytest.approx(roc_auc_score(truth, oof["p_yes"]))
    solution = check_format(root, sub, root / "data" / "sample_submission.csv")
    probs = sub["ans"].astype(float)
    assert probs.between(0, 1).all()  # the positive's probability
    assert printed == pytest.approx(roc_auc_score(solution["ans"] == "yes", probs), abs=1e-5)


def test_regression_end_to_end(tmp_path):
    root = init_from_csv(tmp_path, "regression")
    scores, printed, oof, sub = run_stages(root)
    truth = by_id(oof, root)["target"].astype(float).to_numpy()
    assert scores["metric"] == "rmse" and scores["greater_is_better"] is False
    assert scores["oof"] == pytest.approx(np.sqrt(np.mean((truth - oof["p_target"].to_numpy()) ** 2)), rel=1e-4)
    solution = check_format(root, sub, root / "data" / "sample_submission.csv")
    values = sub["ans"].astype(float).to_numpy()
    assert np.isfinite(values).all()
    expected = np.sqrt(np.mean((solution["ans"].astype(float).to_numpy() - values) ** 2))
    assert printed == pytest.approx(expected, rel=1e-4)


def test_multitask_end_to_end_from_the_mask_layout_with_heads(tmp_path):
    ws = tmp_path / "ws"
    data = build_mask(ws / "data")
    cli("init", "--from", "mask", data, "--heads", "--workspace", ws)
    comp = yaml.safe_load((ws / "comp.yaml").read_text())
    comp["folds"] = {"k": 2, "seed": 0, "stratify": ["gender"]}
    (ws / "comp.yaml").write_text(yaml.safe_dump(comp, sort_keys=False))
    (ws / "experiments" / "baseline.yaml").write_text(yaml.safe_dump({
        "model": {"name": "test_resnet", "pretrained": False}, "image": {"size": 32},
        "augment": {"preset": "none"}, "tta": {"transforms": "none"},
        "train": {"epochs": 1, "batch_size": 16, "lr": 3.0e-3, "warmup_epochs": 0, "num_workers": 0,
                  "early_stopping": None, "seed": 7}}))
    info = pd.read_csv(data / "eval" / "info.csv", dtype=str)
    seen = sorted(pd.read_csv(ws / "data" / "train.csv")["label"].unique())  # the combined labels train.csv has
    rng = np.random.default_rng(0)
    pd.DataFrame({"ImageID": info["ImageID"], "ans": rng.choice(seen, len(info))}).to_csv(ws / "solution.csv",
                                                                                          index=False)
    scores, printed, oof, sub = run_stages(ws)
    train = by_id(oof, ws)
    truth = train["mask"] * 6 + train["gender"] * 3 + train["age_band"]
    assert (truth == train["label"]).all()
    # the combined label of the most likely head combination (the product of the heads' probabilities) among
    # the combinations train.csv has
    heads = {h: oof[[f"p_{h}={c}" for c in cs]].to_numpy() for h, cs in (("mask", "012"), ("gender", "01"),
                                                                         ("age", "012"))}
    combos = [(v // 6, v % 6 // 3, v % 3) for v in seen]
    joint = np.stack([heads["mask"][:, m] * heads["gender"][:, g] * heads["age"][:, a] for m, g, a in combos], axis=1)
    combined = np.asarray(seen)[joint.argmax(axis=1)]
    assert scores["oof"] == pytest.approx(f1_score(truth, combined, labels=seen, average="macro", zero_division=0))
    solution = check_format(ws, sub, data / "eval" / "info.csv")
    labels = sub["ans"].astype(int)
    assert set(labels) <= set(seen) and (sub["ans"].astype(str) == labels.astype(str)).all()
    expected = f1_score(solution["ans"].astype(int), labels, labels=seen, average="macro", zero_division=0)
    assert printed == pytest.approx(expected, abs=1e-5)
