"""Evaluation sharded across processes (torch.distributed), e.g. `torchrun --nproc_per_node 2 -m kebench run ...`.

Evaluation is most of a large run's time once edits are cheap, and its cases are
independent. Each process loads the model; rank 0 applies the edits and checkpoints them,
the other ranks load that checkpoint (the editors' own save/load, so every editor works);
each rank evaluates every `world`-th pending case into its own JSONL file; after a barrier
every rank reads all files back. Rank 0 alone writes the results file. Without torchrun
(WORLD_SIZE unset or 1) everything runs in one process and nothing here does anything.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from kebench.errors import ConfigError

# An editing step on a CPU can take hours; ranks wait at a barrier for it.
BARRIER_TIMEOUT = dt.timedelta(hours=48)


@dataclass(frozen=True)
class Shard:
    """This process's place among the processes evaluating one run."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def take(self, items: list) -> list:
        """This rank's share of `items`: every `world`-th item starting at `rank`."""
        return items[self.rank :: self.world]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def init_shard(device: str = "cpu") -> Shard:
    """The Shard of this process: joins the process group torchrun set up (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch has no torch.distributed; run without torchrun")
    if not dist.is_initialized():
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise ConfigError(f"WORLD_SIZE={world} but {', '.join(missing)} unset; start sharded runs with torchrun")
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)
    return Shard(dist.get_rank(), dist.get_world_size())


def local_device(device: str) -> str:
    """Under torchrun, `cuda` means this rank's own GPU (LOCAL_RANK)."""
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device
