"""Data-parallel training under ``torchrun``: process group setup, who writes, gathering results.

One code path for 1 and N processes: without torchrun's environment the world is one rank and every
helper here is a no-op. gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_world(device: torch.device) -> World:
    """Join the process group that torchrun describes in the environment (WORLD_SIZE, RANK, ...)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank, world_size, local_rank)


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def all_gather_objects(world: World, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list without a process group)."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_across(world: World, value: float) -> float:
    """The mean of a scalar over ranks."""
    return float(np.mean(all_gather_objects(world, float(value))))


def shard(world: World, n: int) -> np.ndarray:
    """The indices of ``range(n)`` this rank evaluates (strided, so shards differ by at most one)."""
    return np.arange(world.rank, n, world.world_size)


def gather_rows(world: World, local_index: np.ndarray, local_rows: np.ndarray, n: int) -> np.ndarray:
    """Reassemble per-rank rows (e.g. probabilities for :func:`shard` indices) into one [n, ...] array."""
    if not world.distributed:
        return local_rows
    parts = all_gather_objects(world, (local_index, local_rows))
    out = np.empty((n, *local_rows.shape[1:]), dtype=local_rows.dtype)
    for index, rows in parts:
        out[index] = rows
    return out


def state_hash(model: torch.nn.Module) -> str:
    """sha256 over a model's state dict (names and bytes), to check that ranks hold identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


#: When set to a folder, every rank writes ``rank<N>.sha256`` (its final weights' hash) there.
STATE_HASH_ENV = "FACEDERM_STATE_HASH_DIR"


def write_state_hash(world: World, model: torch.nn.Module) -> None:
    folder = os.environ.get(STATE_HASH_ENV)
    if folder:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"rank{world.rank}.sha256"), "w") as fh:
            fh.write(state_hash(model) + "\n")


def average_buffers(world: World, model: torch.nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks.

    DDP syncs gradients, but each rank's last forward updates its own running statistics; averaging
    them (as timm's distribute_bn does) leaves every rank with identical weights and statistics.
    """
    if not world.distributed:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer /= world.world_size
