"""Data parallelism on torch.distributed: DDP under torchrun, gloo on CPU, nccl on CUDA (FSDP: refused for now).

The global batch of every step is fixed by the config; rank r takes items r::world of it, and every draw
(timesteps, noise, posterior samples) is made for the whole global batch from the step's seed and then
sliced, so N processes compute the same gradient as one (up to float summation order).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT); 1 process: no-op."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local_rank)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_across(info: DistInfo, values: torch.Tensor) -> torch.Tensor:
    """Average of a tensor over ranks (for logging: the global-batch loss)."""
    if not info.enabled:
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    return values / info.world


def any_across(info: DistInfo, flag: bool) -> bool:
    """True on every rank when any rank says True (e.g. a time limit seen by one clock)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def wrap(module: torch.nn.Module, info: DistInfo, parallel: str) -> torch.nn.Module:
    """DDP or FSDP2 around the stage's trainable container; the module itself when running alone."""
    if not info.enabled:
        return module
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=None, broadcast_buffers=False)
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        return fully_shard(module)
    raise ValueError(f"run.parallel must be 'ddp' or 'fsdp', got {parallel!r}")
