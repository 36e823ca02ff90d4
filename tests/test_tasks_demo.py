"""comp demo --task: the digits built as each kind of competition, with a hidden solution that fits it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from comp.cli import app
from comp.core.config import load_config
from comp.data.tables import load_tables
from comp.init.demo import build_task_demo
from comp.core.layout import Layout

runner = CliRunner()
KINDS = ("multilabel", "regression", "multitask", "binary")


@pytest.fixture(scope="module", params=KINDS)
def demo(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    build_task_demo(root, request.param, max_per_class=8, photos=2)
    return request.param, root


def digit_of(train: pd.DataFrame, sklearn_digits) -> np.ndarray:
    """The source digit of each row, from the subject name (s<index of sklearn's digit>[-<index>])."""
    return np.array([sklearn_digits.target[int(s[1:5])] for s in train["subject"]])


def test_each_kind_loads_as_its_task_with_targets_from_the_digits(demo):
    from sklearn.datasets import load_digits

    kind, root = demo
    cfg = load_config(root)
    t = load_tables(cfg, Layout.at(root))
    assert cfg.task == kind and t.task.kind == kind
    train = pd.read_csv(root / "data" / "train.csv", dtype=str, keep_default_na=False)
    digits = load_digits()
    d = digit_of(train, digits)
    if kind == "multilabel":
        second = np.array([digits.target[int(s.split("-")[1])] for s in train["subject"]])
        expected = [{str(a), str(b)} for a, b in zip(d, second)]
        assert [set(v.split()) for v in train["tags"]] == expected
        assert all(Image.open(p).size == (64, 32) for p in t.train["path"])  # two digits side by side
        assert set(t.task.outputs) <= {str(i) for i in range(10)}
    elif kind == "regression":
        assert np.allclose(t.targets, d)
    elif kind == "multitask":
        assert (t.targets[:, 0].astype(int) == d % 2).all() and (t.targets[:, 1] == (d >= 5)).all()
        assert (t.targets[:, 2] == d % 3).all()
        assert len(set(t.train["label"])) == len(set(d))  # the combined label tells the digits apart
    else:
        assert (t.targets == (d % 2 == 0)).all() and t.task.labels == ("odd", "even")
    assert (t.train.groupby("group").size() >= 2).all()  # several photos per subject
    from comp.api.workflows import demo_members

    for exp in demo_members(kind):  # the demo's two members load with the task's loss
        assert load_config(root, exp).train.loss == "auto"


def test_hidden_solution_fits_the_kind_and_the_sample(demo):
    kind, root = demo
    sample = pd.read_csv(root / "data" / "sample_submission.csv", dtype=str)
    solution = pd.read_csv(root / "hidden" / "solution.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(root / "data" / "test.csv", dtype=str)
    assert list(sample.columns) == list(solution.columns) == ["ImageID", "ans"]
    assert list(solution["ImageID"]) == list(sample["ImageID"]) == list(test["id"])
    assert not (root / "data" / "solution.csv").exists()
    train = pd.read_csv(root / "data" / "train.csv", dtype=str)
    assert not set(train["path"]) & set(test["path"])  # train and test split by subject
    assert not {p.split("_")[0] for p in train["path"]} & {p.split("_")[0] for p in test["path"]}
    answers = solution["ans"]
    if kind == "multilabel":
        assert all(set(v.split()) <= {str(i) for i in range(10)} and v for v in answers)
    elif kind == "regression":
        assert answers.astype(float).between(0, 9).all()
    elif kind == "multitask":
        assert set(answers.astype(int)) <= {p * 6 + h * 3 + m for p in (0, 1) for h in (0, 1) for m in (0, 1, 2)}
    else:
        assert set(answers) <= {"even", "odd"}


def test_demo_task_is_reproducible(tmp_path):
    a = build_task_demo(tmp_path / "a", "multilabel", max_per_class=6, photos=1, seed=2)
    b = build_task_demo(tmp_path / "b", "multilabel", max_per_class=6, photos=1, seed=2)
    assert (a.root / "data/train.csv").read_bytes() == (b.root / "data/train.csv").read_bytes()
    assert a.solution.read_bytes() == b.solution.read_bytes()


@pytest.mark.parametrize("kind", KINDS)
def test_cli_demo_task_data_and_folds(tmp_path, kind):
    r = runner.invoke(app, ["demo", str(tmp_path / "d"), "--task", kind, "--only-data"])
    assert r.exit_code == 0, r.output
    folds = pd.read_csv(tmp_path / "d" / "folds" / "k5-s42.csv", dtype=str)
    train = pd.read_csv(tmp_path / "d" / "data" / "train.csv", dtype=str)
    assert (folds.groupby(train["subject"])["fold"].nunique() == 1).all()
    assert f"({kind})" in r.output


def test_cli_demo_unknown_task(tmp_path):
    r = runner.invoke(app, ["demo", str(tmp_path / "d"), "--task", "ranking", "--only-data"])
    assert r.exit_code == 2 and "--task 'ranking' is not a demo task" in r.output


def test_python_api_demo_takes_the_task(tmp_path):
    from comp.api import demo

    ws = demo(tmp_path / "d", task="binary", max_per_class=6, photos=1)
    assert load_config(ws.root).task == "binary"
