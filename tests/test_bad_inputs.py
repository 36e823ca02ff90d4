"""Bad inputs and faults a user can cause: one line naming the file or key and the fix, exit 2, no traceback.

Each row of CASES damages a fresh copy of a tiny workspace, runs one command, and checks the exit
code, that the error is one line matching the row's pattern and naming its file or key, that no
traceback is shown, and that no file of the workspace changed or vanished (a command may have made
new ones before it met the problem, e.g. the folds file or a lock guard). `.cache/` is left out of the
before/after hashes: it is a rebuildable cache (image checks, decoded images) that a command may
write to before it meets the bad input. Rows on a trained workspace copy one that a module
fixture trains once (k=2, 1 epoch, a tiny model, one torch thread).

Labels kept as written (`007` vs `7`, `01`, `NA`) and the ensemble's class check are tested at the end.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from comp.cli import app
from comp.core.errors import CompError
from conftest import TINY_EXPERIMENT, build_workspace

runner = CliRunner()
EPOCH_1 = {**TINY_EXPERIMENT, "train": {**TINY_EXPERIMENT["train"], "epochs": 1}}


# ---------------------------------------------------------------- damage helpers


def write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    """Replace a file of the workspace with `text`."""

    def damage(ws: Path) -> None:
        path = ws / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return damage


def edit_csv(rel: str, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    """Rewrite a CSV of the workspace (read as text) through `fn`."""

    def damage(ws: Path) -> None:
        frame = pd.read_csv(ws / rel, dtype=str, keep_default_na=False)
        fn(frame).to_csv(ws / rel, index=False)

    return damage


def header_only(rel: str) -> Callable[[Path], None]:
    return edit_csv(rel, lambda f: f.iloc[:0])


def set_yaml(rel: str, dotted: str, value: object) -> Callable[[Path], None]:
    """Set a dotted key in a YAML file of the workspace."""

    def damage(ws: Path) -> None:
        path = ws / rel
        doc = yaml.safe_load(path.read_text()) if path.is_file() else {}
        node = doc
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        path.write_text(yaml.safe_dump(doc, sort_keys=False))

    return damage


def cut(rel: str, size: int) -> Callable[[Path], None]:
    """Truncate a file of the workspace to `size` bytes."""

    def damage(ws: Path) -> None:
        (ws / rel).write_bytes((ws / rel).read_bytes()[:size])

    return damage


class NeedsCode:
    """An object whose unpickling needs this module's code: torch.load(weights_only=True) refuses it."""


def pickled(rel: str) -> Callable[[Path], None]:
    """Replace a file of the workspace with a torch.save of an object that needs code to unpickle."""

    def damage(ws: Path) -> None:
        import torch

        torch.save({"model": NeedsCode()}, ws / rel)

    return damage


def image(name: str, data: bytes) -> Callable[[Path], None]:
    return write(f"data/images/{name}", data)


def other_classes(ws: Path, exp: str) -> None:
    """experiments/<exp>: a copy of baseline whose checkpoints were trained on classes c0, c2, c3 (no c1)."""
    import torch

    shutil.copytree(ws / "experiments/baseline", ws / "experiments" / exp)
    shutil.copy(ws / "experiments/baseline.yaml", ws / "experiments" / f"{exp}.yaml")
    for ckpt in (ws / "experiments" / exp).glob("fold*/*.pt"):
        state = torch.load(ckpt, weights_only=True)
        torch.save({**state, "classes": ["c0", "c2", "c3"]}, ckpt)


def make_folds(ws: Path) -> None:
    assert invoke(ws, *FOLDS).exit_code == 0


def held_lock(fold_dir: str) -> Callable[[Path], None]:
    """A fold lock held by a process on another host (it cannot be checked from here)."""
    holder = {"host": "elsewhere", "pid": 4242, "started": None, "command": "comp fold-train", "time": "now", "job": "j"}
    return write(f"{fold_dir}/.lock", json.dumps(holder))


