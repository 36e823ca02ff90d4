"""`comp predict --tta auto` for a task other than multiclass: candidates scored with the task's activation and metric."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from comp.cli import app
from task_data import TAGS, build_task_workspace

runner = CliRunner()


def test_tta_auto_scores_tag_candidates_with_sigmoid_outputs_and_the_task_metric(tmp_path: Path) -> None:
    root = build_task_workspace(tmp_path / "ml", "multilabel", subjects=20, n_test=6)
    for args in (("fold-train",), ("predict", "-e", "baseline", "--tta", "auto")):
        r = runner.invoke(app, [*args, "-w", str(root)])
        assert r.exit_code == 0, r.output
    record = json.loads((root / "experiments" / "baseline" / "predict.json").read_text())
    auto = record["tta_auto"]
    chosen = auto["chosen"]
    assert record["tta"] == chosen
    oof = pd.read_csv(root / "experiments" / "baseline" / "oof_tta.csv", dtype={"id": str})
    probs = oof[[f"p_{t}" for t in TAGS]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all() and not np.allclose(probs.sum(axis=1), 1.0)  # sigmoids, not a softmax
    train = pd.read_csv(root / "data" / "train.csv", dtype={"id": str}, keep_default_na=False).set_index("id")
    truth = np.array([[t in str(v).split() for t in TAGS] for v in train.loc[oof["id"], "tags"]])
    want = f1_score(truth, probs >= 0.5, average="micro", zero_division=0)
    assert abs(auto["scores"][chosen] - want) < 1e-5  # oof_tta.csv holds 6 decimals
    assert max(auto["scores"].values()) == auto["scores"][chosen]
