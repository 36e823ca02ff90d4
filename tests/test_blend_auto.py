"""`comp ensemble --method auto`: the best nested score, never a blend below the plain mean's."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from comp.blend.auto import choose
from comp.cli import app
from comp.core.layout import Layout, read_json
from test_ensemble_cli import fake_experiment

runner = CliRunner()


def test_choose_keeps_the_plain_mean_unless_another_candidate_beats_its_nested_score() -> None:
    mean = {"method": "mean", "weights": "equal", "nested": 0.95}
    stack = {"method": "stack", "weights": None, "nested": 0.93}
    fitted = {"method": "mean", "weights": "auto", "nested": 0.95}
    assert choose([mean, fitted, stack], greater_is_better=True) is mean  # a tie keeps the plain mean
    assert choose([mean, {**stack, "nested": 0.96}], greater_is_better=True)["method"] == "stack"
    assert choose([{**mean, "nested": 0.4}, {**stack, "nested": 0.5}], greater_is_better=False)["nested"] == 0.4


def test_method_auto_records_every_candidate_and_submits_none_below_the_plain_mean(tiny_ws: Path) -> None:
    fake_experiment(tiny_ws, "good", skill=4.0, seed=1, tta="none")
    fake_experiment(tiny_ws, "noise", skill=0.0, seed=2, tta="none")
    result = runner.invoke(app, ["ensemble", "-e", "good", "-e", "noise", "--method", "auto", "--name", "auto",
                                 "--workspace", str(tiny_ws)])
    assert result.exit_code == 0, result.output
    manifest = read_json(Layout.at(tiny_ws).submission_json("auto"))
    candidates = manifest["auto"]["candidates"]
    assert [(c["method"], c["weights"]) for c in candidates][:2] == [("mean", "equal"), ("mean", "auto")]
    plain = candidates[0]["nested"]
    assert manifest["nested"] >= plain and manifest["nested"] == max(c["nested"] for c in candidates)
    assert manifest["method"] == manifest["auto"]["chosen"]["method"]
    assert "--method auto chose" in result.output


def test_method_auto_refuses_weights_it_would_ignore(tiny_ws: Path) -> None:
    fake_experiment(tiny_ws, "good", skill=4.0, seed=1, tta="none")
    result = runner.invoke(app, ["ensemble", "-e", "good", "--method", "auto", "--weights", "equal",
                                 "--workspace", str(tiny_ws)])
    assert result.exit_code == 2 and "--method auto chooses the weights" in result.output
