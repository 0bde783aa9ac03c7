"""DefaultTrainer end to end on a tiny model: training, checkpoints, evaluation, NaN losses,
kill-and-resume equality, and a two-process gloo run."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import tiny_model  # noqa: E402  (importable by name in spawned processes)

from segtron.checkpoint import DetectionCheckpointer  # noqa: E402
from segtron.engine import DefaultTrainer, launch  # noqa: E402
from segtron.modeling import build_model  # noqa: E402


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("engine_data"))
    tiny_model.register_data(root)
    return root


def _final_weights(output_dir: str) -> dict[str, torch.Tensor]:
    return torch.load(os.path.join(output_dir, "model_final.pth"), weights_only=True)["model"]


def _metrics(output_dir: str) -> list[dict]:
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def test_trains_checkpoints_and_evaluates(data_root, tmp_path):
    out = str(tmp_path / "run")
    results = tiny_model.train_main(data_root, out, ("TEST.EVAL_PERIOD", "4"), False, -1)
    files = sorted(os.listdir(out))
    for name in ("model_0000002.pth", "model_0000005.pth", "model_final.pth", "last_checkpoint"):
        assert name in files
    assert 0 <= results["sem_seg"]["mIoU"] <= 100
    metrics = _metrics(out)
    losses = [m for m in metrics if "total_loss" in m]
    assert losses and all("lr" in m and "data_time" in m for m in losses)
    evals = [m for m in metrics if "sem_seg/mIoU" in m]
    # At the period, and after training (at max_iter, as in Detectron2).
    assert [m["iteration"] for m in evals] == [3, 8]


def test_resume_without_checkpoint_starts_fresh(data_root, tmp_path, caplog):
    cfg = tiny_model.make_cfg(data_root, str(tmp_path / "fresh"), "SOLVER.MAX_ITER", "2")
    trainer = DefaultTrainer(cfg)
    with caplog.at_level("WARNING"):
        trainer.resume_or_load(resume=True)
    assert "no checkpoint found" in caplog.text
    assert "from random initialization (MODEL.WEIGHTS is empty)" in caplog.text
    assert trainer.start_iter == 0


def test_nan_loss_stops_with_message_and_keeps_checkpoint(data_root, tmp_path):
    out = str(tmp_path / "nan")
    with pytest.raises(FloatingPointError, match=r"iteration 4: loss_sem_seg=nan"):
        tiny_model.train_main(
            data_root, out, ("MODEL.META_ARCHITECTURE", "TinyNaNModel"), False, -1
        )
    assert "model_final.pth" not in os.listdir(out)
    with open(os.path.join(out, "last_checkpoint")) as f:
        last = f.read().strip()
    assert last == "model_0000002.pth"
    cfg = tiny_model.make_cfg(data_root, out)
    model = build_model(cfg)
    DetectionCheckpointer(model).load(os.path.join(out, last))
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("crash_at", [4, 6])
def test_kill_and_resume_matches_uninterrupted_run(data_root, tmp_path, crash_at):
    # Two workers, random flips, aspect-ratio grouping and multi-scale training: the resumed
    # run must read the same batches with the same augmentations.
    opts = ("DATALOADER.NUM_WORKERS", "2")
    full = str(tmp_path / "full")
    tiny_model.train_main(data_root, full, opts, False, -1)
    part = str(tmp_path / "part")
    with pytest.raises(tiny_model.SimulatedKill):
        tiny_model.train_main(data_root, part, opts, False, crash_at)
    assert "model_final.pth" not in os.listdir(part)
    tiny_model.train_main(data_root, part, opts, True, -1)
    expected, actual = _final_weights(full), _final_weights(part)
    assert expected.keys() == actual.keys()
    for k in expected:
        torch.testing.assert_close(actual[k], expected[k], rtol=0, atol=0)


def test_resume_with_another_seed_still_matches(data_root, tmp_path):
    # The data stream's seeds come from the checkpoint, not from the resumed run's config.
    full = str(tmp_path / "full")
    tiny_model.train_main(data_root, full, (), False, -1)
    part = str(tmp_path / "part")
    with pytest.raises(tiny_model.SimulatedKill):
        tiny_model.train_main(data_root, part, (), False, 5)
    tiny_model.train_main(data_root, part, ("SEED", "123"), True, -1)
    for k, v in _final_weights(full).items():
        torch.testing.assert_close(_final_weights(part)[k], v, rtol=0, atol=0)


def _launch(root: str, out: str, opts: tuple[str, ...], resume: bool, crash_at: int) -> None:
    launch(
        tiny_model.train_main,
        2,
        dist_url="auto",
        args=(root, out, opts, resume, crash_at),
        backend="gloo",
    )


def test_two_process_gloo_train_and_resume(data_root, tmp_path):
    opts = ("TEST.EVAL_PERIOD", "8")
    full = str(tmp_path / "full")
    _launch(data_root, full, opts, False, -1)
    assert {"model_0000002.pth", "model_final.pth"} <= set(os.listdir(full))
    assert any("sem_seg/mIoU" in m for m in _metrics(full))
    part = str(tmp_path / "part")
    with pytest.raises(Exception, match="simulated kill"):
        _launch(data_root, part, opts, False, 4)
    _launch(data_root, part, opts, True, -1)
    for k, v in _final_weights(full).items():
        torch.testing.assert_close(_final_weights(part)[k], v, rtol=0, atol=0)
