"""`comp predict --tta auto`: distinct views computed once, the choice, its nesting, and the test predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from comp.cli import app
from comp.core.metrics import get_metric
from comp.infer.predict import predict_tta, view_names
from comp.infer.tta_auto import candidates_for, merge, nested_choice, union_views
from comp.core.layout import Layout, read_json
from test_ensemble_cli import fake_experiment

runner = CliRunner()


def test_candidates_fit_the_image_size():
    assert candidates_for((32, 32)) == ["none", "hflip", "flip", "d4", "multiscale", "five_crop"]
    assert candidates_for((24, 40)) == ["none", "hflip", "flip", "d4"]


def test_union_holds_each_distinct_view_once():
    """none, hflip and flip are all inside d4 (8 views); multiscale adds its 2 scales; five_crop its 5 crops."""
    views, index = union_views(candidates_for((32, 32)), (32, 32))
    assert len(views) == 8 + 2 + 5
    for name, idx in index.items():
        assert len(idx) == len(view_names(name, size=(32, 32))) == len(set(idx))
    assert set(index["none"]) <= set(index["hflip"]) <= set(index["d4"]) and set(index["flip"]) <= set(index["d4"])


class Linear(nn.Module):
    """A position-sensitive model: flips and crops change its output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 5, stride=2)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x)
        w = torch.linspace(-1, 1, z.shape[-1])
        return self.head((z * w).mean(dim=(2, 3)))


@pytest.mark.parametrize("merge_name", ["mean", "gmean"])
def test_candidates_merged_from_the_union_equal_predicting_with_each_tta(merge_name):
    from comp.infer.predict import _merge_views_models

    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model = Linear().eval()
    names = candidates_for((32, 32))
    views, index = union_views(names, (32, 32))
    per_view = [[]]
    with torch.inference_mode():
        _merge_views_models([model], images, views, merge="mean", device=torch.device("cpu"), amp_dtype=None,
                            per_view=per_view)
    view_probs = torch.stack(per_view[0][0]).double().numpy()
    loader = [(images, torch.zeros(6))]
    for name in names:
        want = predict_tta(model, loader, tta=name, merge=merge_name)
        np.testing.assert_allclose(merge(view_probs[index[name]], merge_name), want, atol=1e-6)


def test_nested_choice_never_uses_the_scored_fold():
    """Fold 0 (10 rows) is right only under A, folds 1 and 2 (3 rows each) only under B.

    In-sample A wins (10/16); nested, fold 0 is scored with B (chosen on folds 1+2) and folds 1 and 2 with A
    (chosen on the others, where fold 0 dominates): every row is wrong, so the nested accuracy is 0.
    """
    metric = get_metric("accuracy")
    folds = np.array([0] * 10 + [1] * 3 + [2] * 3)
    y = np.zeros(16, dtype=np.int64)
    right, wrong = np.array([0.9, 0.1]), np.array([0.1, 0.9])
    a = np.array([right if f == 0 else wrong for f in folds])
    b = np.array([wrong if f == 0 else right for f in folds])
    got = nested_choice({"A": a, "B": b}, y, folds, metric)
    assert metric(y, a) == pytest.approx(10 / 16) and metric(y, b) == pytest.approx(6 / 16)
    assert got["choices"] == {0: "B", 1: "A", 2: "A"}
    assert got["nested"] == 0.0 and got["nested_folds"] == {0: 0.0, 1: 0.0, 2: 0.0}


@pytest.fixture
def member(tiny_ws: Path) -> Path:
    fake_experiment(tiny_ws, "m", skill=2.0, seed=3)
    return tiny_ws


def test_predict_tta_auto_chooses_the_best_candidate_and_predicts_as_that_tta(member, one_torch_thread):
    from sklearn.metrics import f1_score

    ws = Layout.at(member)
    result = runner.invoke(app, ["predict", "-e", "m", "--tta", "auto", "-w", str(member)])
    assert result.exit_code == 0, result.output
    record = read_json(ws.predict_json("m"))
    auto = record["tta_auto"]
    assert auto["candidates"] == candidates_for((32, 32)) and "chosen:" in result.output and "nested" in result.output
    assert record["tta"] == auto["chosen"] and record["oof_tta"]
    auto_test = ws.test_probs_csv("m").read_bytes()
    assert 'alt="OOF gain of each candidate TTA"' in ws.report_html("m").read_text()

    scores = {}
    for name in auto["candidates"]:  # each candidate predicted on its own, as `comp predict --tta NAME --oof`
        done = runner.invoke(app, ["predict", "-e", "m", "--tta", name, "--oof", "-w", str(member)])
        assert done.exit_code == 0, done.output
        oof = pd.read_csv(ws.oof_tta_csv("m"), dtype={"id": str, "label": str})
        cols = [c for c in oof.columns if c.startswith("p_")]
        pred = np.array([c[2:] for c in cols])[oof[cols].to_numpy().argmax(axis=1)]
        scores[name] = f1_score(oof["label"], pred, average="macro")
        assert auto["scores"][name] == pytest.approx(scores[name], abs=1e-9)
        if name == auto["chosen"]:
            assert ws.test_probs_csv("m").read_bytes() == auto_test  # the same test predictions
    best = max(scores.values())
    assert auto["chosen"] == next(n for n in auto["candidates"] if scores[n] == best)  # argmax, first on ties


def test_ensemble_tta_auto_is_refused_with_the_way_to_do_it(member):
    result = runner.invoke(app, ["ensemble", "-e", "m", "--tta", "auto", "-w", str(member)])
    assert result.exit_code == 2 and "comp predict -e NAME --tta auto" in result.output
