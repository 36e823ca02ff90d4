"""What comp guarantees: folds that cannot silently leak, names inside the workspace, one writer per fold."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from comp.cli import app
from comp.core.locks import FoldLocked, acquire_fold, fold_lock, release_fold
from comp.core.layout import FoldFiles

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


def tree_digest(root: Path) -> dict[str, bytes]:
    """Every file under root (but the rebuildable .cache) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".cache" not in p.parts}


# ---------------------------------------------------------------- folds


def test_ungrouped_folds_are_refused_by_a_grouped_experiment(tiny_ws: Path) -> None:
    """The reported leak: folds made with group_col=null, then fold-train with group_col: person."""
    made = cli("folds", "--k", "2", "-w", str(tiny_ws), "--set", "data.group_col=null")
    assert made.exit_code == 0, made.output
    frame = pd.read_csv(tiny_ws / "folds" / "k2-s42.csv", dtype=str)
    assert "group" not in frame.columns
    before = tree_digest(tiny_ws)
    for argv in (["fold-train", "--k", "2"], ["folds", "--k", "2"],
                 ["tune", "--trials", "1", "--set", "folds.k=2"]):
        result = cli(*argv, "-w", str(tiny_ws))
        assert result.exit_code == 2, (argv, result.output)
        out = " ".join(result.output.split())
        assert "k2-s42.csv was made for other settings or data" in out
        assert "data.group_col was none, now person" in out
        assert "comp folds --k 2 --seed 42 --force" in out and "Traceback" not in out
    assert tree_digest(tiny_ws) == before


def test_changed_stratify_and_changed_labels_are_refused(tiny_ws: Path) -> None:
    assert cli("folds", "--k", "2", "-w", str(tiny_ws)).exit_code == 0
    result = cli("fold-train", "--k", "2", "-w", str(tiny_ws), "--set", "folds.stratify=[gender]")
    assert result.exit_code == 2 and "folds.stratify was none, now gender" in " ".join(result.output.split())
    train = pd.read_csv(tiny_ws / "data" / "train.csv", dtype=str)
    train.loc[0, "label"] = "c2" if train.loc[0, "label"] != "c2" else "c1"
    train.to_csv(tiny_ws / "data" / "train.csv", index=False)
    result = cli("fold-train", "--k", "2", "-w", str(tiny_ws))
    assert result.exit_code == 2 and "train.csv's ids, labels or groups changed" in " ".join(result.output.split())


def test_a_folds_file_without_its_record_is_not_trusted(tiny_ws: Path) -> None:
    assert cli("folds", "--k", "2", "-w", str(tiny_ws)).exit_code == 0
    (tiny_ws / "folds" / "k2-s42.json").unlink()
    result = cli("fold-train", "--k", "2", "-w", str(tiny_ws))
    assert result.exit_code == 2 and "has no record of how it was made" in " ".join(result.output.split())
    fixed = cli("folds", "--k", "2", "--force", "-w", str(tiny_ws))
    assert fixed.exit_code == 0 and (tiny_ws / "folds" / "k2-s42.json").is_file()


def test_eda_reports_stale_folds_instead_of_using_them(tiny_ws: Path) -> None:
    from comp.core.config import load_config
    from comp.eda import run_eda
    from comp.core.layout import Layout

    assert cli("folds", "-w", str(tiny_ws), "--k", "2", "--set", "data.group_col=null").exit_code == 0
    cfg = load_config(tiny_ws, "baseline", ["folds.k=2"])
    result = run_eda(cfg, Layout.at(tiny_ws), samples=1)
    assert "data.group_col was none, now person" in result.summary["folds"]["error"]


