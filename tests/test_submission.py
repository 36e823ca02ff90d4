"""Submission format, validation errors (never a half-written file), manifest and scoring."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from comp.core.config import SubmissionConfig, load_config
from comp.core.errors import CompError
from comp.core.metrics import get_metric
from comp.blend.submission import build_submission, expected_ids, score_submission, validate_submission, write_submission
from comp.core.layout import Layout, read_json

LABEL = SubmissionConfig(id_col="ImageID", target_col="ans", kind="label")
PROBS = SubmissionConfig(id_col="ImageID", target_col="ans", kind="probabilities")
CLASSES = ("c0", "c1", "c2")


def probs_for(n: int, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).random((n, 3))
    return p / p.sum(axis=1, keepdims=True)


def test_label_submission_follows_sample_order(tiny_ws):
    ws, cfg = Layout.at(tiny_ws), load_config(tiny_ws)
    order, columns = expected_ids(cfg, ws)
    assert order[0] == "t000" and columns == ["ImageID", "ans"]
    p = probs_for(len(order))
    frame = build_submission(order[::-1], p[::-1], CLASSES, cfg.submission, order=order)
    assert frame.columns.tolist() == ["ImageID", "ans"]
    assert frame["ImageID"].tolist() == order
    assert frame["ans"].tolist() == [CLASSES[i] for i in p.argmax(1)]


def test_probability_submission_has_one_column_per_class():
    frame = build_submission(["a", "b"], probs_for(2), CLASSES, PROBS, order=["b", "a"])
    assert frame.columns.tolist() == ["ImageID", "c0", "c1", "c2"]
    validate_submission(frame, PROBS, expected=["a", "b"], classes=CLASSES)


def good() -> pd.DataFrame:
    return pd.DataFrame({"ImageID": ["a", "b", "c"], "ans": ["c0", "c1", "c2"]})


@pytest.mark.parametrize(
    "frame, match",
    [
        (good().iloc[:2], "has 2 rows, expected 3"),
        (good().assign(ImageID=["a", "b", "x"]), r"1 unknown \(e.g. \['x'\]\), 1 missing \(e.g. \['c'\]\)"),
        (good().assign(ImageID=["a", "a", "b"]), "unique"),
        (good().assign(ans=["c0", np.nan, "c2"]), r"NaN values in rows \[1\]"),
        (good().assign(ans=["c0", "c1", "dog"]), r"labels not among the classes: \['dog'\]"),
        (good().rename(columns={"ans": "answer"}), "lacks column 'ans'"),
    ],
)
def test_label_validation_errors(frame, match):
    with pytest.raises(CompError, match=match):
        validate_submission(frame, LABEL, expected=["a", "b", "c"], classes=CLASSES)


def test_probability_validation_errors():
    frame = build_submission(["a", "b"], probs_for(2), CLASSES, PROBS, order=["a", "b"])
    with pytest.raises(CompError, match="sum to 1"):
        validate_submission(frame.assign(c0=frame["c0"] + 0.2), PROBS, expected=["a", "b"], classes=CLASSES)
    with pytest.raises(CompError, match=r"\[0, 1\]"):
        validate_submission(frame.assign(c0=-0.5, c1=1.5), PROBS, expected=["a", "b"], classes=CLASSES)


def test_invalid_submission_is_never_written(tmp_path):
    ws = Layout.at(tmp_path)
    with pytest.raises(CompError, match="labels not among"):
        write_submission(ws, "bad", good().assign(ans=["c0", "c1", "dog"]), LABEL,
                         expected=["a", "b", "c"], classes=CLASSES, manifest={})
    assert not ws.submission_csv("bad").exists() and not ws.submission_json("bad").exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_manifest_records_the_file_hash(tmp_path):
    ws = Layout.at(tmp_path)
    csv_path, json_path = write_submission(ws, "ok", good(), LABEL, expected=["a", "b", "c"], classes=CLASSES,
                                           manifest={"members": ["x"], "weights": [1.0]})
    doc = read_json(json_path)
    assert doc["sha256"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert doc["members"] == ["x"] and doc["rows"] == 3 and "time" in doc and "comp_version" in doc


def test_score_submission_against_solution(tiny_ws):
    cfg = load_config(tiny_ws)
    solution = pd.read_csv(tiny_ws / "solution.csv")
    perfect = tiny_ws / "perfect.csv"
    solution.iloc[::-1].to_csv(perfect, index=False)
    metric = get_metric("macro_f1")
    assert score_submission(perfect, tiny_ws / "solution.csv", cfg.submission, classes=CLASSES, metric=metric) == 1.0
    constant = tiny_ws / "data" / "sample_submission.csv"  # every row 'c0'
    score = score_submission(constant, tiny_ws / "solution.csv", cfg.submission, classes=CLASSES, metric=metric)
    assert score == pytest.approx(get_metric("macro_f1")(np.arange(9) % 3, np.tile([1.0, 0, 0], (9, 1))))
    with pytest.raises(CompError, match="does not exist"):
        score_submission(tiny_ws / "nope.csv", tiny_ws / "solution.csv", cfg.submission, classes=CLASSES, metric=metric)


def test_probabilities_and_integer_labels_round_trip(tmp_path):
    ws = Layout.at(tmp_path)
    p = probs_for(4, seed=2)
    frame = build_submission(list("abcd"), p, CLASSES, PROBS, order=list("dcba"))
    csv_path, _ = write_submission(ws, "probs", frame, PROBS, expected=list("abcd"), classes=CLASSES, manifest={})
    back = pd.read_csv(csv_path)
    assert back.columns.tolist() == ["ImageID", "c0", "c1", "c2"] and back["ImageID"].tolist() == list("dcba")
    assert np.allclose(back[["c0", "c1", "c2"]].to_numpy(), p[::-1], atol=1e-6)
    ints = (3, 7, 11)
    frame = build_submission(list("ab"), np.array([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1]]), ints, LABEL, order=list("ab"))
    csv_path, _ = write_submission(ws, "ints", frame, LABEL, expected=list("ab"), classes=ints, manifest={})
    assert csv_path.read_text() == "ImageID,ans\na,11\nb,3\n"
