"""Fold checkpoints (best.pt, last.pt) as dicts of tensors and primitives, and RNG state capture.

Every checkpoint loads with `torch.load(path, weights_only=True)`:
  {"model": state_dict (uncompiled, no prefixes), "fold", "epoch", "score", "val_loss",
   "train_hash", "model_name", "n_classes", "classes": [str], "weights": "raw"|"ema"}
best.pt adds "val_ids" and "val_probs" ((N_val, C) float32 softmax of those weights);
last.pt adds optimizer, scheduler, scaler, ema, rng, best, bad_epochs, step, history, finished.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from comp.workspace import write_with

log = logging.getLogger("comp.checkpoint")


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict as detached CPU tensors (the module must be the uncompiled one)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """torch.save through a temporary file and a rename: a killed run never leaves half a checkpoint."""
    return write_with(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path, *, mmap: bool = False) -> dict[str, Any] | None:
    """A checkpoint's dict, or None (logged) when the file is missing or unreadable."""
    if not Path(path).is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # a corrupt or foreign file: train that fold again rather than crash
        log.warning("could not read %s (%s); ignoring it", path, exc)
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
