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
from comp.train.devices import (CHILD_MODULE, ChildJob, check_devices, child_command, child_env, parse_devices,
                                read_job, write_job)
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
        assert f"-m {CHILD_MODULE} " in log  # the library's child entry point with a job file, not a second CLI
        path, job = re.search(r"job (\S+): (\{.*\})$", log, re.M).groups()  # the child logs the job it read
        assert json.loads(job) == {"workspace": str(par_root), "experiment": "baseline", "folds": [fold],
                                   "overrides": ["folds.k=2"], "device": "cpu"}
        assert not Path(path).exists()  # the parent removed the job files once its children ended
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
    job = ChildJob(str(tmp_path), "e1", (2,), ("train.lr=0.1", "folds.k=5"), "cpu")
    path = write_job(tmp_path / "jobs" / "fold2.json", job)
    assert json.loads(path.read_text()) == {"workspace": str(tmp_path), "experiment": "e1", "folds": [2],
                                            "overrides": ["train.lr=0.1", "folds.k=5"], "device": "cpu"}
    assert read_job(path) == job
    assert child_command(path)[1:] == ["-m", CHILD_MODULE, str(path)]


@pytest.mark.parametrize(("text", "message"), [
    ("{", r"is not JSON"),
    ("[]", r"expected a JSON object, got list"),
    ('{"workspace": "w", "folds": [0]}', r"missing \['experiment'\]"),
    ('{"workspace": "w", "experiment": "e", "folds": [0], "fold": 1}', r"unknown keys \['fold'\]"),
    ('{"workspace": "w", "experiment": "e", "folds": "0"}', r"folds must be a non-empty list"),
    ('{"workspace": "w", "experiment": "e", "folds": [0], "overrides": "a=1"}', r"overrides must be a list"),
    ('{"workspace": "", "experiment": "e", "folds": [0]}', r"workspace must be a non-empty string"),
])
def test_a_bad_job_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "job.json"
    path.write_text(text)
    with pytest.raises(CompError, match=rf"fold-train job file {re.escape(str(path))}.*{message}"):
        read_job(path)
    with pytest.raises(CompError, match=r"cannot read the fold-train job file"):
        read_job(tmp_path / "missing.json")


def test_the_child_refuses_a_bad_job_in_one_error_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "job.json"
    path.write_text('{"workspace": "w"}')
    done = subprocess.run([sys.executable, "-m", CHILD_MODULE, str(path)], capture_output=True, text=True)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and "error: fold-train job file" in lines[0] and "missing" in lines[0], lines
