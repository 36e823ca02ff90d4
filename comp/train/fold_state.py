"""What one fold's training holds and leaves behind: its state (FitState, saved in last.pt to resume), the
weights validated after an epoch (Candidate), its result (FoldResult), and its checkpoint files
(best.pt, last.pt, epochs/<n>.pt): when they reach the disk (FoldCheckpoints), resuming, reading a finished fold.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from comp.model.checkpoint import (BestCheckpoint, CheckpointBase, CheckpointWriter, capture_rng, cpu_state, last_payload,
                             load_best, load_checkpoint, restore_rng, save_checkpoint, snapshot)
from comp.core.config import Config
from comp.data.tables import Tables
from comp.train.parts import Parts
from comp.core.layout import FoldFiles

log = logging.getLogger("comp.train.fold_state")

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "metric", "lr", "seconds"]


@dataclass
class FoldResult:
    fold: int
    best_epoch: int
    score: float
    val_loss: float
    minutes: float
    val_ids: list[str]
    val_probs: np.ndarray  # (N_val, C) probabilities of the kept checkpoint (train.checkpoint: last or best epoch)
    history: pd.DataFrame  # epoch, train_loss, val_loss, metric, lr, seconds (+ ema_val_loss, ema_metric)
    epoch_probs: np.ndarray | None = None  # (E, N_val, C) the validation probabilities after every epoch (the weights
    # the mode would keep at that epoch); None for a fold trained before they were recorded


@dataclass
class FitState:
    """What changes during a fit and is saved in last.pt to resume it."""

    epoch: int = 0  # next epoch to run
    step: int = 0  # optimizer steps done
    best_score: float = math.nan  # the kept checkpoint's (train.checkpoint: the last epoch, or the best so far)
    best_val_loss: float = math.inf
    best_epoch: int = -1
    top_score: float = math.nan  # the best validation score so far (early stopping, "new best"): in mode best the
    top_val_loss: float = math.inf  # same as best_*, in mode last not the kept epoch's
    top_epoch: int = -1  # the epoch of top_score (the epoch line's "best X @ epoch N")
    bad_epochs: int = 0
    epoch_probs: list[np.ndarray] = field(default_factory=list)  # per epoch, (N_val, C): nested epoch choice
    history: list[dict[str, float]] = field(default_factory=list)
    finished: bool = False
    best_probs: np.ndarray | None = None  # not in last.pt: the best epoch's validation probabilities, when this process
    # trained that epoch (the fold's result is then taken from memory instead of read back from best.pt)


@dataclass(frozen=True)
class Candidate:
    """One set of weights validated after an epoch (raw, or their EMA)."""

    weights: str
    module: nn.Module
    probs: np.ndarray  # (N_val, C) float32
    val_loss: float
    score: float


# ---------------------------------------------------------------- checkpoints


def checkpoint_base(cfg: Config, tables: Tables, fold: int, epoch: int) -> CheckpointBase:
    """The fields every checkpoint of this fold carries."""
    return CheckpointBase(fold=fold, epoch=epoch, train_hash=cfg.train_hash(), model_name=cfg.model.name,
                          n_classes=tables.n_classes, classes=[str(c) for c in tables.classes])


class FoldCheckpoints:
    """When a fold's best.pt and last.pt reach the disk.

    Every epoch's checkpoints are snapshotted (a copy of the weights and the resume state, in memory) and held;
    they are written by the background `writer` once `every` seconds passed since the previous write, when the
    fold finishes, and when anything stops the fold (Ctrl-C, SIGTERM, a NaN loss, an error): a stop that Python
    sees keeps the last finished epoch, and only a hard kill (SIGKILL, power loss) can lose up to `every` seconds
    of training. Short epochs thus cost one write per fold instead of one per epoch. best.pt is always written
    before the last.pt that records it. Without a writer (tests, tools) every epoch is written at once.
    """

    def __init__(self, writer: CheckpointWriter | None, every: float) -> None:
        self.writer, self.every = writer, every
        self.best: tuple[Path, dict[str, Any]] | None = None
        self.last: tuple[Path, dict[str, Any]] | None = None
        self.written_at = time.monotonic()

    def hold_best(self, path: Path, payload: dict[str, Any]) -> None:
        self.best = (path, payload)

    def hold_last(self, path: Path, payload: dict[str, Any]) -> None:
        self.last = (path, payload)

    def epoch_end(self, finished: bool) -> None:
        """Write what is held when the fold finished or `every` seconds passed since the last write."""
        if self.writer is None or finished or time.monotonic() - self.written_at >= self.every:
            self.flush()

    def flush(self) -> None:
        """Queue (or, without a writer, write) what is held: best.pt first."""
        if self.writer is not None:
            self.writer.wait()  # the previous files are complete before these replace them
        for held in (self.best, self.last):
            if held is not None:
                (self.writer.submit if self.writer is not None else save_checkpoint)(*held)
        self.best = self.last = None
        self.written_at = time.monotonic()


def save_best(out_dir: Path, base: CheckpointBase, best: Candidate, val_ids: list[str],
              sink: FoldCheckpoints | None = None) -> None:
    """best.pt now, or held by `sink` (the payload is already a copy: cloned weights, this epoch's probabilities)."""
    ckpt = BestCheckpoint(base, cpu_state(best.module), best.score, best.val_loss, best.weights, list(val_ids),
                          torch.from_numpy(best.probs))
    (sink.hold_best if sink is not None else save_checkpoint)(FoldFiles(out_dir).best, ckpt.as_dict())


def epoch_weights_path(out_dir: Path, epoch: int) -> Path:
    """fold{i}/epochs/<epoch from 1>.pt: one epoch's kept weights (train.checkpoint: nested)."""
    return Path(out_dir) / "epochs" / f"{epoch + 1}.pt"


def save_epoch_weights(out_dir: Path, epoch: int, kept: Candidate) -> None:
    """Keep this epoch's weights until the nested choice (made once the other folds' curves exist) needs them."""
    path = epoch_weights_path(out_dir, epoch)
    path.parent.mkdir(exist_ok=True)
    save_checkpoint(path, {"model": cpu_state(kept.module), "weights": kept.weights, "epoch": epoch,
                           "val_loss": kept.val_loss})


def save_last(out_dir: Path, base: CheckpointBase, parts: Parts, state: FitState,
              sink: FoldCheckpoints | None = None) -> None:
    """Everything needed to continue exactly where this epoch ended; held by `sink` as a snapshot when given.

    A finished fold is never continued (more epochs change train_hash and start the fold over), so its last.pt
    keeps the weights, the progress and the history but not the optimizer, schedule, scaler and RNG state: for
    AdamW that is two thirds of the file, written and waited for at the end of every fold.
    """
    own = snapshot if sink is not None else (lambda value: value)  # live optimizer/scheduler state keeps moving
    going = not state.finished

    def resume_state(make: Callable[[], Any]) -> Any:
        return own(make()) if going else None

    payload = last_payload(
        base, model=cpu_state(parts.model), score=state.best_score, val_loss=state.best_val_loss,
        weights="raw", optimizer=resume_state(parts.optimizer.state_dict),
        scheduler=resume_state(parts.scheduler.state_dict), scaler=resume_state(parts.scaler.state_dict),
        ema=cpu_state(parts.ema.module) if parts.ema is not None else None,
        swa=cpu_state(parts.swa) if parts.swa is not None else None,
        swa_scheduler=resume_state(parts.swa_scheduler.state_dict) if parts.swa_scheduler is not None else None,
        rng=capture_rng() if going else None,
        best={"score": state.best_score, "val_loss": state.best_val_loss, "epoch": state.best_epoch},
        top={"score": state.top_score, "val_loss": state.top_val_loss, "epoch": state.top_epoch},
        epoch_probs=torch.from_numpy(np.stack(state.epoch_probs)) if state.epoch_probs else None,
        epochs_without_improvement=state.bad_epochs, step=state.step, next_epoch=state.epoch,
        history=own(state.history), finished=state.finished,
    )
    (sink.hold_last if sink is not None else save_checkpoint)(FoldFiles(out_dir).last, payload)


def matching_last(out_dir: Path, cfg: Config, fold: int, *, mmap: bool = False) -> dict[str, Any] | None:
    """out_dir/last.pt when it belongs to this fold and config, else None (logged)."""
    path = FoldFiles(out_dir).last
    ckpt = load_checkpoint(path, mmap=mmap)
    if ckpt is None:
        return None
    if ckpt.get("train_hash") != cfg.train_hash() or ckpt.get("fold") != fold:
        log.warning("%s was trained with another config or fold; starting this fold over", path)
        return None
    return ckpt


def resume(parts: Parts, state: FitState, ckpt: dict[str, Any]) -> None:
    """Load model, optimizer, schedule, scaler, EMA, RNG and progress from last.pt."""
    parts.model.load_state_dict(ckpt["model"])
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    parts.scheduler.load_state_dict(ckpt["scheduler"])
    parts.scaler.load_state_dict(ckpt["scaler"])
    if parts.ema is not None and ckpt["ema"] is not None:
        parts.ema.module.load_state_dict(ckpt["ema"])
    if parts.swa is not None and ckpt.get("swa") is not None:
        parts.swa.load_state_dict(ckpt["swa"])
    if ckpt.get("swa_scheduler") is not None:
        start_swa_lr(parts)
        parts.swa_scheduler.load_state_dict(ckpt["swa_scheduler"])
    best = ckpt["best"]
    state.best_score, state.best_val_loss, state.best_epoch = best["score"], best["val_loss"], best["epoch"]
    top = ckpt.get("top") or best
    state.top_score, state.top_val_loss = top["score"], top["val_loss"]
    state.top_epoch = top.get("epoch", -1)  # -1: a last.pt from before top_epoch (the line leaves "best" out)
    state.epoch_probs = stored_epoch_probs(ckpt)
    state.bad_epochs, state.step, state.epoch = ckpt["epochs_without_improvement"], ckpt["step"], ckpt["next_epoch"]
    state.history, state.finished = list(ckpt["history"]), bool(ckpt["finished"])
    restore_rng(ckpt["rng"])


def stored_epoch_probs(ckpt: dict[str, Any]) -> list[np.ndarray]:
    """The per-epoch validation probabilities kept in last.pt (empty for a file written before they were)."""
    stored = ckpt.get("epoch_probs")
    return [] if stored is None else [p.numpy().copy() for p in stored]


def run_epoch_probs(out_dir: Path) -> np.ndarray | None:
    """(E, N_val, C) one run's per-epoch validation probabilities from its last.pt, or None."""
    last = load_checkpoint(FoldFiles(out_dir).last, mmap=True)
    probs = [] if last is None else stored_epoch_probs(last)
    return np.stack(probs) if probs else None


def history_frame(rows: list[dict[str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return frame if len(frame) else pd.DataFrame(columns=HISTORY_COLUMNS)


def finished_result(out_dir: Path, cfg: Config, fold: int) -> FoldResult | None:
    """The result of a fold that already finished with this config (read from best.pt), else None."""
    last = matching_last(out_dir, cfg, fold, mmap=True)
    if last is None or not last["finished"]:
        return None
    best = load_best(FoldFiles(out_dir).best)
    if best is None or best.base.train_hash != cfg.train_hash():
        return None
    history = history_frame(last["history"])
    epochs = stored_epoch_probs(last)
    return FoldResult(fold=fold, best_epoch=int(best.base.epoch), score=best.score, val_loss=best.val_loss,
                      minutes=float(history["seconds"].sum()) / 60, val_ids=best.val_ids,
                      val_probs=best.val_probs.numpy(), history=history,
                      epoch_probs=np.stack(epochs) if len(epochs) == len(history) and epochs else None)


def start_swa_lr(parts: Parts) -> None:
    """From SWA's start on, a constant train.swa.lr (torch's SWALR, no annealing) replaces the schedule."""
    from torch.optim.swa_utils import SWALR

    parts.swa_scheduler = SWALR(parts.optimizer, swa_lr=parts.swa_lr, anneal_epochs=0)
