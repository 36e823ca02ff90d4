"""Where and in which precision a model runs: train.device and train.amp resolved for this machine.

Used by training, prediction, export and the benchmarks alike, so every stage runs a model the same way.
"""

from __future__ import annotations

import logging

import torch

from comp.core.errors import CompError

log = logging.getLogger("comp.run.device")

def resolve_device(spec: str) -> torch.device:
    """train.device -> a torch.device: auto = cuda when available, else cpu."""
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