def test_the_experiment_records_its_folds_and_refuses_other_data(tiny_ws: Path) -> None:
    from comp.data.folds import check_trained_on
    from comp.core.layout import Layout

    trained = cli("fold-train", "--k", "2", "-w", str(tiny_ws), "--set", "train.epochs=1")
    assert trained.exit_code == 0, trained.output
    ws = Layout.at(tiny_ws)
    recorded = yaml.safe_load(ws.config_yaml("baseline").read_text())["folds_file"]
    record = json.loads((tiny_ws / "folds" / "k2-s42.json").read_text())
    assert recorded["path"] == "folds/k2-s42.csv" and recorded["fingerprint"] == record["fingerprint"]
    from comp.core.config import load_config
    from comp.data.tables import load_tables

    tables = load_tables(load_config(tiny_ws, "baseline", ["folds.k=2"]), ws)
    check_trained_on(ws, "baseline", tables.train)  # same data: fine
    changed = tables.train.assign(label=tables.train["label"].iloc[::-1].to_numpy())
    with pytest.raises(Exception, match="retrain it with `comp fold-train -e baseline --force`"):
        check_trained_on(ws, "baseline", changed)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("argv", [
    ["ensemble", "-e", "baseline", "--name", "../data/train"],
    ["ensemble", "-e", "baseline", "--name", "sub/name"],
    ["ensemble", "-e", "../outside/x"],
    ["fold-train", "-e", "../outside/x"],
    ["fold-train", "-e", "/abs/dir/x"],
    ["predict", "-e", ".hidden"],
    ["tune", "-e", "a/b"],
])
def test_names_with_paths_are_refused_before_anything_is_written(tiny_ws: Path, argv: list[str]) -> None:
    before = tree_digest(tiny_ws.parent)
    result = cli(*argv, "-w", str(tiny_ws))
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert "is not a plain name: use letters, digits, '-', '_' and '.'" in out and "Traceback" not in out
    assert tree_digest(tiny_ws.parent) == before


# ---------------------------------------------------------------- locks


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def write_lock(fold_dir: Path, **fields) -> None:
    fold_dir.mkdir(parents=True, exist_ok=True)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": None, "command": "comp fold-train",
              "time": "2026-01-01 00:00:00", "job": "another-job", **fields}
    FoldFiles(fold_dir).lock.write_text(json.dumps(holder))


def test_a_second_writer_fails_at_once_naming_the_holder(tiny_ws: Path, caplog) -> None:
    fold0 = tiny_ws / "experiments" / "baseline" / "fold0"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(fold0, pid=sleeper.pid, command="comp fold-train -e baseline")
        result = cli("fold-train", "--k", "2", "-w", str(tiny_ws), "--set", "train.epochs=1")
        out = " ".join(result.output.split())
        assert result.exit_code == 2, result.output
        assert f"fold0 of baseline is being trained by 'comp fold-train -e baseline' (pid {sleeper.pid} on" in out
        assert not (fold0 / "best.pt").exists()
        # with --folds the held fold is skipped and the others train: several machines share an experiment
        shared = cli("fold-train", "--k", "2", "--folds", "0,1", "-w", str(tiny_ws), "--set", "train.epochs=1")
        assert shared.exit_code == 0, shared.output
        assert "fold 0 skipped: fold0 of baseline is being trained by" in caplog.text
        assert (tiny_ws / "experiments" / "baseline" / "fold1" / "best.pt").is_file()
        assert not (fold0 / "best.pt").exists() and FoldFiles(fold0).lock.is_file()
        forced = cli("fold-train", "--k", "2", "--force", "-w", str(tiny_ws))
        assert forced.exit_code == 2 and "--force would replace" in " ".join(forced.output.split())
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_dead_holder_on_this_host_is_taken_over_with_a_note(tiny_ws: Path, caplog) -> None:
    fold0 = tiny_ws / "experiments" / "baseline" / "fold0"
    write_lock(fold0, pid=dead_pid())
    result = cli("fold-train", "--k", "2", "--folds", "0", "-w", str(tiny_ws), "--set", "train.epochs=1")
    assert result.exit_code == 0, result.output
    assert "taking over the lock of 'comp fold-train'" in caplog.text and "which is no longer running" in caplog.text
    assert (fold0 / "best.pt").is_file() and not FoldFiles(fold0).lock.exists()  # released when done


def test_lock_holder_on_another_host_and_reused_pid(tmp_path: Path) -> None:
    fold = tmp_path / "fold0"
    write_lock(fold, host="another-machine", pid=1)
    with pytest.raises(FoldLocked, match=r"on another-machine.*if that process is gone, delete .*\.lock and rerun"):
        acquire_fold(fold)
    write_lock(fold, pid=os.getpid(), started=-1)  # a live pid whose start tick differs: the pid was reused
    assert acquire_fold(fold) is True
    release_fold(fold)
    assert not FoldFiles(fold).lock.exists()


def test_one_job_shares_its_locks(tmp_path: Path, monkeypatch) -> None:
    from comp.core import locks

    fold = tmp_path / "fold0"
    with fold_lock(fold):
        assert acquire_fold(fold) is False  # the same job (a --devices child, a torchrun rank) holds it already
        holder = json.loads(FoldFiles(fold).lock.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        monkeypatch.setenv(locks.JOB_ENV, "someone-else")
        with pytest.raises(FoldLocked):
            acquire_fold(fold)
        monkeypatch.delenv(locks.JOB_ENV)
    assert not FoldFiles(fold).lock.exists()
