"""comp init proposes the task kind from the target and writes the keys it needs; --task and --heads force it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from comp.cli import app
from comp.core.config import load_config
from comp.data.tables import load_tables
from comp.core.errors import CompError
from comp.init import init_csv, init_mask, write_plan
from comp.core.layout import Layout

from task_data import TAGS, build_task_workspace
from test_init import build_mask

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def fresh(tmp_path: Path, kind: str, **kwargs) -> Path:
    """A workspace's data without its comp.yaml (what comp init starts from)."""
    root = build_task_workspace(tmp_path / kind, kind, subjects=12, **kwargs)
    (root / "comp.yaml").unlink()
    return root


def init(root: Path, **kwargs):
    ws = Layout.at(root)
    plan = init_csv(root / "data" / "train.csv", ws, test_csv=root / "data" / "test.csv", **kwargs)
    return plan, write_plan(ws, plan, force=True)


def test_tag_column_proposes_multilabel(tmp_path):
    root = fresh(tmp_path, "multilabel")
    plan, done = init(root)
    comp = yaml.safe_load((root / "comp.yaml").read_text())
    assert comp["task"] == "multilabel" and comp["data"]["label_col"] == "tags"
    assert comp["metric"] == "micro_f1" and comp["submission"]["kind"] == "tags"
    assert {g.role: g.column for g in plan.guesses}["label"] == "tags"
    assert done.tables.task.outputs == TAGS
    train = pd.read_csv(root / "data" / "train.csv", dtype=str, keep_default_na=False)
    expected = np.array([[tag in row.split() for tag in TAGS] for row in train["tags"]], dtype=np.float32)
    assert (done.tables.targets == expected).all()
    assert any("task: multilabel" in n and "--task" in n for n in plan.notes)


def test_zero_one_columns_propose_multilabel_with_label_cols(tmp_path):
    root = fresh(tmp_path, "multilabel")
    train = pd.read_csv(root / "data" / "train.csv", dtype=str, keep_default_na=False)
    for tag in TAGS:
        train[tag] = [int(tag in row.split()) for row in train["tags"]]
    train.drop(columns="tags").to_csv(root / "data" / "train.csv", index=False)
    plan, done = init(root)
    comp = yaml.safe_load((root / "comp.yaml").read_text())
    assert comp["task"] == "multilabel" and comp["data"]["label_cols"] == list(TAGS)
    assert "label_col" not in comp["data"]
    assert done.tables.task.outputs == TAGS
    assert done.tables.targets.sum() == sum(train[t].sum() for t in TAGS)


def test_numeric_target_proposes_regression(tmp_path):
    root = fresh(tmp_path, "regression")
    plan, done = init(root)
    comp = yaml.safe_load((root / "comp.yaml").read_text())
    assert comp["task"] == "regression" and comp["data"]["label_col"] == "target"
    assert comp["metric"] == "rmse" and comp["submission"]["kind"] == "value"
    y = pd.read_csv(root / "data" / "train.csv")["target"].to_numpy()
    assert np.allclose(done.tables.targets, y, atol=1e-5)


