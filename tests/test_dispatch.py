"""`comp fold-train --devices cpu,cpu`: folds in child processes, the same artifacts as a sequential run, failures reported."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from comp.cli import app
from comp.train.devices import child_command, child_env, check_devices, parse_devices
from comp.core.errors import CompError

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fold_train(root: Path, *args: str):
    return runner.invoke(app, ["fold-train", "-w", str(root), "--k", "2", *args])


def read_outputs(root: Path) -> tuple[pd.DataFrame, dict]:
    exp = root / "experiments" / "baseline"
    return pd.read_csv(exp / "oof.csv", dtype={"id": str}), json.loads((exp / "scores.json").read_text())


def test_two_cpu_processes_match_the_sequential_run(make_ws) -> None:
    seq_root, par_root = make_ws("seq"), make_ws("par")
    seq = fold_train(seq_root)
    assert seq.exit_code == 0, seq.output
    par = fold_train(par_root, "--devices", "cpu,cpu")
    assert par.exit_code == 0, par.output
    assert "CV macro_f1:" in par.output
    seq_oof, seq_scores = read_outputs(seq_root)
    par_oof, par_scores = read_outputs(par_root)
    assert list(par_oof.columns) == list(seq_oof.columns)
    assert par_oof["id"].tolist() == seq_oof["id"].tolist()
    assert par_oof["fold"].tolist() == seq_oof["fold"].tolist()
    assert set(par_scores) == set(seq_scores)
    assert par_scores["complete"] and par_scores["folds"].keys() == {"0", "1"}
    probs = [c for c in par_oof.columns if c.startswith("p_")]
    np.testing.assert_allclose(par_oof[probs].to_numpy(), seq_oof[probs].to_numpy(), atol=1e-4)
    for root in (seq_root, par_root):  # one writer made the whole report on both paths: scores, config, environment
        page = (root / "experiments" / "baseline" / "report.html").read_text()
        assert all(title in page for title in ("Fold training", "Resolved config", "Environment")), root
    for fold in (0, 1):  # each child wrote its own fold folder and log
        log = (par_root / "experiments" / "baseline" / f"fold{fold}" / "train.log").read_text()
        assert f"-m comp.pipeline --fold {fold}" in log  # the library's child entry point, not a hidden CLI flag
        assert "CV macro_f1" not in log  # the child left the aggregation to the parent
        assert re.search(rf"^\d\d:\d\d:\d\d fold {fold} epoch 1/", log, re.M)  # its lines carry their time


def test_a_failing_fold_is_reported_with_its_log_and_the_other_finishes(make_ws) -> None:
    root = make_ws()
    blocker = root / "experiments" / "baseline" / "fold1" / "history.csv"
    blocker.mkdir(parents=True)  # fold 1's child cannot write its history: a real failure in the child
    result = fold_train(root, "--devices", "cpu,cpu")
    assert result.exit_code == 1, result.output
    assert "fold 1 failed on device cpu" in result.output
    assert "IsADirectoryError" in result.output.replace("\n", "")  # the tail of the child's log (wrapped)
    assert "folds [1] failed" in result.output
    oof, scores = read_outputs(root)
    assert scores["folds"].keys() == {"0"} and scores["missing_folds"] == [1] and not scores["complete"]
    assert set(oof["fold"]) == {0}
    assert (root / "experiments" / "baseline" / "fold0" / "best.pt").is_file()

    blocker.rmdir()  # fixed: the rerun trains fold 1 only
    again = fold_train(root, "--devices", "cpu,cpu")
    assert again.exit_code == 0, again.output
    assert "fold 1 on cpu: done" in again.output and "fold 0 on" not in again.output  # finished folds are kept
    oof, scores = read_outputs(root)
    assert scores["complete"] and set(oof["fold"]) == {0, 1}


@pytest.mark.parametrize("text", ["", "gpu0", "0,,x", "cuda:0"])
def test_bad_device_lists_are_refused(text: str) -> None:
    with pytest.raises(CompError, match=r"--devices expects GPU numbers or 'cpu'"):
        parse_devices(text)


def test_devices_that_contradict_train_device_are_refused() -> None:
    assert parse_devices(" 0, 1,CPU") == ["0", "1", "cpu"]
    with pytest.raises(CompError, match=r"names GPUs but train.device=cpu"):
        check_devices(["0", "1"], "cpu")
    with pytest.raises(CompError, match=r"cpu entries but train.device=cuda"):
        check_devices(["cpu", "0"], "cuda")
    with pytest.raises(CompError, match=r"pins one GPU"):
        check_devices(["0"], "cuda:1")
    if torch.cuda.device_count() == 0:
        with pytest.raises(CompError, match=r"GPU \[0\] but 0 CUDA devices are visible"):
            check_devices(["0"], "auto")


def test_child_environment_and_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    cpu = child_env("cpu", n_cpu_slots=2)
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["OMP_NUM_THREADS"] == "4" and "WORLD_SIZE" not in cpu
    assert child_env("3", n_cpu_slots=0)["CUDA_VISIBLE_DEVICES"] == "3"
    cmd = child_command(2, workspace=tmp_path, exp="e1", overrides=["train.lr=0.1", "folds.k=5"])
    assert cmd[1:] == ["-m", "comp.pipeline", "--fold", "2", "-w", str(tmp_path), "-e", "e1",
                       "--set", "train.lr=0.1", "--set", "folds.k=5"]
