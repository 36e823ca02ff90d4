"""One fold trained data-parallel by 2 gloo processes under torchrun: whole validation set, rank-0 artifacts, resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import build_workspace

from comp.core.config import load_config
from comp.data.cache import prepare_images
from comp.train.loaders import eval_loader
from comp.model.factory import build_model
from comp.core.layout import Layout

ARGS = ["fold-train", "--fold", "0", "--k", "2", "--set", "train.epochs=2", "--set", "train.device=cpu",
        "--set", "train.sync_bn=true"]

# Stops both ranks right after epoch 1's checkpoints were written, as a killed job would leave them.
STOPPER = """
import sys
import comp.train.engine as engine
from comp.cli import main

real = engine.epoch_line

def epoch_line(fold, epoch, *args, **kwargs):
    line = real(fold, epoch, *args, **kwargs)
    if epoch == 0:
        raise SystemExit(3)
    return line

engine.epoch_line = epoch_line
sys.argv[0] = "comp"
main()
"""


def torchrun(root: Path, *target: str, check: bool = True, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --nproc-per-node 2 <target> fold-train --fold 0 ... -w root` on CPU."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *target,
           *ARGS, *extra, "-w", str(root)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


@pytest.fixture(scope="module")
def ddp_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny workspace whose fold 0 was trained for 2 epochs by 2 processes."""
    root = build_workspace(tmp_path_factory.mktemp("ddp") / "ws")
    torchrun(root, "-m", "comp")
    return root


def single_process_probs(root: Path, ckpt: dict, ids: list[str]) -> np.ndarray:
    """best.pt's weights predicting the given training ids in one process (no DDP)."""
    cfg = load_config(root, "baseline", ("folds.k=2", "train.epochs=2", "train.device=cpu", "train.sync_bn=true"))
    train = pd.read_csv(root / "data" / "train.csv", dtype={"id": str})
    from comp.data.tables import load_tables

    tables = load_tables(cfg, Layout.at(root))
    row_of = {i: r for r, i in enumerate(tables.train["id"].astype(str))}
    assert len(train) == len(tables.train)
    model = build_model(cfg.model, len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])  # strict: no "module." prefix from the DDP wrapper
    model.eval()
    store = prepare_images(tables.train, cfg.image, cfg.augment, Layout.at(root))
    loader = eval_loader(cfg, store, np.array([row_of[i] for i in ids]), batch_size=5)
    with torch.no_grad():
        return torch.cat([torch.softmax(model(x), 1) for x, _ in loader]).numpy()


def test_ddp_fold_validates_every_row_once_and_rank0_writes(ddp_ws: Path) -> None:
    exp = ddp_ws / "experiments" / "baseline"
    folds = pd.read_csv(ddp_ws / "folds" / "k2-s42.csv", dtype={"id": str})
    train = pd.read_csv(ddp_ws / "data" / "train.csv", dtype={"id": str})
    fold_of = dict(zip(folds["id"], folds["fold"]))
    val_ids = [i for i in train["id"] if fold_of[i] == 0]
    oof = pd.read_csv(exp / "oof.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(val_ids) and oof["id"].is_unique  # every validation id exactly once
    assert (oof["fold"] == 0).all()
    ckpt = torch.load(exp / "fold0" / "best.pt", weights_only=True)
    assert list(ckpt["val_ids"]) == val_ids  # gathered back in validation order
    assert not any(k.startswith("module.") for k in ckpt["model"])
    np.testing.assert_allclose(ckpt["val_probs"].numpy(), single_process_probs(ddp_ws, ckpt, val_ids), atol=1e-5)
    history = pd.read_csv(exp / "fold0" / "history.csv")
    assert history["epoch"].tolist() == [1, 2]  # one writer: no duplicated rows
    assert not (exp / "fold1").exists()


@pytest.mark.slow
def test_interrupted_ddp_fold_resumes_to_the_same_weights(ddp_ws: Path, tmp_path: Path) -> None:
    root = build_workspace(tmp_path / "ws")
    script = tmp_path / "stop_after_epoch_1.py"
    script.write_text(STOPPER)
    stopped = torchrun(root, str(script), check=False)
    assert stopped.returncode != 0
    fold0 = root / "experiments" / "baseline" / "fold0"
    assert torch.load(fold0 / "last.pt", weights_only=True)["next_epoch"] == 1
    torchrun(root, "-m", "comp")  # every rank loads last.pt and goes on with epoch 2
    resumed = pd.read_csv(fold0 / "history.csv")
    straight = pd.read_csv(ddp_ws / "experiments" / "baseline" / "fold0" / "history.csv")
    assert resumed["epoch"].tolist() == [1, 2]
    cols = ["train_loss", "val_loss", "metric"]
    np.testing.assert_allclose(resumed[cols].to_numpy(), straight[cols].to_numpy(), rtol=0, atol=1e-6)
    a = torch.load(fold0 / "best.pt", weights_only=True)
    b = torch.load(ddp_ws / "experiments" / "baseline" / "fold0" / "best.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_diverging_ddp_fold_stops_every_rank_with_the_error(tmp_path: Path) -> None:
    root = build_workspace(tmp_path / "ws")
    done = torchrun(root, "-m", "comp", check=False, extra=("--set", "train.lr=1e30"))  # times out if a rank hangs
    assert done.returncode != 0
    assert "error: the raw model predicts NaN/inf" in done.stderr or "error: training loss became" in done.stderr, \
        done.stderr[-3000:]  # the engine's own error (ranks agree on it), not a collective timing out
    assert not (root / "experiments" / "baseline" / "fold0" / "best.pt").exists()