def a_submission(ws: Path) -> None:
    """sub.csv: a perfect submission (the solution itself), the file evaluate rows damage."""
    shutil.copy(ws / "solution.csv", ws / "sub.csv")


def then(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def damage(ws: Path) -> None:
        for step in steps:
            step(ws)

    return damage


def deny_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only workspace (tests run as root, who ignores permission bits): renames into it fail."""

    def replace(src, dst, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", replace)


def disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: flushing a written file fails with ENOSPC."""

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    name: str
    damage: Callable[[Path], None] | None  # what is wrong with a fresh workspace
    argv: tuple[str, ...]  # the command (--workspace is added)
    pattern: str  # regex the one error line must match
    names: str  # the file or key the message must name
    code: int = 2
    base: str = "tiny"  # tiny | trained
    patch: Callable[[pytest.MonkeyPatch], None] | None = field(default=None, compare=False)


def alias_bomb(levels: int = 9, width: int = 9, *, flow: bool = False) -> str:
    """Nested YAML anchors ("billion laughs"): `levels` lines, each alias repeated `width` times; width**levels values."""
    items = ['"lol"'] * width
    lines = [f"l0: &l0 [{', '.join(items)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    if flow:
        return "{" + ", ".join(lines) + "}"
    return "\n".join(lines) + "\n"


FOLDS = ("folds", "--k", "2")
EVAL = ("evaluate", "sub.csv", "--solution", "solution.csv")
PREDICT = ("predict", "-e", "baseline")
ENSEMBLE = ("ensemble", "-e", "baseline", "--name", "blend")

CASES = [
    # config files, keys and values
    Case("invalid yaml", write("comp.yaml", "data: [unclosed\n"), FOLDS, r"is not valid YAML: .* at line \d+", "comp.yaml"),
    Case("duplicate key in comp.yaml", write("comp.yaml", "metric: accuracy\nmetric: macro_f1\n"), FOLDS,
         r"duplicate key 'metric'.*line 2", "comp.yaml"),
    Case("duplicate key in experiment", write("experiments/baseline.yaml", "train:\n  lr: 0.1\n  lr: 0.2\n"), FOLDS,
         r"duplicate key 'lr'.*line 3", "experiments/baseline.yaml"),
    Case("yaml alias bomb", write("experiments/baseline.yaml", alias_bomb()), ("config",),
         r"aliases \(\*name\) expand to [\d,]+ more values than written \(comp allows 10,000\); write the values out",
         "experiments/baseline.yaml"),
    Case("yaml alias bomb in comp.yaml", write("comp.yaml", alias_bomb(6, 9)), FOLDS, r"aliases .* expand to 672,588 more",
         "comp.yaml"),
    Case("yaml recursive anchor", write("experiments/baseline.yaml", "train: &t {lr: [*t]}\n"), ("config",),
         r"an alias refers to a value that contains it", "experiments/baseline.yaml"),
    Case("--set alias bomb", None, (*FOLDS, "--set", "train.lr=" + alias_bomb(flow=True)), r"aliases .* expand to",
         "--set train.lr"),
    Case("yaml file too big", write("comp.yaml", "# " + "x" * 1_000_000 + "\n"), FOLDS,
         r"is 1,000,003 bytes, more than comp reads from a YAML file \(1,000,000\); check that it is the right file",
         "comp.yaml"),
    Case("comp.yaml not a mapping", write("comp.yaml", "- a\n- b\n"), FOLDS, r"must hold a mapping of keys, got list",
         "comp.yaml"),
    Case("no comp.yaml", lambda ws: (ws / "comp.yaml").unlink(), FOLDS, r"no comp\.yaml here .*run comp init", "comp.yaml"),
    Case("unknown key", set_yaml("comp.yaml", "data.lable_col", "x"), FOLDS,
         r"comp\.yaml: data\.lable_col is not a key; did you mean data\.label_col\?", "data.lable_col"),
    Case("unknown --set key", None, (*FOLDS, "--set", "train.learning_rate=1"), r"--set train\.learning_rate is not a key",
         "train.learning_rate"),
    Case("--set without =", None, (*FOLDS, "--set", "train.lr"), r"--set expects dotted\.key=value, got 'train\.lr'", "--set"),
    Case("image.size type", set_yaml("experiments/x.yaml", "image.size", "big"), ("fold-train", "-e", "x", "--k", "2"),
         r"^error: image\.size: expected an integer or \[h, w\], got 'big' \(experiments/x\.yaml\)$", "image.size"),
    Case("lr not a number", None, (*FOLDS, "--set", "train.lr=abc"), r"train\.lr: expected a number or auto or null, got 'abc' \(--set\)$",
         "train.lr"),
    Case("optimizer literal", set_yaml("comp.yaml", "train.optimizer", "adam"), FOLDS,
         r"train\.optimizer: expected one of adamw, sgd, got 'adam' \(comp\.yaml\)$", "train.optimizer"),
    Case("epochs zero", set_yaml("experiments/baseline.yaml", "train.epochs", 0), FOLDS,
         r"train\.epochs must be 1 or more, got 0 \(experiments/baseline\.yaml\)$", "train.epochs"),
    Case("unknown metric", set_yaml("comp.yaml", "metric", "macro_f2"), FOLDS,
         r"metric: unknown metric 'macro_f2'; did you mean macro_f1\?", "comp.yaml"),
    Case("unknown experiment", None, ("fold-train", "-e", "nope"), r"experiment 'nope' has no file experiments/nope\.yaml",
         "experiments/nope.yaml"),
    # --k
    Case("folds --k 0", None, ("folds", "--k", "0"), r"--k must be 2 or more", "--k"),
    Case("folds --k 1", None, ("folds", "--k", "1"), r"--k must be 2 or more", "--k"),
    Case("fold-train: batch_size larger than a fold", None, ("fold-train", "--k", "2", "--set", "train.batch_size=1000"),
         r"train\.batch_size=1000 is larger than the \d+ training samples per epoch.*; lower train\.batch_size$",
         "train.batch_size"),
    Case("fold-train --k 1", None, ("fold-train", "--k", "1"), r"folds\.k must be 2 or more, got 1 \(--set\)$", "folds.k"),
    Case("--k too big", None, ("folds", "--k", "9"), r"k=9 folds need at least 9 groups per class.*smaller --k", "--k"),
    # train.csv
    Case("train.csv zero bytes", write("data/train.csv", ""), FOLDS, r"is empty \(no header\)", "data/train.csv"),
    Case("train.csv header only", header_only("data/train.csv"), FOLDS, r"no rows in \S+train\.csv", "data/train.csv"),
    Case("train.csv missing", lambda ws: (ws / "data/train.csv").unlink(), FOLDS, r"does not exist; fix data\.train_csv",
         "data/train.csv"),
    Case("train.csv not CSV", write("data/train.csv", 'id,path,label\n"a,b\n'), FOLDS, r"could not be read as CSV",
         "data/train.csv"),
    Case("missing label column", edit_csv("data/train.csv", lambda f: f.rename(columns={"label": "target"})), FOLDS,
         r"data\.label_col column 'label' not in train\.csv.*columns are: id, path, target", "data.label_col"),
    Case("duplicate ids", edit_csv("data/train.csv", lambda f: f.assign(id=f["id"].where(f.index != 1, f["id"][0]))),
         FOLDS, r"train\.csv has 1 duplicated ids \(2 rows\), e\.g\. 'p000_0'", "train.csv"),
    Case("init: --id-col with duplicates", None, ("init", "--from", "csv", "--train", "data/train.csv", "--id-col",
                                                  "person", "--force"),
         r"--id-col 'person' has duplicated values, e\.g\. 'p000', 'p001'", "person"),
    Case("init: no unique id", edit_csv("data/train.csv", lambda f: f.assign(id=f["id"].where(f.index != 1, f["id"][0]),
                                                                              path=f["path"].where(f.index != 1, f["path"][0]))),
         ("init", "--from", "csv", "--train", "data/train.csv", "--force"), r"'id' repeats 'p000_0'", "p000_0"),
    Case("folds file lists an id twice", then(make_folds, edit_csv("folds/k2-s42.csv", lambda f: f.assign(
        id=f["id"].where(f.index != 1, f["id"][0])))), FOLDS, r"k2-s42\.csv does not match train\.csv .*ids listed twice: "
        r"'p000_0'", "folds/k2-s42.csv"),
    Case("empty labels", edit_csv("data/train.csv", lambda f: f.assign(label=f["label"].where(f.index != 4, ""))), FOLDS,
         r"train\.csv has 1 rows with an empty label \(first rows: \[4\]\)", "train.csv"),
    Case("empty image path", edit_csv("data/train.csv", lambda f: f.assign(path=f["path"].where(f.index != 2, ""))),
         FOLDS, r"column 'path' has 1 empty image paths", "path"),
    Case("missing image", lambda ws: (ws / "data/images/p000_0.png").unlink(), FOLDS,
         r"1 of 36 images in train\.csv do not exist", "p000_0.png"),
    Case("zero-byte image", image("p001_1.png", b""), FOLDS, r"1 images in train\.csv could not be decoded", "p001_1.png"),
    Case("truncated image", cut("data/images/p002_2.png", 60), FOLDS, r"could not be decoded", "p002_2.png"),
    Case("not an image", image("p100_0.png", b"hello, I am text"), FOLDS, r"could not be decoded", "p100_0.png"),
    # test.csv
    Case("test.csv zero bytes", write("data/test.csv", ""), FOLDS, r"is empty \(no header\)", "data/test.csv"),
    Case("test.csv header only", header_only("data/test.csv"), FOLDS, r"no rows in \S+test\.csv", "data/test.csv"),
    Case("test.csv duplicate ids", edit_csv("data/test.csv", lambda f: f.assign(id="t000")), FOLDS,
         r"test\.csv has 1 duplicated ids \(9 rows\)", "test.csv"),
    Case("test image missing", lambda ws: (ws / "data/images/test_3.png").unlink(), FOLDS,
         r"1 of 9 images in test\.csv do not exist", "test_3.png"),
    # evaluate
    Case("evaluate: submission header only", then(a_submission, header_only("sub.csv")), EVAL, r"no rows in \S*sub\.csv",
         "sub.csv"),
    Case("evaluate: solution zero bytes", then(a_submission, write("solution.csv", "")), EVAL, r"is empty \(no header\)",
         "solution.csv"),
    Case("evaluate: missing rows", then(a_submission, edit_csv("sub.csv", lambda f: f.iloc[:-1])), EVAL,
         r"sub\.csv: submission has 8 rows, expected 9", "sub.csv"),
    Case("evaluate: extra rows", then(a_submission, edit_csv("sub.csv", lambda f: pd.concat(
        [f, pd.DataFrame({"ImageID": ["t999"], "ans": ["c0"]})]))), EVAL, r"sub\.csv: submission has 10 rows, expected 9",
        "sub.csv"),
    Case("evaluate: unknown ids", then(a_submission, edit_csv("sub.csv", lambda f: f.assign(
        ImageID=f["ImageID"].where(f.index != 0, "zzz")))), EVAL, r"sub\.csv: submission ids differ.*'zzz'", "sub.csv"),
    Case("evaluate: wrong header", then(a_submission, edit_csv("sub.csv", lambda f: f.rename(columns={"ans": "label"}))),
         EVAL, r"sub\.csv: submission lacks column 'ans'", "sub.csv"),
    Case("evaluate: unknown label", then(a_submission, edit_csv("sub.csv", lambda f: f.assign(ans="c9"))), EVAL,
         r"sub\.csv: submission has labels not among the classes: \['c9'\]", "sub.csv"),
    Case("evaluate: solution lacks target", then(a_submission, edit_csv("solution.csv", lambda f: f.drop(columns="ans"))),
         EVAL, r"solution \S*solution\.csv lacks column 'ans'", "solution.csv"),
    Case("evaluate: solution lists an id twice", then(a_submission, edit_csv("solution.csv", lambda f: pd.concat(
        [f, f.iloc[[0]]]))), EVAL, r"solution \S*solution\.csv .*1 duplicated ids \(2 rows\), e\.g\. '\w+'.*keep one row "
        "per id in solution.csv", "solution.csv"),
    Case("evaluate: no submission file", None, EVAL, r"submission \S*sub\.csv does not exist", "sub.csv"),
    # the lead's checks of issue 11: folds that describe themselves, plain names, one writer per fold
    Case("folds: record missing", then(make_folds, lambda ws: (ws / "folds/k2-s42.json").unlink()), FOLDS,
         r"k2-s42\.csv has no record of how it was made.*comp folds --k 2 --seed 42 --force", "folds/k2-s42.csv"),
    Case("folds: train.csv changed since", then(make_folds, edit_csv("data/train.csv", lambda f: f.assign(
        label=f["label"].where(f.index != 0, "c1")))), FOLDS,
        r"k2-s42\.csv was made for other settings or data \(train\.csv's ids, labels or groups changed\)",
        "folds/k2-s42.csv"),
    Case("submission name with ..", None, ("ensemble", "-e", "baseline", "--name", "../evil"),
         r"submission name '\.\./evil' is not a plain name", "../evil"),
    Case("experiment name with ..", None, ("fold-train", "-e", "../x"), r"experiment name '\.\./x' is not a plain name",
         "../x"),
    Case("second writer", held_lock("experiments/baseline/fold0"), ("fold-train", "--k", "2"),
         r"fold0 of baseline is being trained by 'comp fold-train' \(pid 4242 on elsewhere.*delete \S+fold0/\.lock",
         "fold0/.lock"),
    # the file system
    Case("read-only workspace", None, FOLDS, r"permission denied writing \S+: the workspace is read-only\?", "{ws}",
         patch=deny_replace),
    Case("disk full", None, FOLDS, r"no space left on device writing \S+; free space and rerun \(nothing already written "
         r"was changed\)", "{ws}", patch=disk_full),
    # a trained workspace: checkpoints, member tables, the sample submission
    Case("predict: truncated checkpoint", cut("experiments/baseline/fold1/best.pt", 300), PREDICT,
         r"best\.pt is corrupt or truncated .*retrain that fold with `comp fold-train -e baseline --fold 1`$",
         "fold1/best.pt", base="trained"),
    Case("predict: garbage checkpoint", write("experiments/baseline/fold0/best.pt", b"\x00garbage" * 50), PREDICT,
         r"corrupt or truncated.*--fold 0", "fold0/best.pt", base="trained"),
    Case("ensemble: corrupt checkpoint", write("experiments/baseline/fold1/best.pt", b"PK\x03\x04 not a zip"), ENSEMBLE,
         r"corrupt or truncated.*comp fold-train -e baseline --fold 1", "fold1/best.pt", base="trained"),
    Case("predict: pickled checkpoint", pickled("experiments/baseline/fold0/best.pt"), PREDICT,
         r"best\.pt holds pickled code \(\S*NeedsCode\) that comp will not run \(it loads weights only\); load it "
         r"where its code lives and re-save the weights alone: torch\.save\(model\.state_dict\(\), 'weights\.pt'\)",
         "fold0/best.pt", base="trained"),
    Case("fold-train: pickled pretrained weights", pickled("weights.pth"),
         ("fold-train", "--k", "2", "--set", "model.pretrained_path=weights.pth"),
         r"could not read weights from model\.pretrained_path weights\.pth: it holds pickled code \(\S*NeedsCode\) that "
         r"comp will not run", "weights.pth"),
    Case("predict --oof: oof.csv header only", header_only("experiments/baseline/oof.csv"), (*PREDICT, "--oof"),
         r"no rows in \S+oof\.csv", "experiments/baseline/oof.csv", base="trained"),
    Case("ensemble: oof.csv zero bytes", then(write("experiments/baseline/oof.csv", ""),
                                              lambda ws: (ws / "experiments/baseline/oof_tta.csv").unlink()),
         ENSEMBLE, r"oof\.csv is empty \(no header\)", "experiments/baseline/oof.csv", base="trained"),
    Case("ensemble: sample header only", header_only("data/sample_submission.csv"), ENSEMBLE,
         r"no rows in \S+sample_submission\.csv", "sample_submission.csv", base="trained"),
    Case("ensemble: sample id not in test.csv", edit_csv("data/sample_submission.csv", lambda f: f.assign(
        ImageID=f["ImageID"].where(f.index != 2, "t777"))), ENSEMBLE,
        r"1 ids of \S+sample_submission\.csv are not in \S+test\.csv \(e\.g\. \['t777'\]\).*fix sample_submission\.csv",
        "sample_submission.csv", base="trained"),
    Case("ensemble: member trained on other classes", lambda ws: other_classes(ws, "wider"),
         ("ensemble", "-e", "wider", "-e", "baseline"),
         r"best\.pt predicts other classes than train\.csv \(extra classes \['c3'\], missing classes \['c1'\]\)",
         "experiments/wider/fold", base="trained"),
    Case("fold-train --force: missing weights file", None, ("fold-train", "--fold", "0", "--force", "--set",
                                                            "model.pretrained_path=/no/such/file.pth"),
         r"model\.pretrained_path '/no/such/file\.pth' does not exist", "pretrained_path", base="trained"),
    Case("fold-train --force: no such device", None, ("fold-train", "--fold", "0", "--force", "--set",
                                                      "train.device=cuda:7"),
         r"train\.device=cuda:7 but", "train.device", base="trained"),
    Case("ensemble: untrained member", None, ("ensemble", "-e", "baseline", "-e", "ghost"),
         r"experiment 'ghost' has not been trained; run `comp fold-train -e ghost`", "ghost/config.yaml", base="trained"),
]


# ---------------------------------------------------------------- workspaces


def snapshot(ws: Path) -> dict[str, str]:
    """sha256 of every file under the workspace, except the rebuildable .cache/."""
    return {str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(ws.rglob("*")) if p.is_file() and ".cache" not in p.relative_to(ws).parts}


def invoke(ws: Path, *argv: str):
    return runner.invoke(app, [*argv, "--workspace", str(ws)])


def odd_images(ws: Path) -> None:
    """One 16-bit, one CMYK and one grayscale image in train and test: valid inputs comp must take."""
    rng = np.random.default_rng(3)
    images = ws / "data" / "images"
    Image.fromarray(rng.integers(0, 65535, (16, 16), dtype=np.uint16)).save(images / "p001_0.png")  # I;16 PNG
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), mode="L").save(images / "p102_1.png")
    Image.open(images / "p201_2.png").convert("CMYK").save(images / "p201_2.jpg")
    Image.open(images / "test_4.png").convert("L").save(images / "test_4.png")
    edit_csv("data/train.csv", lambda f: f.assign(path=f["path"].replace("p201_2.png", "p201_2.jpg")))(ws)


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny workspace, and a copy trained with `comp fold-train --k 2` (1 epoch) and predicted."""
    import torch

    root = tmp_path_factory.mktemp("bases")
    tiny = build_workspace(root / "tiny", experiment=EPOCH_1)
    trained = build_workspace(root / "trained", experiment=EPOCH_1)
    set_yaml("comp.yaml", "folds.k", 2)(trained)
    odd_images(trained)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for argv in (("fold-train",), ("predict", "--oof")):
            result = invoke(trained, *argv)
            assert result.exit_code == 0, result.output
    finally:
        torch.set_num_threads(threads)
    return {"tiny": tiny, "trained": trained}


@pytest.fixture
def fresh(bases: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    def copy(base: str) -> Path:
        return Path(shutil.copytree(bases[base], tmp_path / "ws", symlinks=True))

    return copy


# ---------------------------------------------------------------- the table's test


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, f"expected one error line, got:\n{output}"
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, fresh: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    ws = fresh(case.base)
    if case.damage is not None:
        case.damage(ws)
    before = snapshot(ws)
    monkeypatch.chdir(ws)  # evaluate's paths are relative to the workspace
    if case.patch is not None:
        case.patch(monkeypatch)
    result = invoke(ws, *case.argv)
    monkeypatch.undo()
    assert result.exit_code == case.code, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None))), result.output
    line = error_line(result.output)
    assert re.search(case.pattern, line), line
    assert case.names.format(ws=ws) in line, line
    assert not re.search(r"got (\S+) \(got \1\)", line), line  # never says the value twice
    after = snapshot(ws)
    assert {k: after.get(k) for k in before} == before, "an existing artifact changed or vanished"


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


def test_real_process_one_line_and_comp_debug_traceback(bases: dict[str, Path], tmp_path: Path) -> None:
    ws = Path(shutil.copytree(bases["tiny"], tmp_path / "ws"))
    header_only("data/train.csv")(ws)
    argv = [sys.executable, "-m", "comp", "folds", "--k", "2", "--workspace", str(ws)]
    env = {**os.environ, "COMP_DEBUG": "0", "COLUMNS": "300"}
    plain = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr.strip().startswith("error: no rows in") and len(plain.stderr.strip().splitlines()) == 1
    debug = subprocess.run(argv, capture_output=True, text=True, env={**env, "COMP_DEBUG": "1"}, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "CompError" in debug.stderr


def test_odd_image_modes_train_and_predict(bases: dict[str, Path]) -> None:
    """16-bit, CMYK and grayscale images are valid: the trained base holds one of each, and trained and predicted."""
    trained = bases["trained"]
    assert (trained / "experiments/baseline/test.csv").is_file() and (trained / "experiments/baseline/fold1/best.pt").is_file()
    assert Image.open(trained / "data/images/p001_0.png").mode.startswith("I")
    assert Image.open(trained / "data/images/p201_2.jpg").mode == "CMYK"


# ---------------------------------------------------------------- labels kept as written


def relabel(ws: Path, mapping: dict[str, str]) -> None:
    """Rename the classes of a built workspace in train.csv, the solution and the sample."""
    edit_csv("data/train.csv", lambda f: f.assign(label=f["label"].map(mapping)))(ws)
    edit_csv("solution.csv", lambda f: f.assign(ans=f["ans"].map(mapping)))(ws)
    edit_csv("data/sample_submission.csv", lambda f: f.assign(ans=f["ans"].map(mapping)))(ws)


def tables_of(ws: Path):
    from comp.core.config import load_config
    from comp.data.tables import load_tables
    from comp.core.layout import Layout

    return load_tables(load_config(ws), Layout.at(ws), check_images=False)


def test_007_and_7_are_two_classes_and_01_stays_01(bases, tmp_path: Path) -> None:
    ws = Path(shutil.copytree(bases["tiny"], tmp_path / "ws"))
    relabel(ws, {"c0": "007", "c1": "7", "c2": "01"})
    t = tables_of(ws)
    assert t.classes == ("01", "007", "7")  # numeric order; 007 and 7 tie on value, then by text
    assert t.train["label"].value_counts().to_dict() == {"007": 12, "7": 12, "01": 12}
    shutil.copy(ws / "solution.csv", ws / "sub.csv")
    scored = invoke(ws, "evaluate", str(ws / "sub.csv"), "--solution", str(ws / "solution.csv"))
    assert scored.exit_code == 0 and "macro_f1 = 1.00000" in scored.output, scored.output


def test_na_none_null_are_labels(bases, tmp_path: Path) -> None:
    ws = Path(shutil.copytree(bases["tiny"], tmp_path / "ws"))
    relabel(ws, {"c0": "NA", "c1": "None", "c2": "null"})
    assert tables_of(ws).classes == ("NA", "None", "null")
    edit_csv("data/train.csv", lambda f: f.assign(label=f["label"].where(f.index != 0, "")))(ws)
    with pytest.raises(CompError, match=r"1 rows with an empty label"):
        tables_of(ws)


def test_numeric_classes_sort_numerically_and_explicit_order_is_kept(bases, tmp_path: Path) -> None:
    ws = Path(shutil.copytree(bases["tiny"], tmp_path / "ws"))
    relabel(ws, {"c0": "10", "c1": "9", "c2": "-1.5"})
    assert tables_of(ws).classes == ("-1.5", "9", "10")
    set_yaml("comp.yaml", "data.classes", [10, 9, -1.5])(ws)  # YAML numbers compare as the text written
    assert tables_of(ws).classes == ("10", "9", "-1.5")


def test_submission_writes_labels_as_written(bases, tmp_path: Path) -> None:
    from comp.core.config import load_config
    from comp.blend.submission import build_submission, write_submission
    from comp.core.layout import Layout

    ws = Path(shutil.copytree(bases["tiny"], tmp_path / "ws"))
    relabel(ws, {"c0": "01", "c1": "NA", "c2": "7"})
    cfg, classes = load_config(ws), tables_of(ws).classes
    ids = [f"t{i:03d}" for i in range(9)]
    probs = np.eye(3)[[i % 3 for i in range(9)]]
    frame = build_submission(ids, probs, classes, cfg.submission, order=ids)
    csv, _ = write_submission(Layout.at(ws), "s", frame, cfg.submission, expected=ids, classes=classes, manifest={})
    written = csv.read_text().splitlines()
    assert written[1:4] == [f"t000,{classes[0]}", f"t001,{classes[1]}", f"t002,{classes[2]}"]
    assert {"01", "NA", "7"} == {line.split(",")[1] for line in written[1:]}


@pytest.mark.parametrize("order", [("baseline", "wider"), ("wider", "baseline")])
def test_ensemble_refuses_members_of_other_classes_in_either_order(bases, tmp_path: Path, order) -> None:
    ws = Path(shutil.copytree(bases["trained"], tmp_path / "ws"))
    other_classes(ws, "wider")
    before = snapshot(ws)
    result = invoke(ws, "ensemble", "-e", order[0], "-e", order[1], "--name", "blend")
    assert result.exit_code == 2, result.output
    line = error_line(result.output)
    assert re.search(r"wider/fold\d/best\.pt predicts other classes than train\.csv "
                     r"\(extra classes \['c3'\], missing classes \['c1'\]\)", line), line
    assert snapshot(ws) == before


@pytest.mark.parametrize("swap", [False, True])
def test_member_tables_with_other_classes_are_refused_in_either_order(swap: bool) -> None:
    from comp.blend.ensemble import align_members

    same = pd.DataFrame({"id": ["x", "y"], "p_007": [0.5, 0.5], "p_7": [0.5, 0.5]})
    other = same.assign(p_07=0.0).drop(columns="p_7")  # '07' instead of '7': a near miss, not the same class
    frames, names = [same, other], ["same", "other"]
    if swap:
        frames, names = frames[::-1], names[::-1]
    with pytest.raises(CompError, match=r"member 'other' has other classes than train\.csv "
                                        r"\(extra classes \['07'\], missing classes \['7'\]\)"):
        align_members(frames, ["007", "7"], names=names)
