"""Reliability fixes found by probing (issue 28): each test fails without its fix."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comp.cli import app
from comp.core.config import load_yaml
from comp.core.errors import CompError
from conftest import TINY_EXPERIMENT, build_workspace

runner = CliRunner()
EPOCH_1 = {**TINY_EXPERIMENT, "train": {**TINY_EXPERIMENT["train"], "epochs": 1}}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- YAML: one reader, limits


def test_merge_keys_and_small_aliases_still_read() -> None:
    doc = load_yaml("base: &b {x: 1, y: [1, 2]}\nother: {<<: *b, z: 3, x: 2}\nagain: *b\n")
    assert doc["other"] == {"x": 2, "y": [1, 2], "z": 3} and doc["again"] == {"x": 1, "y": [1, 2]}


def test_duplicate_keys_are_still_refused_next_to_a_merge() -> None:
    with pytest.raises(Exception, match=r"duplicate key 'z'"):
        load_yaml("base: &b {x: 1}\nother: {<<: *b, z: 3, z: 4}\n")


def test_deeply_nested_yaml_is_one_error() -> None:
    with pytest.raises(CompError, match=r"--set x is nested too deeply to read"):
        load_yaml("[" * 2000 + "]" * 2000, source="--set x")


# ---------------------------------------------------------------- fold-train --force and config records


def fold_train_cli(ws: Path, *args: str):
    return runner.invoke(app, ["fold-train", "-w", str(ws), "--k", "2", *args])


def outputs_of(ws: Path) -> dict[str, str]:
    """sha256 of every file under experiments/baseline/ (what --force may replace)."""
    folder = ws / "experiments" / "baseline"
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny workspace trained with `comp fold-train --k 2` (1 epoch, one torch thread)."""
    import torch

    ws = build_workspace(tmp_path_factory.mktemp("probing") / "ws", experiment=EPOCH_1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = fold_train_cli(ws)
        assert result.exit_code == 0, result.output
    finally:
        torch.set_num_threads(threads)
    return ws


@pytest.fixture
def copy_of(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "ws"))


def test_force_failing_before_its_first_epoch_puts_the_old_outputs_back(copy_of: Path) -> None:
    before = outputs_of(copy_of)
    assert {"fold0/best.pt", "fold0/last.pt", "fold0/history.csv", "oof.csv", "scores.json", "report.html"} <= set(before)
    result = fold_train_cli(copy_of, "--fold", "0", "--force", "--set", "train.batch_size=64")  # fails in fit_fold
    assert result.exit_code == 2 and "train.batch_size=64 is larger than" in result.output, result.output
    assert outputs_of(copy_of) == before
    assert not list((copy_of / "experiments" / "baseline").glob(".replaced-*"))


def test_force_deletes_the_old_outputs_once_the_new_run_trained(copy_of: Path) -> None:
    old = (copy_of / "experiments/baseline/fold0/history.csv").read_bytes()
    result = fold_train_cli(copy_of, "--fold", "0", "--force", "--set", "train.lr=0.001")
    assert result.exit_code == 0, result.output
    folder = copy_of / "experiments" / "baseline"
    assert not list(folder.glob(".replaced-*")) and not (folder / "fold1").exists()  # fold 1 was not retrained
    assert (folder / "fold0/best.pt").is_file() and (folder / "fold0/history.csv").read_bytes() != old


def test_a_killed_force_run_is_settled_by_the_next_run(copy_of: Path) -> None:
    from comp.core.replace import set_aside

    folder = copy_of / "experiments" / "baseline"
    before = outputs_of(copy_of)
    aside = set_aside(folder)
    dead = aside.with_name(aside.name.rsplit("-", 1)[0] + "-999999999")  # a pid no process has
    aside.rename(dead)
    (folder / "config.yaml").write_text("train_hash: from-the-killed-run\n")
    result = fold_train_cli(copy_of)  # nothing of the killed run trained: the old outputs are back, nothing to do
    assert result.exit_code == 0, result.output
    assert not dead.exists() and outputs_of(copy_of)["fold0/best.pt"] == before["fold0/best.pt"]


