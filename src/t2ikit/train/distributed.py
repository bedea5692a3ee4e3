"""Data parallelism on torch.distributed under torchrun, gloo on CPU, nccl on CUDA: DDP, or FSDP2 (`fully_shard`).

The global batch of every step is fixed by the config; rank r takes items r::world of it, and every draw
(timesteps, noise, posterior samples) is made for the whole global batch from the step's seed and then
sliced, so N processes compute the same gradient as one (up to float summation order).

Under FSDP the stage's container is one FSDP unit: between steps each rank holds 1/world of every weight,
gradient and optimizer moment (DTensors sharded on dim 0); a step all-gathers the weights, and
reduce-scatters the gradients. Whatever reads whole tensors (checkpoints, EMA export, evaluation) gathers
them with `full_tensor`, so a checkpoint holds the same whole tensors whatever the world size and layout.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

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
    faulthandler.enable()  # a rank that aborts prints where its Python threads stood
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local_rank)


def shutdown() -> bool:
    """Leave the process group, if this process joined one (True then): exiting with a live gloo group can abort
    the process at teardown ("terminate called without an active exception")."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    gc.collect()  # drop finished collectives' work objects (and their tensors) while the interpreter is whole
    dist.destroy_process_group()
    return True


def exit_process(code: int) -> NoReturn:
    """End a torchrun rank that has left its process group, skipping interpreter finalization: gloo's worker
    threads can still hold tensors whose release during finalization aborts the rank (SIGABRT, seen in CI after
    destroy_process_group; pytorch/pytorch#179291 describes the mechanism). Files are closed by then."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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

        # One unit for the whole container: the stage's loss reaches its modules through methods other than
        # forward (vae.encode/decode), which per-module units would not see; the root unit gathers them all.
        return fully_shard(module)
    raise ValueError(f"run.parallel must be 'ddp' or 'fsdp', got {parallel!r}")


# ----------------------------------------------------------------------------------------------------
# Sharded (FSDP) tensors <-> whole tensors
# ----------------------------------------------------------------------------------------------------


def is_sharded(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP shard (a collective: every rank must call it, in the same order); t otherwise."""
    return t.full_tensor() if is_sharded(t) else t


def shard_like(t: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A whole tensor cut the way FSDP cut `param` (every rank holds t, so each keeps its chunk; no
    communication); t itself when param is not sharded or t is not shaped like it (e.g. Adam's step)."""
    if not is_sharded(param) or is_sharded(t) or t.shape != param.shape:
        return t
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(t.to(param.device), param.device_mesh, param.placements, src_data_rank=None)


def full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """module.state_dict() with every FSDP shard gathered (a collective under FSDP); the plain dict otherwise."""
    sd = module.state_dict()
    if not any(is_sharded(v) for v in sd.values()):
        return sd
    return {k: full_tensor(v) for k, v in sd.items()}
