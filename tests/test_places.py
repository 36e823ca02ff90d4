"""Where competitors work: piped output, per-fold logs, the Python API, reports that travel, CLI polish."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import comp
from comp.cli import app
from comp.core.errors import CompError
from comp.core.output import LineProgress, clock

FAST = ["--set", "train.epochs=1", "--k", "2"]


def run_comp(args: list[str], *, columns: int, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`comp ARGS` with stdout and stderr piped (not a terminal), as in a notebook `!` cell or a log file."""
    env = {**os.environ, "COLUMNS": str(columns), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "comp", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """fold-train in a deeply nested workspace with output piped, 30 columns, a progress line per batch."""
    from conftest import build_workspace

    root = build_workspace(tmp_path_factory.mktemp("places") / ("a-long-folder-name-" * 4) / "workspace")
    result = run_comp(["--log-every", "0", "fold-train", "-w", str(root), *FAST], columns=30)
    assert result.returncode == 0, result.stderr
    return root, result


def test_piped_output_is_never_wrapped(piped_run) -> None:
    root, result = piped_run
    out = result.stdout + result.stderr
    assert "\x1b" not in out  # no control codes
    assert f"outputs in {root}/experiments/baseline (report: {root}/experiments/baseline/report.html)" in result.stdout
    assert all(len(line) <= 1000 for line in out.splitlines()) and max(map(len, out.splitlines())) > 30


def test_piped_progress_lines_with_speed_and_eta(piped_run) -> None:
    _, result = piped_run
    lines = [line for line in result.stdout.splitlines() if "img/s" in line and "run eta" in line]
    assert lines  # progress lines go with the results (one stream: `comp fold-train > log` keeps them)
    assert any(re.search(r"fold 0 epoch 1/1: \d+/\d+ .*img/s .*fold eta (\d+\.\ds|\d+s|\d+m\d\ds)", line) for line in lines)
    assert "(new best)" in result.stdout and "  *" not in result.stdout


def test_piped_epoch_lines_and_results_share_stdout(piped_run) -> None:
    _, result = piped_run
    out = result.stdout
    assert "fold 1 epoch 1/1: train loss" in out and "fold 1 epoch 1/1: train loss" not in result.stderr
    assert out.index("fold 1 epoch 1/1: train loss") < out.index("CV ") < out.index("outputs in ")
    assert re.search(r"fold 0 epoch 1/1: .* best \d\.\d{4} @ epoch 1  lr \S+  \d+ img/s  \d+\.\ds", out)


def test_every_fold_writes_train_log_and_epochs_count_from_one(piped_run) -> None:
    root, _ = piped_run
    exp = root / "experiments" / "baseline"
    for fold in (0, 1):
        text = (exp / f"fold{fold}" / "train.log").read_text()
        assert text.startswith("# ") and "fold-train -w" in text
        assert f"fold {fold} epoch 1/1: train loss" in text
        assert all(re.match(r"(# |\d\d:\d\d:\d\d )", line) for line in text.splitlines())  # each line has its time
        assert pd.read_csv(exp / f"fold{fold}" / "history.csv")["epoch"].tolist() == [1]
    assert comp.Workspace(root, progress=False).scores()["best_epoch"].tolist() == [1, 1]


def test_slow_epoch_prints_periodic_lines() -> None:
    out = io.StringIO()
    progress = LineProgress(stream=out, every=0.05)
    for _ in progress.track(range(2), description="fold 0"):
        for _ in progress.track(range(8), description="fold 0 epoch 1/2"):
            time.sleep(0.02)
            progress.note(loss=0.5)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3  # several lines inside each slow epoch, not one at its end
    assert all("run eta" in line for line in lines) and any("loss=0.5" in line for line in lines)


def test_errors_and_commands_are_one_line_at_any_width(tmp_path) -> None:
    for columns in (20, 80):
        result = run_comp(["folds"], columns=columns, cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.strip().count("\n") == 0 and "no comp.yaml here" in result.stderr
        assert "run comp init" in result.stderr


def test_every_verb_outside_a_workspace_says_run_init(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in (["leaderboard"], ["config"], ["fold-train"], ["predict"], ["tune"], ["eda"], ["ensemble", "-e", "x"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "no comp.yaml here" in result.output and "run comp init" in result.output, args


def test_ctrl_c_prints_the_resume_command(tiny_ws, monkeypatch) -> None:
    import comp.cli.train as cli_train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_train, "train_here", interrupted)
    result = CliRunner().invoke(app, ["fold-train", "-w", str(tiny_ws), "--force", "--folds", "0", "--set", "train.lr=0.01"])
    assert result.exit_code == 130
    assert f"comp fold-train -w {tiny_ws} -e baseline --folds 0 --set train.lr=0.01" in result.output
    assert "--force" not in result.output.split("resume with:")[1]


def test_cli_polish(tiny_ws) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["--version"]).output.strip() == f"comp {comp.__version__}"
    help_text = runner.invoke(app, ["fold-train", "--help"], env={"COLUMNS": "200"}).output
    assert "<bool>" not in help_text and "--seed" in help_text and "--track" in help_text
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    order = [top.index(f" {verb} ") for verb in ("init", "eda", "folds", "fold-train", "tune", "predict", "ensemble")]
    assert order == sorted(order)
    shown = runner.invoke(app, ["config", "-w", str(tiny_ws), "--set", "train.lr=0.01"]).output
    assert re.search(r"train\.lr +0\.01  # --set", shown) and re.search(r"model\.name +test_resnet  # experiments/baseline.yaml", shown)
    assert re.search(r"train\.momentum +0\.9  # default", shown) and "train_hash" in shown


def test_leaderboard_sort_and_display() -> None:
    from comp.cli.leaderboard import shown
    from comp.blend.leaderboard import sort_rows

    rows = pd.DataFrame({"experiment": ["b", "a", "c"], "cv_mean": [0.5, float("nan"), 0.7], "oof": [0.4, 0.9, 0.1],
                         "minutes": [1.5, float("nan"), 61.25]})
    assert sort_rows(rows, "experiments")["experiment"].tolist() == ["c", "b", "a"]
    assert sort_rows(rows, "experiments", "oof")["experiment"].tolist() == ["a", "b", "c"]
    assert sort_rows(rows, "experiments", "name")["experiment"].tolist() == ["a", "b", "c"]
    assert sort_rows(rows, "experiments", greater_is_better=False)["experiment"].tolist() == ["b", "c", "a"]
    out = shown(sort_rows(rows, "experiments"))
    assert out["minutes"].tolist() == ["1h01m", "1m30s", "-"] and out["cv_mean"].tolist() == ["0.7000", "0.5000", "-"]
    with pytest.raises(CompError, match="--sort must be one of"):
        sort_rows(rows, "experiments", "speed")
    assert clock(75) == "1m15s" and clock(None) == "-"


def test_track_does_not_change_train_hash(tiny_ws) -> None:
    ws = comp.Workspace(tiny_ws, progress=False)
    plain, tracked = ws.config(), ws.config(overrides={"track": ["tensorboard"]})
    assert tracked.track == ("tensorboard",) and plain.train_hash() == tracked.train_hash()
    with pytest.raises(CompError, match="track"):
        ws.config(overrides={"track": ["neptune"]})


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    """The API round trip: folds, fold_train, predict --oof, ensemble, leaderboard (one tiny workspace)."""
    import torch

    from conftest import build_workspace

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = build_workspace(tmp_path_factory.mktemp("api") / "ws")
    ws = comp.Workspace(root, progress=False)
    try:
        folds = ws.folds(k=2)
        scores = ws.fold_train("baseline", overrides={"train.epochs": 1, "folds.k": 2})
        test = ws.predict("baseline", tta="hflip", oof=True)
        blend = ws.ensemble(["baseline"], name="api-blend", weights="equal")
    finally:
        torch.set_num_threads(threads)
    return root, ws, folds, scores, test, blend


def test_api_round_trip(api_run) -> None:
    root, ws, folds, scores, test, blend = api_run
    assert sorted(folds["fold"].unique().tolist()) == [0, 1] and len(folds) == 36
    assert scores["fold"].tolist() == [0, 1] and "macro_f1" in scores and scores.attrs["oof"] is not None
    assert len(test) == 9 and {"id", "p_c0", "p_c1", "p_c2"} <= set(test.columns)
    assert Path(blend["csv"]).is_file() and blend["members"] == ["baseline"]
    board = ws.leaderboard()
    assert board["experiment"].tolist() == ["baseline"]
    assert ws.config("baseline").model.name == "test_resnet"
    with pytest.raises(CompError, match="no comp.yaml here"):
        comp.Workspace(root / "data")


def test_report_is_self_contained_with_every_section(api_run, tmp_path) -> None:
    root, ws, *_ = api_run
    page = ws.report("baseline").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert str(root) not in page and str(Path.home()) not in page and "/tmp/" not in page
    for section in ("config", "environment", "fold-train", "predict", "ensemble-api-blend"):
        assert f"<section id='{section}'>" in page, section
    for words in ("OOF images with the highest loss", "Most-confused class pairs", "config hash", "torch",
                  "OOF gain of the TTA", "nested estimate"):
        assert words in page, words
    copy = tmp_path / "elsewhere" / "report.html"  # copied alone, it renders the same: nothing to resolve
    copy.parent.mkdir()
    copy.write_text(page)
    assert not re.findall(r'(?:src|href)="(?!data:|#)[^"]+"', copy.read_text())


def test_scores_record_the_environment(api_run) -> None:
    root, *_ = api_run
    env = comp.api.Paths.at(root)
    import json

    recorded = json.loads(env.scores_json("baseline").read_text())["environment"]
    assert {"python", "torch", "cuda", "timm", "albumentations", "gpu"} <= set(recorded)
