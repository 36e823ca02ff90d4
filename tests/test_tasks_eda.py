"""comp eda for each task kind: the kind's own numbers (checked against the table), figures, no crash."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from comp.cli import app

from task_data import TAGS, build_task_workspace

runner = CliRunner()


def eda(root):
    """Folds first (the report reads them), then comp eda; summary.json."""
    r = runner.invoke(app, ["folds", "-w", str(root)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eda", "--samples", "2", "-w", str(root)])
    assert r.exit_code == 0, r.output
    return json.loads((root / "eda" / "summary.json").read_text()), r.output


@pytest.fixture(scope="module", params=["multilabel", "regression", "multitask", "binary"])
def report(request, tmp_path_factory):
    root = build_task_workspace(tmp_path_factory.mktemp(request.param) / "ws", request.param, subjects=16)
    summary, output = eda(root)
    return request.param, root, summary, output, pd.read_csv(root / "data" / "train.csv", dtype=str,
                                                             keep_default_na=False)


def test_eda_runs_and_writes_the_page(report):
    kind, root, s, output, train = report
    assert s["task"]["kind"] == kind and s["n_train"] == len(train)
    page = (root / "eda" / "report.html").read_text()
    assert "<section id='task'>" in page and "<section id='folds'>" in page
    assert s["folds"] and "error" not in s["folds"]
    assert sum(s["folds"]["rows_per_fold"].values()) == len(train)  # images, not (image, tag) rows
    for name in s["figures"]:
        assert (root / "eda" / name).stat().st_size > 0


def test_eda_numbers_of_the_kind(report):
    kind, root, s, output, train = report
    t = s["task"]
    if kind == "multilabel":
        sets = [set(v.split()) for v in train["tags"]]
        assert t["tags"] == {tag: sum(tag in x for x in sets) for tag in TAGS}
        assert t["n_untagged"] == sum(not x for x in sets)
        assert t["cooccurrence"]["cat"]["dog"] == sum({"cat", "dog"} <= x for x in sets)
        assert t["cooccurrence"]["owl"]["owl"] == t["tags"]["owl"]
        assert s["classes"]["counts"]["cat"] == t["tags"]["cat"]  # an image counts under each of its tags
        assert "cooccurrence.png" in s["figures"]
        assert "tag counts: " in output
    elif kind == "regression":
        y = train["target"].astype(float)
        assert t["mean"] == pytest.approx(y.mean()) and t["max"] == pytest.approx(y.max())
        assert t["std"] == pytest.approx(y.std(ddof=0))
        assert sum(t["histogram"]["counts"]) == len(y)
        assert sum(s["classes"]["counts"].values()) == len(y)  # target bins cover every image
        assert "target.png" in s["figures"]
    elif kind == "multitask":
        for head in ("colour", "bar"):
            counts = train[head].value_counts()
            assert t["heads"][head]["counts"] == {c: int(counts.get(c, 0)) for c in sorted(counts.index)}
        combined = (train["colour"].astype(int) * 2 + train["bar"].astype(int)).value_counts()
        assert {int(k): v for k, v in t["combined"].items() if v} == {int(k): int(v) for k, v in combined.items()}
        assert t["combine"] == "colour*2 + bar" and "heads.png" in s["figures"]
    else:
        assert t["positive"] == "yes" and t["n_positive"] == int((train["label"] == "yes").sum())
        assert t["positive_rate"] == pytest.approx((train["label"] == "yes").mean())
        assert f"positive 'yes' on {t['n_positive']} images" in output


def test_eda_of_untagged_images_and_a_single_tag(tmp_path):
    """Edge cases: images without tags and a tag set of one."""
    root = build_task_workspace(tmp_path / "ws", "multilabel", subjects=12)
    train = pd.read_csv(root / "data" / "train.csv", dtype=str, keep_default_na=False)
    train["tags"] = np.where(np.arange(len(train)) % 3 == 0, "cat", "")
    train.to_csv(root / "data" / "train.csv", index=False)
    s, _ = eda(root)
    assert s["task"]["tags"] == {"cat": int((train["tags"] == "cat").sum())}
    assert s["classes"]["counts"]["(no tag)"] == int((train["tags"] == "").sum())
