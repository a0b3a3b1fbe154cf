"""Distributed data parallel (DDP) set-up from torchrun's environment, and the few collectives training needs.

`torchrun --nproc_per_node N -m decrappify train ...` starts N copies of the command with RANK, WORLD_SIZE and
LOCAL_RANK set; multi-node runs get the same variables through torchrun's rendezvous, so nothing here depends on
the number of machines. Without those variables everything degrades to a single process and the helpers are
no-ops. Only rank 0 writes files: the others compute, contribute gradients and wait.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from decrappify.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job: its rank, the world size, its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, logs, samples and shows a progress bar."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` -> this process's GPU when CUDA is available, else the CPU; `cuda` -> `cuda:LOCAL_RANK`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r} but CUDA is not available; use cpu or auto")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name != "cpu":
        raise ConfigError(f"train.device: unknown device {name!r}; choose one of: auto, cpu, cuda, cuda:N")
    return torch.device("cpu")


def setup(device: str = "auto", timeout_minutes: float = 30.0) -> DistContext:
    """Join the process group when launched by torchrun (NCCL on CUDA, gloo on CPU); else a single process."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    torch_device = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
        log.debug("rank %d/%d joined the %s process group on %s", rank, world, backend, torch_device)
    return DistContext(rank, world, local_rank, local_world, torch_device)


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all processes (in place) and return it; a no-op for one process."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(ctx: DistContext, value: object) -> object:
    """Rank 0's `value` on every rank (e.g. a step count estimated by rank 0 alone)."""
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def default_threads(ctx: DistContext) -> int:
    """CPU threads per process: the cores shared out among this machine's processes (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, ctx.local_world_size))
