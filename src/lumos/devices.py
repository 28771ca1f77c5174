"""Where training runs: device, torch CPU threads and the ranks of distributed training."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Ranks", "setup_distributed", "pick_device", "configure_threads", "available_cores"]


@dataclass
class Ranks:
    """The ranks of a (possibly distributed) run; one rank unless under ``torchrun``."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        """More than one rank."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 (the one that writes files)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op with one rank)."""
        if self.enabled:
            torch.distributed.barrier()


def setup_distributed(device_type: str) -> Ranks:
    """Join the process group of ``torchrun`` (``WORLD_SIZE`` > 1), else one rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()

    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        here = True
    return Ranks(
        world_size=dist.get_world_size(),
        rank=dist.get_rank(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        initialised_here=here,
    )


def pick_device(device: str | None, ranks: Ranks) -> torch.device:
    """``device``, else CUDA when present, else CPU; a CUDA device per local rank."""
    if device is not None:
        dev = torch.device(device)
    else:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and ranks.enabled and dev.index is None:
        dev = torch.device("cuda", ranks.local_rank)
    return dev


def available_cores() -> int:
    """CPU cores this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return cores or os.cpu_count() or 1


def configure_threads(num_threads: int | None = None, local_world_size: int = 1,
                      reserved: int = 0) -> int:
    """Set torch's CPU threads: argument, else LUMOS_NUM_THREADS, OMP_NUM_THREADS, else
    this rank's share of the cores less ``reserved`` (its data workers); at least 1.

    Returns
    -------
    int
        The number of threads set.
    """
    n = num_threads
    for var in ("LUMOS_NUM_THREADS", "OMP_NUM_THREADS"):
        if n is None and os.environ.get(var, "").strip().isdigit():
            n = int(os.environ[var])
    if n is None:
        n = available_cores() // max(1, local_world_size) - int(reserved)
    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
