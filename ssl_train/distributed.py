"""This process's place in a ``torchrun`` job: rank, world size, device, and the process group's lifetime.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with more than one process the group is
created here (gloo on CPU, nccl on CUDA) unless the caller already made one. Sharding and the EMA of sharded
modules are :mod:`ssl_train.parallel`'s job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ssl_train.errors import TrainingError

__all__ = ["DistInfo", "barrier", "setup_distributed"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str) -> tuple[DistInfo, bool]:
    """Read ``torchrun``'s environment; init the process group (gloo on CPU, nccl on CUDA) if needed.

    Returns the info and whether this call created the process group (then the caller destroys it).
    """
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is cuda but no CUDA device is available")
    created = False
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if world > 1:
            backend = "nccl" if use_cuda else "gloo"
            if use_cuda:
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
            created = True
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=device), created


def barrier(info: DistInfo) -> None:
    """Wait for every process (nothing to wait for in a one-process run)."""
    if info.world > 1:
        dist.barrier()