def test_integer_labels_with_few_values_stay_multiclass(tmp_path):
    root = fresh(tmp_path, "regression")
    train = pd.read_csv(root / "data" / "train.csv")
    train["target"] = (train["target"] // 3).astype(int)  # 0..3: classes, not a measurement
    train.to_csv(root / "data" / "train.csv", index=False)
    plan, done = init(root)
    comp = yaml.safe_load((root / "comp.yaml").read_text())
    assert "task" not in comp and done.tables.task.kind == "multiclass"
    assert comp["metric"] == "accuracy" and comp["submission"]["kind"] == "label"


def test_two_values_propose_binary_with_the_positive_label(tmp_path):
    root = fresh(tmp_path, "binary")
    plan, done = init(root)
    comp = yaml.safe_load((root / "comp.yaml").read_text())
    assert comp["task"] == "binary" and comp["data"]["positive"] == "yes"
    assert comp["metric"] == "roc_auc" and comp["submission"]["kind"] == "prob"
    train = pd.read_csv(root / "data" / "train.csv")
    assert (done.tables.targets == (train["label"] == "yes").to_numpy()).all()
    assert any("positive label 'yes'" in n for n in plan.notes)


def test_three_classes_stay_multiclass_without_a_task_key(tmp_path):
    root = fresh(tmp_path, "multiclass")
    plan, done = init(root)
    comp = yaml.safe_load((root / "comp.yaml").read_text())
    assert "task" not in comp and load_config(root).task == "multiclass"
    assert done.tables.classes == ("c0", "c1", "c2")


def test_task_flag_forces_the_kind(tmp_path):
    root = fresh(tmp_path, "binary")
    r = invoke("init", root / "data" / "train.csv", "--test", root / "data" / "test.csv", "--task", "multiclass",
               "--workspace", root)
    assert r.exit_code == 0, r.output
    comp = yaml.safe_load((root / "comp.yaml").read_text())
    assert "task" not in comp and comp["submission"]["kind"] == "label" and comp["metric"] == "accuracy"
    assert "task multiclass" in r.output
    r = invoke("init", root / "data" / "train.csv", "--task", "regression", "--force", "--workspace", root)
    assert r.exit_code == 2 and "--task regression needs numbers in 'label'" in r.output
    r = invoke("init", root / "data" / "train.csv", "--task", "multitask", "--force", "--workspace", root)
    assert r.exit_code == 2 and "--from mask --heads" in r.output
    r = invoke("init", root / "data" / "train.csv", "--task", "ranking", "--force", "--workspace", root)
    assert r.exit_code == 2 and "unknown task 'ranking'" in r.output


def test_cli_says_what_it_chose_and_how_to_override(tmp_path):
    root = fresh(tmp_path, "multilabel")
    r = invoke("init", root / "data" / "train.csv", "--test", root / "data" / "test.csv", "--workspace", root)
    assert r.exit_code == 0, r.output
    assert "task: multilabel" in r.output and "override with --task" in r.output
    assert invoke("folds", "--k", "2", "--workspace", root).exit_code == 0


def test_sample_with_a_column_per_tag_means_probabilities(tmp_path):
    root = fresh(tmp_path, "multilabel")
    test = pd.read_csv(root / "data" / "test.csv")
    pd.DataFrame({"image": test["id"], **{t: 0.5 for t in TAGS}}).to_csv(root / "data" / "sample.csv", index=False)
    plan, _ = init(root, sample_csv=root / "data" / "sample.csv")
    assert plan.comp["submission"]["kind"] == "probabilities" and plan.comp["submission"]["id_col"] == "image"


def test_binary_sample_holding_labels_means_label(tmp_path):
    root = fresh(tmp_path, "binary")
    test = pd.read_csv(root / "data" / "test.csv")
    pd.DataFrame({"image": test["id"], "label": "no"}).to_csv(root / "data" / "sample.csv", index=False)
    plan, _ = init(root, sample_csv=root / "data" / "sample.csv")
    assert plan.comp["submission"]["kind"] == "label"


# ---------------------------------------------------------------- the face-mask layout with heads


def test_mask_heads_rebuild_the_single_head_label(tmp_path):
    data = build_mask(tmp_path / "ws" / "data")
    ws = Layout.at(tmp_path / "ws")
    plan = init_mask(data, ws, heads=True)
    done = write_plan(ws, plan)
    comp = yaml.safe_load(ws.comp_yaml.read_text())
    assert comp["task"] == "multitask" and comp["data"]["combine"] == "mask*6 + gender*3 + age"
    assert comp["data"]["targets"] == {"mask": "mask", "gender": "gender", "age": "age_band"}
    task = done.tables.task
    assert [h.name for h in task.heads] == ["mask", "gender", "age"]
    assert [h.classes for h in task.heads] == [("0", "1", "2"), ("0", "1"), ("0", "1", "2")]
    train = pd.read_csv(ws.path(comp["data"]["train_csv"]), dtype={"id": str})
    # the combined label of every row is the 18-class label the single-head form writes
    assert done.tables.train["label"].tolist() == train["label"].astype(str).tolist()
    assert set(task.labels) <= {str(i) for i in range(18)}
    assert set(train["label"].astype(str)) <= set(task.labels)


def test_mask_heads_with_four_age_bands(tmp_path):
    data = build_mask(tmp_path / "ws" / "data")
    ws = Layout.at(tmp_path / "ws")
    done = write_plan(ws, init_mask(data, ws, heads=True, age_bands=(30, 45, 60)))
    assert done.config.data.combine == "mask*8 + gender*4 + age"
    train = pd.read_csv(ws.path(done.config.data.train_csv))
    assert done.tables.train["label"].tolist() == train["label"].astype(str).tolist()


def test_mask_heads_cli_then_folds(tmp_path):
    data = build_mask(tmp_path / "ws" / "data")
    r = invoke("init", "--from", "mask", data, "--heads", "--workspace", tmp_path / "ws")
    assert r.exit_code == 0, r.output
    assert "task multitask" in r.output and "heads mask" in r.output
    r = invoke("folds", "--k", "2", "--workspace", tmp_path / "ws")
    assert r.exit_code == 0, r.output
    assert "combined-label counts" in r.output
    r = invoke("init", "--from", "csv", tmp_path / "ws" / "data" / "train.csv", "--heads", "--workspace", tmp_path / "x")
    assert r.exit_code == 2 and "--heads applies to --from mask" in r.output


def test_mask_without_heads_is_unchanged(tmp_path):
    data = build_mask(tmp_path / "ws" / "data")
    ws = Layout.at(tmp_path / "ws")
    plan = init_mask(data, ws)
    assert "task" not in plan.comp and "targets" not in plan.comp["data"]
    with pytest.raises(CompError, match="--task multitask needs heads"):
        init_csv(data / "train" / "train.csv", ws, task="multitask")
