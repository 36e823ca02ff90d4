"""How many DataLoader worker processes to use: train.num_workers, or `auto` from the device and the cores."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("comp.data.workers")

GPU_MAX_WORKERS = 16  # beyond this, workers fight over memory bandwidth more than they help
_told: set[tuple[str, int]] = set()


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def auto_workers(*, gpu: bool, cores: int) -> int:
    """Workers for a device: none on a CPU box with <= 2 cores (they compete with training), up to cores - 1 with a GPU."""
    if gpu:
        return max(1, min(cores - 1, GPU_MAX_WORKERS))
    if cores <= 2:
        return 0
    return max(1, min(4, cores // 4))  # the training process itself uses the other cores for compute


def uses_gpu(device: str) -> bool:
    """Whether train.device (auto | cpu | cuda[:N]) will train on a GPU here."""
    if device == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


def resolve_workers(setting: int | str, device: str) -> int:
    """train.num_workers as a number: itself, or the `auto` choice (logged once per process and choice)."""
    if setting != "auto":
        return int(setting)
    gpu, cores = uses_gpu(device), usable_cores()
    n = auto_workers(gpu=gpu, cores=cores)
    if (device, n) not in _told:
        _told.add((device, n))
        log.info("train.num_workers auto: %d DataLoader worker%s (%s, %d CPU cores)", n, "" if n == 1 else "s",
                 "GPU" if gpu else "CPU only", cores)
    return n
