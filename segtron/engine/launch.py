"""``launch()``: run a function in one process per device on one or several machines.

One process per GPU talks over NCCL; on a machine without GPUs (or with ``backend="gloo"``,
which ``tools/train_net.py`` passes when ``MODEL.DEVICE`` is ``cpu``) the processes talk over
gloo, so ``--num-gpus 2 MODEL.DEVICE cpu`` trains with two CPU processes.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segtron.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "launch"]

DEFAULT_TIMEOUT = timedelta(minutes=30)

logger = logging.getLogger(__name__)


def _find_free_port() -> int:
    """A TCP port that is free right now on this machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _default_backend(num_gpus_per_machine: int) -> str:
    if torch.cuda.is_available() and torch.cuda.device_count() >= num_gpus_per_machine:
        return "nccl"
    return "gloo"


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: Sequence[Any] = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
    backend: str | None = None,
) -> None:
    """Run ``main_func(*args)`` in ``num_machines × num_gpus_per_machine`` processes.

    With a world size of 1 the function runs in this process, without a process group.

    Args:
        main_func: the function to run (picklable: defined at module level).
        num_gpus_per_machine: processes per machine (one per GPU, or CPU processes).
        num_machines: number of machines.
        machine_rank: the rank of this machine, 0 … num_machines − 1.
        dist_url: rendezvous URL such as ``tcp://host:port``; ``"auto"`` (one machine only)
            picks a free local port.
        args: arguments of `main_func`.
        timeout: timeout of collective operations.
        backend: "nccl" or "gloo"; by default NCCL when this machine has enough GPUs.
    """
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"--machine-rank {machine_rank} must be in [0, {num_machines}).")
    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ValueError(
                "--dist-url auto only works on one machine; pass tcp://<main machine ip>:<port> "
                "to every machine."
            )
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// rendezvous across machines needs a file system they all share.")
    backend = backend or _default_backend(num_gpus_per_machine)
    mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(
            main_func,
            world_size,
            num_gpus_per_machine,
            machine_rank,
            dist_url,
            tuple(args),
            timeout,
            backend,
        ),
        daemon=False,
        start_method="spawn",
    )


def _distributed_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple[Any, ...],
    timeout: timedelta,
    backend: str,
) -> None:
    """Body of one launched process: join the process group, then run `main_func`."""
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    if backend == "nccl":
        if num_gpus_per_machine > torch.cuda.device_count():
            raise RuntimeError(
                f"{num_gpus_per_machine} processes per machine need as many GPUs; this machine "
                f"has {torch.cuda.device_count()}. Lower --num-gpus or set MODEL.DEVICE cpu."
            )
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(
            backend=backend,
            init_method=dist_url,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
    except Exception as e:
        raise RuntimeError(f"Process group initialisation failed at {dist_url}: {e}") from e
    num_machines = world_size // num_gpus_per_machine
    for i in range(num_machines):
        ranks = list(range(i * num_gpus_per_machine, (i + 1) * num_gpus_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