def test_a_record_no_epoch_was_trained_under_refuses_nothing(tmp_path: Path) -> None:
    ws = build_workspace(tmp_path / "ws", experiment=EPOCH_1)
    failed = fold_train_cli(ws, "--set", "train.batch_size=64")
    assert failed.exit_code == 2 and (ws / "experiments/baseline/config.yaml").is_file(), failed.output
    fixed = fold_train_cli(ws, "--fold", "0")
    assert fixed.exit_code == 0, fixed.output


def test_refusal_names_the_changed_keys_and_says_more_epochs_start_over(copy_of: Path) -> None:
    result = fold_train_cli(copy_of, "--set", "train.epochs=2", "--set", "image.size=24")
    assert result.exit_code == 2
    line = " ".join(result.output.split())
    assert "image.size 32 -> 24; train.epochs 1 -> 2;" in line, line
    assert "cannot continue for more epochs" in line and "--force" in line and "new experiment name" in line, line


def test_lr_auto_ignores_a_record_no_epoch_was_trained_under(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import comp.train.lrfind as lrfind
    from comp.core.config import load_config
    from comp.core.layout import Layout

    root = build_workspace(tmp_path / "ws", experiment=EPOCH_1)
    ws = Layout.at(root)
    ws.exp_dir("baseline").mkdir(parents=True)
    ws.config_yaml("baseline").write_text("train_hash: of-a-run-that-failed-its-checks\ntrain: {lr: 0.1}\n")
    monkeypatch.setattr(lrfind, "find_lr", lambda *a, **k: SimpleNamespace(suggestion=0.01, rule="stub"))
    cfg = load_config(root, "baseline", ["train.lr=auto"])
    assert lrfind.resolve_auto_lr(cfg, ws, "baseline").train.lr == 0.01


# ---------------------------------------------------------------- checkpoints that hold code, torch's errors in one line


class NeedsCode:
    """Unpickling this needs this module's code: torch.load(weights_only=True) refuses it."""


@pytest.mark.parametrize("content", ["pickled", "garbage"])
def test_weights_file_errors_are_one_line(tmp_path: Path, content: str) -> None:
    import torch

    from comp.model.factory import read_state_dict

    path = tmp_path / "weights.pth"
    if content == "pickled":
        torch.save({"model": NeedsCode()}, path)
    else:
        path.write_bytes(b"PK\x03\x04 not a zip" * 20)
    with pytest.raises(CompError) as caught:
        read_state_dict(path)
    text = str(caught.value)
    assert "\n" not in text and "\x1b" not in text and "weights_only=False" not in text, text
    if content == "pickled":
        assert "holds pickled code (" in text and "NeedsCode) that comp will not run" in text, text


# ---------------------------------------------------------------- the exported bundle's predict.py


def test_bundle_weights_that_are_not_safetensors_are_one_error_line(tmp_path: Path, capsys) -> None:
    import torch

    from comp.export import bundle_predict as bp

    weights = tmp_path / "baseline.fold0.safetensors"
    torch.save({"w": torch.zeros(2)}, weights)  # a torch file where safetensors belongs
    with pytest.raises(bp.BundleError, match=r"baseline\.fold0\.safetensors is not a safetensors weights file "
                                             r"\(.*\); re-export the bundle with `comp export`"):
        bp.load_state(weights)
    with pytest.raises(bp.BundleError, match=r"missing\.safetensors is missing from the bundle; re-export"):
        bp.load_state(tmp_path / "missing.safetensors")


def test_export_judges_copied_checkpoints_by_content(copy_of: Path) -> None:
    import os
    import time

    assert runner.invoke(app, ["predict", "-w", str(copy_of), "--tta", "none"]).exit_code == 0
    later = time.time() + 100
    for path in copy_of.rglob("*"):  # `cp -r`: the same bytes, new mtimes
        os.utime(path, (later, later))
    result = runner.invoke(app, ["export", "baseline", "--to", str(copy_of / "bundle"), "--check", "0", "-w", str(copy_of)])
    assert result.exit_code == 0, result.output
    ckpt = copy_of / "experiments/baseline/fold0/best.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # other bytes, same size
    again = runner.invoke(app, ["export", "baseline", "--to", str(copy_of / "bundle2"), "--check", "0", "-w", str(copy_of)])
    assert again.exit_code == 2 and "its checkpoints changed since its test predictions were made" in again.output


# ---------------------------------------------------------------- comp init: labels with spaces


@pytest.mark.parametrize("labels, kind, flag", [
    (["red car", "blue car", "red truck"], "multiclass", "--task multilabel"),  # names with a space: no combinations
    (["cat", "cat dog", "dog"], "multilabel", "--task multiclass"),  # `cat` inside `cat dog`: tags
])
def test_labels_with_spaces_ask_which_task(tmp_path: Path, labels: list[str], kind: str, flag: str) -> None:
    from comp.init import init_csv
    from comp.core.layout import Layout

    root = build_workspace(tmp_path / "ws", labels=labels)
    plan = init_csv(root / "data" / "train.csv", Layout.at(root), label_col="label")
    assert plan.comp.get("task", "multiclass") == kind
    question = [n for n in plan.notes if n.startswith("warning:")]
    assert len(question) == 1 and "hold spaces" in question[0] and "?" in question[0] and flag in question[0], plan.notes


# ---------------------------------------------------------------- CSVs separated by ;


def test_semicolon_separated_csvs_are_read(tmp_path: Path) -> None:
    import pandas as pd

    from comp.init import init_csv
    from comp.core.layout import Layout

    root = build_workspace(tmp_path / "ws", experiment=EPOCH_1)
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        path = root / "data" / name
        pd.read_csv(path, dtype=str).to_csv(path, sep=";", index=False)
    folds = runner.invoke(app, ["folds", "--k", "2", "-w", str(root)])
    assert folds.exit_code == 0, folds.output
    plan = init_csv(root / "data" / "train.csv", Layout.at(root), test_csv=root / "data" / "test.csv",
                    sample_csv=root / "data" / "sample_submission.csv")
    assert plan.comp["data"]["id_col"] == "id" and plan.comp["data"]["image_col"] == "path"
    assert plan.comp["submission"]["id_col"] == "ImageID" and plan.comp["submission"]["target_col"] == "ans"


# ---------------------------------------------------------------- image paths that leave the image root


def test_image_paths_outside_the_root_are_warned_in_init_and_eda(tmp_path: Path) -> None:
    import pandas as pd
    import yaml

    from comp.core.config import load_config
    from comp.eda.report import outside_root_flags
    from comp.data.tables import load_tables
    from comp.init import init_csv
    from comp.core.layout import Layout

    root = build_workspace(tmp_path / "ws")
    shutil.copy(root / "data/images/p000_0.png", tmp_path / "outside.png")
    train = pd.read_csv(root / "data/train.csv", dtype=str)
    train.loc[0, "path"] = "../../../outside.png"
    train.loc[1, "path"] = str(tmp_path / "outside.png")  # absolute, elsewhere
    train.to_csv(root / "data/train.csv", index=False)
    ws = Layout.at(root)
    plan = init_csv(root / "data" / "train.csv", ws, image_root=root / "data" / "images")
    warned = [n for n in plan.notes if "leave the image root" in n]
    assert len(warned) == 1 and "2 image paths of the train table" in warned[0] and "../../../outside.png" in warned[0]
    assert "data.allow_outside_root: true" in warned[0]
    cfg = load_config(root)
    flags = outside_root_flags(cfg, ws, load_tables(cfg, ws, check_images=False))
    assert len(flags) == 1 and flags[0].startswith("2 image paths of train.csv leave the image root data/images "), flags
    assert "'../../../outside.png'" in flags[0] and str(root) not in flags[0]  # the example as the CSV wrote it
    from comp.eda.report import run_eda

    run_eda(cfg, ws, samples=1)
    html = (root / "eda" / "report.html").read_text()
    assert "leave the image root" in html and str(root) not in html and str(root) not in warned[0]
    assert str(root) not in (root / "eda" / "summary.json").read_text()
    doc = yaml.safe_load((root / "comp.yaml").read_text())
    doc["data"]["allow_outside_root"] = True
    (root / "comp.yaml").write_text(yaml.safe_dump(doc))
    quiet = load_config(root)
    assert outside_root_flags(quiet, ws, load_tables(quiet, ws, check_images=False)) == []
    assert quiet.train_hash() == cfg.train_hash()  # a warning's switch: trained experiments stay valid
