"""DistributedDataParallel helpers for one fold trained by several processes under torchrun.

The process group comes from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT): gloo on CPU, NCCL on CUDA with device cuda:LOCAL_RANK. Every helper is
a no-op in a single process, so the engine calls them unconditionally. Rank 0 alone writes
artifacts; the others wait at barriers. Validation rows are sharded as rows[rank::world]
and gathered back by position, so metrics cover the whole validation set exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from comp.core.errors import CompError

log = logging.getLogger("comp.run.distributed")


def launched() -> bool:
    """Was this process started by torchrun (or another launcher) as one of several ranks?"""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Is a process group initialised in this process?"""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True in the process that writes artifacts and logs (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (NCCL is told this rank's GPU, so it does not guess one)."""
    if not active():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def uses_cuda(device_spec: str) -> bool:
    """Would train.device=<spec> train on CUDA here?"""
    return device_spec != "cpu" and torch.cuda.is_available()


@contextlib.contextmanager
def process_group(device_spec: str) -> Iterator[bool]:
    """Initialise the process group when launched by torchrun (yields True), destroy it at the end.

    NCCL with cuda:LOCAL_RANK when train.device resolves to CUDA, gloo otherwise.
    """
    if not launched() or active():
        yield active()
        return
    cuda = uses_cuda(device_spec)
    if cuda:
        if local_rank() >= torch.cuda.device_count():
            raise CompError(f"LOCAL_RANK {local_rank()} but only {torch.cuda.device_count()} CUDA devices are visible; "
                            "lower torchrun's --nproc-per-node")
        torch.cuda.set_device(local_rank())
    if cuda:
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank()))
    else:
        dist.init_process_group("gloo")
    if is_main():
        log.info("data-parallel over %d processes (%s)", world_size(), "nccl" if cuda else "gloo")
    try:
        yield True
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run a block on rank 0 first (it may create files), then on the other ranks (they read them)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def place(device: torch.device) -> torch.device:
    """Under DDP a CUDA device becomes cuda:LOCAL_RANK (one GPU per rank)."""
    if active() and device.type == "cuda":
        return torch.device("cuda", local_rank())
    return device


def prepare_model(model: nn.Module, device: torch.device, *, sync_bn: bool) -> nn.Module:
    """Under DDP with train.sync_bn, BatchNorm layers become SyncBatchNorm (same parameters and state-dict keys).

    torch's SyncBatchNorm runs on GPUs only: on CPU ranks the setting is ignored with a warning.
    """
    if not (active() and sync_bn):
        return model
    if device.type == "cpu":
        log.warning("train.sync_bn needs CUDA (torch's SyncBatchNorm is GPU-only); CPU ranks keep per-rank BatchNorm")
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel(model) under DDP, else model itself."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def broadcast_buffers(module: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running stats drift per rank during an epoch), so all
    ranks validate the weights rank 0 saves."""
    if not active():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def shard(indices: np.ndarray) -> np.ndarray:
    """This rank's validation rows: indices[rank::world] (every row on exactly one rank)."""
    if len(indices) < world_size():
        raise CompError(f"{len(indices)} validation rows cannot be split over {world_size()} processes; "
                        "use fewer processes (--nproc-per-node) or fewer folds")
    return np.asarray(indices)[rank()::world_size()]


def gather_rows(part: torch.Tensor, n: int) -> torch.Tensor:
    """Reassemble the (n, ...) CPU tensor whose rows rank r holds as rows[r::world] (inverse of `shard`)."""
    if not active():
        return part
    world = world_size()
    parts: list[torch.Tensor | None] = [None] * world
    dist.all_gather_object(parts, part.detach().cpu())
    out = torch.empty((n, *part.shape[1:]), dtype=part.dtype)
    for r, piece in enumerate(parts):
        out[r::world] = piece
    return out


def mean_tensor(value: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of a tensor over all ranks (the tensor itself in one process)."""
    if not active():
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / world_size()
