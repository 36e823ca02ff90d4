"""The fold checkpoint format (best.pt, last.pt): one schema, written by the engine, read by predict and export.

Every checkpoint is a dict of tensors and primitives that loads with `torch.load(path, weights_only=True)`.
best.pt is a `BestCheckpoint` (the fold's chosen weights and their validation predictions); last.pt
holds the same identifying fields (`CheckpointBase`) plus what resuming needs (see `last_payload`).
"""

from __future__ import annotations

import logging
import queue
import random
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from comp.core.errors import CompError
from comp.core.layout import write_with

log = logging.getLogger("comp.model.checkpoint")


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict as detached CPU tensors (the module must be the uncompiled one)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """torch.save through a temporary file and a rename: a killed run never leaves half a checkpoint."""
    return write_with(path, lambda tmp: torch.save(payload, tmp))


def snapshot(value: Any) -> Any:
    """A copy of a checkpoint payload that training can no longer change: tensors cloned to the CPU, containers copied.

    An optimizer's state_dict() holds the live moment tensors and a scheduler's its live lists; a payload written
    while the next epoch trains must not see them move.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(snapshot(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(v) for v in value)
    return value


class CheckpointWriter:
    """Writes checkpoints in one background thread, in the order they are submitted, while training goes on.

    Each write is save_checkpoint's temporary file, fsync and rename, so a killed run keeps the previous complete
    file (never a half-written one). The fsync stays: it runs in this thread, off the training's path, and it is
    what makes a finished fold's last.pt survive a power loss (the rename alone orders nothing on disk). `wait`
    returns when every submitted write is on disk and raises the first write's error; the engine waits before
    it submits an epoch's checkpoints (so two writes of one file never overlap and at most one epoch's payloads
    are held in memory) and before the fold's result is returned or an error leaves the fold.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Path, dict[str, Any]] | Callable[[], Any] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, path: Path, payload: dict[str, Any]) -> None:
        """Queue `payload` (already a snapshot: see `snapshot`) to be written to `path`."""
        self._put((Path(path), payload))

    def then(self, call: Callable[[], Any]) -> None:
        """Run `call` in the writer thread once every write queued before it is done (or failed): e.g. release a
        fold's lock when its last checkpoints are on disk. It runs even after a failed write; its own error is kept
        like a write's."""
        self._put(call)

    def _put(self, job: tuple[Path, dict[str, Any]] | Callable[[], Any]) -> None:
        if self._thread is None:  # not a daemon: the interpreter waits for a write in flight before it exits
            self._thread = threading.Thread(target=self._run, name="comp-checkpoint-writer", daemon=False)
            self._thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if callable(job):
                    job()
                elif self._error is None:  # after a failure nothing more is written: last.pt stays the last good one
                    save_checkpoint(*job)
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread by wait()
                if self._error is None:
                    self._error = exc
            finally:
                self._jobs.task_done()

    def wait(self) -> None:
        """Block until every submitted checkpoint is written; raise the first error a write met."""
        if self._thread is not None:
            self._jobs.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Wait for the writes, then stop the thread (errors as `wait`)."""
        try:
            self.wait()
        finally:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread.join()
                self._thread = None


def load_problem(exc: BaseException) -> tuple[str | None, str]:
    """(the code a refused pickle needs, or None; the failure in one line) of a torch.load(weights_only=True) error.

    torch's refusal spans several lines with terminal escapes and advises weights_only=False, which would run the
    file's code: comp never does that, so only the class it names is kept.
    """
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return found.group(1), text[:160]
    inner = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)  # garbage bytes
    return None, (inner.group(1) if inner else text)[:160] or type(exc).__name__


RESAVE = ("load it where its code lives and re-save the weights alone: torch.save(model.state_dict(), 'weights.pt') "
          "(or safetensors' save_file)")


def load_checkpoint(path: Path, *, mmap: bool = False) -> dict[str, Any] | None:
    """A checkpoint's dict, or None (logged) when the file is missing or unreadable."""
    if not Path(path).is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # a corrupt or foreign file: train that fold again rather than crash
        log.warning("could not read %s (%s); ignoring it", path, load_problem(exc)[1])
        return None


