"""Functions for the launch tests, importable by name in processes spawned by ``launch``.

Not a test module (no ``test_`` prefix): tests put this folder on ``sys.path`` first, as they do
for ``tiny_model.py``.
"""

from __future__ import annotations

import json
import os

import torch
import torch.distributed as dist

from segtron.utils import comm


def record_process(path: str, value: int) -> None:
    """Write this process's id, the world size and `value` to `path` (as JSON)."""
    with open(path, "w") as f:
        json.dump({"pid": os.getpid(), "world_size": comm.get_world_size(), "value": value}, f)


def all_reduce_to_file(out_dir: str, base: float) -> None:
    """All-reduce ``base + rank`` over the process group and write what each rank sees."""
    rank = comm.get_rank()
    tensor = torch.tensor([base + rank], dtype=torch.float64)
    dist.all_reduce(tensor)
    result = {
        "rank": rank,
        "local_rank": comm.get_local_rank(),
        "world_size": comm.get_world_size(),
        "local_size": comm.get_local_size(),
        "backend": dist.get_backend(),
        "sum": tensor.item(),
        "pid": os.getpid(),
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
