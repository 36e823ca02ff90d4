"""The learning-rate finder: rules on known curves, the range test on real tiny images, `comp lr-find`, `train.lr: auto`."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

import comp.train.lrfind as lrfind
from comp.cli import app
from comp.core.config import load_config
from comp.core.errors import CompError
from comp.core.layout import Layout, read_json

runner = CliRunner()


def test_smoothing_is_bias_corrected():
    """A constant loss smooths to itself from the first step (no pull towards 0); a step change is approached slowly."""
    np.testing.assert_allclose(lrfind.smooth(np.full(30, 2.5)), 2.5)
    out = lrfind.smooth(np.array([1.0, 1.0, 3.0]), beta=0.5)
    # by hand: avg 0.5 -> 0.75 -> 1.875; corrections 1-0.5, 1-0.25, 1-0.125
    np.testing.assert_allclose(out, [1.0, 1.0, 1.875 / 0.875])
    ramp = np.linspace(0.0, 10.0, 201)
    assert lrfind.smooth(ramp, 0.9)[100] < ramp[100] - 0.3  # the causal EMA lags a rising loss ...
    assert lrfind.centred(ramp, 0.9)[100] == pytest.approx(ramp[100], abs=1e-6)  # ... the centred one does not


def test_rules_on_a_known_curve():
    """Loss falls fastest at lr 1e-3 (a tanh step in log10 lr), is lowest at 1e-1, then rises."""
    lrs = np.logspace(-7, 1, 161)
    x = np.log10(lrs)
    loss = 2.0 - np.tanh((x + 3) * 1.5) + np.where(x > -1, (x + 1) ** 2 * 5, 0.0)
    got = lrfind.suggest(lrs, loss)
    assert got["min10"] == pytest.approx(1e-2, rel=0.06)  # the minimum (1e-1) / 10
    assert got["steepest"] == pytest.approx(1e-3, rel=0.15)
    with pytest.raises(CompError, match="stopped after 1 step"):
        lrfind.suggest(lrs[:1], loss[:1])


def _data(tiny_ws: Path, *overrides: str):
    from comp.data.checked import load_checked_tables
    from comp.data.folds import ensure_folds

    ws, cfg = Layout.at(tiny_ws), load_config(tiny_ws, "baseline", ["folds.k=2", *overrides])
    tables = load_checked_tables(cfg, ws)
    return ws, cfg, tables, ensure_folds(ws, tables, cfg).fold_of(tables.train)


def test_range_test_ramps_exponentially_stops_on_divergence_and_keeps_the_callers_rng(tiny_ws, one_torch_thread):
    ws, cfg, tables, fold_of = _data(tiny_ws)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    result = lrfind.lr_range_test(cfg, tables, fold_of, 0, ws=ws, start=1e-6, end=100.0, steps=30)
    np.testing.assert_allclose(torch.rand(3), expected_next)  # the caller's random state is untouched
    lrs = np.asarray(result.lrs)
    assert lrs[0] == pytest.approx(1e-6)
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], (1e8) ** (1 / 29), rtol=1e-9)  # one exponential ramp
    # 18 training rows in batches of 8 (drop_last): 2 batches per pass, so 30 steps cycle the loader
    assert result.stopped in ("diverged", "non-finite", "steps")
    if result.stopped == "diverged":  # the last step is the first above DIVERGE x the minimum so far
        assert result.smoothed[-1] > lrfind.DIVERGE * min(result.smoothed)
        assert all(s <= lrfind.DIVERGE * min(result.smoothed[: i + 1]) for i, s in enumerate(result.smoothed[:-1]))
    assert result.rule == "steepest" and result.suggestion == result.suggestions["steepest"]
    curve = lrfind.centred(np.asarray(result.losses), lrfind.ema_beta(30))
    assert result.suggestions["min10"] == pytest.approx(lrs[int(np.argmin(curve))] / 10, rel=5e-3)
    assert lrs[0] <= result.suggestions["steepest"] <= lrs[int(np.argmin(curve))] * 1.005  # on the way down
    again = lrfind.lr_range_test(cfg, tables, fold_of, 0, ws=ws, start=1e-6, end=100.0, steps=30)
    assert again.losses == result.losses  # a function of the seed alone


def test_cli_lr_find_writes_csv_json_report_and_apply_keeps_the_other_keys(tiny_ws, one_torch_thread):
    exp_yaml = tiny_ws / "experiments" / "baseline.yaml"
    before = yaml.safe_load(exp_yaml.read_text())
    result = runner.invoke(app, ["lr-find", "-w", str(tiny_ws), "--steps", "40", "--set", "folds.k=2", "--apply"])
    assert result.exit_code == 0, result.output
    ws = Layout.at(tiny_ws)
    record = read_json(ws.lr_find_json("baseline"))
    assert f"suggested lr: {record['suggestion']:.1e}" in result.output
    assert record["rule"] == "steepest" and record["fold"] == 0 and record["steps"] <= 40
    table = pd.read_csv(ws.lr_find_csv("baseline"))
    assert table.columns.tolist() == ["lr", "loss", "smoothed"] and len(table) == record["steps"]
    np.testing.assert_allclose(table["smoothed"], lrfind.smooth(table["loss"].to_numpy(), lrfind.ema_beta(40)), rtol=1e-6)
    assert 'alt="loss vs learning rate"' in ws.report_html("baseline").read_text()
    after = yaml.safe_load(exp_yaml.read_text())
    assert after["train"]["lr"] == pytest.approx(record["suggestion"], rel=1e-2)
    after["train"]["lr"] = before["train"]["lr"]
    assert after == before  # every other key kept
    bad = runner.invoke(app, ["lr-find", "-w", str(tiny_ws), "--steps", "3"])
    assert bad.exit_code == 2 and "10 or more steps" in bad.output


def test_apply_creates_a_missing_experiment_file(tiny_ws):
    ws = Layout.at(tiny_ws)
    lrfind.apply_lr(ws, "fresh", 0.00321)
    assert yaml.safe_load(ws.experiment_yaml("fresh").read_text()) == {"train": {"lr": 0.00321}}


@pytest.mark.parametrize("text", [
    "# the demo's layout\nmodel: {name: test_resnet}  # tiny\ntrain: {epochs: 8, lr: 3.0e-3, seed: 42}\n"
    "tune:\n  space:\n    train.lr: {float: [1.0e-3, 1.0e-2], log: true}\n",
    "train:\n  epochs: 2  # two\n  lr: auto\n",
    "train:  # no lr yet\n  epochs: 2\n",
    "model:\n  name: test_resnet  # no train section\n",
])
def test_apply_edits_only_train_lr_and_keeps_comments(tiny_ws, text):
    ws = Layout.at(tiny_ws)
    ws.experiment_yaml("edited").write_text(text)
    lrfind.apply_lr(ws, "edited", 0.0123)
    after = ws.experiment_yaml("edited").read_text()
    want = yaml.safe_load(text)
    want.setdefault("train", {})["lr"] = 0.0123
    assert load_config(tiny_ws, "edited").train.lr == 0.0123
    got = yaml.safe_load(after)
    got["train"]["lr"] = float(got["train"]["lr"])
    assert got == want
    assert [line for line in text.splitlines() if "#" in line] == [line for line in after.splitlines() if "#" in line]


def test_lr_auto_is_a_config_value_and_changes_the_train_hash(tiny_ws):
    auto = load_config(tiny_ws, "baseline", ["train.lr=auto"])
    assert auto.train.lr == "auto"
    assert auto.train_hash() != load_config(tiny_ws, "baseline").train_hash()
    with pytest.raises(CompError, match="train.lr"):
        load_config(tiny_ws, "baseline", ["train.lr=fast"])


def test_lr_auto_fold_train_finds_once_trains_every_fold_with_it_and_resume_reuses_it(tiny_ws, one_torch_thread,
                                                                                         monkeypatch):
    exp_yaml = tiny_ws / "experiments" / "baseline.yaml"
    doc = yaml.safe_load(exp_yaml.read_text())
    doc["train"].update(lr="auto", epochs=1)
    exp_yaml.write_text(yaml.safe_dump(doc))
    calls = []
    real = lrfind.lr_range_test

    def counted(*args, **kwargs):
        calls.append(args[3] if len(args) > 3 else kwargs.get("fold"))
        return real(*args, **{**kwargs, "steps": 40})

    monkeypatch.setattr(lrfind, "lr_range_test", counted)
    import comp.data.checked as checked
    import comp.train.fold_train as fold_train

    reads = []
    real_read = checked.load_checked_tables

    def read(*args, **kwargs):
        reads.append(1)
        return real_read(*args, **kwargs)

    monkeypatch.setattr(checked, "load_checked_tables", read)
    monkeypatch.setattr(fold_train, "load_checked_tables", read)
    first = runner.invoke(app, ["fold-train", "--k", "2", "-w", str(tiny_ws)])
    assert first.exit_code == 0, first.output
    assert calls == [0]  # one range test, on fold 0
    assert len(reads) == 1  # the data is read and checked once, for the finder and the training alike
    ws = Layout.at(tiny_ws)
    chosen = read_json(ws.lr_find_json("baseline"))["suggestion"]
    config = yaml.safe_load(ws.config_yaml("baseline").read_text())
    assert config["lr_chosen"] == chosen and config["train"]["lr"] == chosen
    assert read_json(ws.scores_json("baseline"))["lr_chosen"] == chosen
    for fold in (0, 1):  # cosine without warmup: epoch 1 trains at the base lr
        assert pd.read_csv(ws.fold_files("baseline", fold).history)["lr"].iloc[0] == pytest.approx(chosen)

    ws.lr_find_json("baseline").unlink()  # config.yaml alone is enough to resume
    again = runner.invoke(app, ["fold-train", "--k", "2", "-w", str(tiny_ws)])
    assert again.exit_code == 0, again.output
    assert calls == [0]  # not run again
    assert read_json(ws.scores_json("baseline"))["lr_chosen"] == chosen

    changed = runner.invoke(app, ["fold-train", "--k", "2", "-w", str(tiny_ws), "--set", "train.lr=1e-3"])
    assert changed.exit_code == 2 and "another config" in changed.output
    other = runner.invoke(app, ["fold-train", "--k", "2", "-w", str(tiny_ws), "--set", "train.epochs=2"])
    assert other.exit_code == 2 and "another config" in other.output and calls == [0]  # refused before any finder run

    predicted = runner.invoke(app, ["predict", "-w", str(tiny_ws), "--tta", "none"])
    assert predicted.exit_code == 0, predicted.output  # config.yaml with lr_chosen still reads back


def test_tune_with_lr_auto_runs_the_finder_once_when_the_space_does_not_set_lr(tiny_ws, monkeypatch):
    from comp.tune import tune_experiment

    seen = []

    def fake_fit(job, *, progress, on_epoch):
        seen.append(job.cfg.train.lr)
        job.out_dir.mkdir(parents=True)
        on_epoch(0, {"score": 0.5, "val_loss": 1.0})
        return SimpleNamespace(score=0.5)

    def fake_test(cfg, tables, fold_of, fold=0, **kwargs):
        lrs = np.logspace(-7, 1, 50)
        smoothed = (np.log10(lrs) + 2.5) ** 2  # lowest at 10**-2.5
        return lrfind.LRFindResult(lrs=lrs.tolist(), losses=smoothed.tolist(), smoothed=smoothed.tolist(),
                                   suggestion=0.000316, rule="min10", suggestions={"min10": 0.000316, "steepest": 1e-6},
                                   fold=fold, stopped="steps", auto_hash=lrfind.auto_hash(cfg))

    monkeypatch.setattr(lrfind, "lr_range_test", fake_test)
    cfg = load_config(tiny_ws, "baseline", ["folds.k=2", "train.lr=auto",
                                            "tune.space={train.weight_decay: {float: [1.0e-4, 1.0e-2], log: true}}"])
    tune_experiment(Layout.at(tiny_ws), cfg, exp="baseline", trials=3, fit=fake_fit)
    assert seen == [0.000316] * 3
    assert read_json(Layout.at(tiny_ws).lr_find_json("baseline"))["suggestion"] == 0.000316


def test_lr_find_says_which_rule_apply_takes_and_why():
    from comp.train.lrfind import rules_note

    note = rules_note({"steepest": 3.2e-3, "min10": 3.1e-4}, "steepest")
    assert note.startswith("the rules disagree 10x; --apply writes the steepest lr (the default:")
    assert "bench_lr_find" in note
    close = rules_note({"steepest": 1e-3, "min10": 8e-4}, "min10")
    assert "disagree" not in close and "--apply writes the min10 lr (asked for with --rule min10" in close
