"""Helpers for code that runs the same way in one process and under ``torch.distributed``.

Every function answers sensibly when no process group exists (world size 1, rank 0), so the
library never needs a special case for single-process runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "all_gather",
    "gather",
    "get_local_rank",
    "get_local_size",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "reduce_dict",
    "shared_random_seed",
    "synchronize",
]

# Set by the launcher to a group of the processes on this machine; None when not launched.
_LOCAL_PROCESS_GROUP: dist.ProcessGroup | None = None


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group (1 without a process group)."""
    return dist.get_world_size() if _distributed() else 1


def get_rank() -> int:
    """Rank of this process in the default group (0 without a process group)."""
    return dist.get_rank() if _distributed() else 0


def get_local_rank() -> int:
    """Rank of this process among the processes of its machine."""
    if not _distributed() or _LOCAL_PROCESS_GROUP is None:
        return 0
    return dist.get_rank(group=_LOCAL_PROCESS_GROUP)


def get_local_size() -> int:
    """Number of processes on this machine."""
    if not _distributed() or _LOCAL_PROCESS_GROUP is None:
        return 1
    return dist.get_world_size(group=_LOCAL_PROCESS_GROUP)


def is_main_process() -> bool:
    """True on global rank 0."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op in a single process."""
    if get_world_size() > 1:
        dist.barrier()


def all_gather(data: Any, group: dist.ProcessGroup | None = None) -> list[Any]:
    """Gather any picklable object from every rank; returns the list ordered by rank."""
    if get_world_size() == 1:
        return [data]
    output: list[Any] = [None] * dist.get_world_size(group=group)
    dist.all_gather_object(output, data, group=group)
    return output


def gather(data: Any, dst: int = 0, group: dist.ProcessGroup | None = None) -> list[Any]:
    """Gather any picklable object on rank ``dst``; other ranks get an empty list."""
    if get_world_size() == 1:
        return [data]
    world = dist.get_world_size(group=group)
    output: list[Any] | None = [None] * world if dist.get_rank(group=group) == dst else None
    dist.gather_object(data, output, dst=dst, group=group)
    return output if output is not None else []


def shared_random_seed() -> int:
    """A random integer drawn on rank 0 and shared by every rank."""
    seed = int(np.random.randint(2**31))
    return all_gather(seed)[0]


def reduce_dict(input_dict: dict[str, torch.Tensor], average: bool = True) -> dict[str, Any]:
    """Sum (or average) a dict of scalar tensors over all ranks; the result is valid on rank 0."""
    world_size = get_world_size()
    if world_size < 2:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict)
        values = torch.stack([input_dict[k] for k in names], dim=0)
        dist.reduce(values, dst=0)
        if dist.get_rank() == 0 and average:
            values /= world_size
        return dict(zip(names, values))