# ---------------------------------------------------------------- the schema


@dataclass(frozen=True)
class CheckpointBase:
    """What every checkpoint of a fold carries, so a checkpoint is never used for another fold, config or class set."""

    fold: int
    epoch: int  # 0-based epoch the weights are from
    train_hash: str  # Config.train_hash() of the run that wrote it
    model_name: str
    n_classes: int
    classes: list[str]  # class names in model-output order

    def as_dict(self) -> dict[str, Any]:
        return {"fold": self.fold, "epoch": self.epoch, "train_hash": self.train_hash, "model_name": self.model_name,
                "n_classes": self.n_classes, "classes": list(self.classes)}


@dataclass(frozen=True)
class BestCheckpoint:
    """best.pt: the fold's chosen weights (raw or EMA) and their softmax on the validation rows."""

    base: CheckpointBase
    model: dict[str, torch.Tensor]  # state dict of the uncompiled module, no prefixes
    score: float  # the competition metric on the validation rows
    val_loss: float
    weights: str  # "raw" | "ema"
    val_ids: list[str]
    val_probs: torch.Tensor  # (N_val, C) float32

    def as_dict(self) -> dict[str, Any]:
        return {**self.base.as_dict(), "model": self.model, "score": self.score, "val_loss": self.val_loss,
                "weights": self.weights, "val_ids": self.val_ids, "val_probs": self.val_probs}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "BestCheckpoint":
        base = CheckpointBase(**{k: doc[k] for k in CheckpointBase.__dataclass_fields__})
        return cls(base, doc["model"], float(doc["score"]), float(doc["val_loss"]), str(doc["weights"]),
                   list(doc["val_ids"]), doc["val_probs"])


def last_payload(base: CheckpointBase, **state: Any) -> dict[str, Any]:
    """last.pt: the base fields, the raw weights ("model") and the resume state.

    state: model, score, val_loss, weights, optimizer, scheduler, scaler, ema, rng, best
    ({score, val_loss, epoch}), epochs_without_improvement, step, next_epoch, history, finished.
    """
    return {**base.as_dict(), **state}


def read_best(path: Path, *, retrain: str) -> BestCheckpoint:
    """A fold's best.pt; a missing, corrupt, truncated or foreign file is a CompError naming it and `retrain`."""
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle garbage, a foreign file: all mean the same to the user
        code, reason = load_problem(exc)
        if code is not None:
            raise CompError(f"{path} holds pickled code ({code}) that comp will not run (it loads weights only); "
                            f"{RESAVE}, or retrain that fold with `{retrain}`") from None
        raise CompError(f"{path} is corrupt or truncated ({reason[:120]}); retrain that fold with `{retrain}`") from None
    try:
        return BestCheckpoint.from_dict(doc)
    except (KeyError, TypeError, ValueError):
        raise CompError(f"{path} is not a comp fold checkpoint; retrain that fold with `{retrain}`") from None


def load_best(path: Path) -> BestCheckpoint | None:
    """best.pt, or None (logged) when it is missing or unreadable (the fold is then trained again).

    Memory-mapped: a finished fold's result (scores, validation probabilities) is read at the end of each
    fold and again by the aggregation, and none of them needs the weights, so their bytes are not read.
    """
    doc = load_checkpoint(path, mmap=True)
    try:
        return None if doc is None else BestCheckpoint.from_dict({**doc, "val_probs": doc["val_probs"].clone()})
    except (KeyError, TypeError, ValueError, AttributeError):
        log.warning("%s is not a comp fold checkpoint; ignoring it", path)
        return None


# ---------------------------------------------------------------- RNG state


def capture_rng() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python global RNG states as tensors and primitives."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Undo `capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seed torch/numpy/python global RNGs (used by dropout, timm Mixup) for a block, then restore them.

    The caller's random state is unchanged afterwards, so a fit is a function of its seed alone.
    """
    saved = capture_rng()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        restore_rng(saved)
