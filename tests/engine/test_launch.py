"""Tests of segtron.engine.launch: in-process runs, argument checks, a two-process gloo group."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import launch_helpers  # noqa: E402  (importable by name in spawned processes)

from segtron.engine import launch  # noqa: E402
from segtron.utils import comm  # noqa: E402

launch_module = sys.modules["segtron.engine.launch"]


def _must_not_run(*args) -> None:
    raise AssertionError("main_func must not run")


def test_world_size_one_runs_in_this_process(tmp_path) -> None:
    path = str(tmp_path / "out.json")
    launch(launch_helpers.record_process, 1, args=(path, 7))
    with open(path) as f:
        record = json.load(f)
    assert record == {"pid": os.getpid(), "world_size": 1, "value": 7}
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("machine_rank", [2, -1])
def test_machine_rank_out_of_range(machine_rank) -> None:
    with pytest.raises(ValueError, match=rf"--machine-rank {machine_rank} must be in \[0, 2\)"):
        launch(
            _must_not_run,
            1,
            num_machines=2,
            machine_rank=machine_rank,
            dist_url="tcp://127.0.0.1:12345",
        )


@pytest.mark.parametrize("dist_url", ["auto", None])
def test_auto_dist_url_needs_one_machine(dist_url) -> None:
    with pytest.raises(ValueError, match="--dist-url auto only works on one machine"):
        launch(_must_not_run, 2, num_machines=2, machine_rank=1, dist_url=dist_url)


def test_default_backend_without_enough_gpus(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert launch_module._default_backend(2) == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert launch_module._default_backend(2) == "gloo"
    assert launch_module._default_backend(1) == "nccl"


def test_two_process_gloo_all_reduce(tmp_path) -> None:
    launch(
        launch_helpers.all_reduce_to_file,
        2,
        dist_url="auto",
        args=(str(tmp_path), 10.0),
        backend="gloo",
    )
    records = []
    for rank in range(2):
        with open(tmp_path / f"rank{rank}.json") as f:
            records.append(json.load(f))
    for rank, record in enumerate(records):
        assert record["rank"] == record["local_rank"] == rank
        assert record["world_size"] == record["local_size"] == 2
        assert record["backend"] == "gloo"
        assert record["sum"] == 21.0  # (10 + 0) + (10 + 1)
        assert record["pid"] != os.getpid()
    assert records[0]["pid"] != records[1]["pid"]
    # The launching process did not join the group.
    assert comm.get_world_size() == 1 and not torch.distributed.is_initialized()
