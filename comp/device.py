"""Where and in which precision a model runs: train.device and train.amp resolved for this machine.

Used by training, prediction, export and the benchmarks alike, so every stage runs a model the same way.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys

import torch

from comp.errors import CompError
from comp.startup import imports_done

log = logging.getLogger("comp.device")

# glibc mallopt parameters (malloc.h) and the values comp sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest on 64-bit: blocks up to 32 MiB come from the heap
TRIM_THRESHOLD = 2**30  # keep up to 1 GiB of freed memory at the top of the heap for the next step


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory a training or prediction step frees for the next step (once per process).

    Each step allocates and frees the same activation and gradient buffers. By default glibc hands blocks above
    a (dynamic) threshold to the OS and takes fresh zeroed pages for the next step: thousands of page faults per
    step (measured: ~3,000-4,000 per test_resnet step at 64 px, ~50-150 with this setting; resnet18 epochs ~20%
    faster on the 2-core CPU, sys time halved). Fixing the mmap threshold at 32 MiB and the trim threshold at
    1 GiB keeps those buffers in the heap; the process keeps its peak memory instead of returning it between
    steps. Skipped off Linux, and when the user tunes malloc (MALLOC_*_ environment variables) or preloads
    another allocator. True when set.
    """
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ) \
            or "malloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the mmap threshold first: a trim threshold alone would also freeze the mmap threshold at 128 KiB (worse)
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return False
    log.debug("malloc keeps freed memory: mmap threshold %d, trim threshold %d", MMAP_THRESHOLD, TRIM_THRESHOLD)
    return True


def resolve_device(spec: str) -> torch.device:
    """train.device -> a torch.device: auto = cuda when available, else cpu.

    Every stage that runs a model resolves its device here, so this is also where the process's allocator is
    set up for repeated steps (keep_freed_memory) and where a `comp` command's start-up ends (its libraries are
    imported: comp.startup.imports_done).
    """
    imports_done()
    keep_freed_memory()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise CompError(f"train.device {spec!r} is not a device ({exc}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CompError(f"train.device={spec} but no CUDA GPU is usable here; use train.device=cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CompError(f"train.device={spec} but only {torch.cuda.device_count()} CUDA devices exist")
    return device


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """train.amp -> the autocast dtype, or None for full precision (auto: bf16/fp16 on CUDA, off on CPU)."""
    if mode == "off":
        return None
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise CompError(f"train.amp=fp16 needs a CUDA GPU (device is {device}); use train.amp=bf16 or off")
    return torch.bfloat16 if mode == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Mixed precision in `dtype` on `device`, or a disabled autocast for full precision."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
