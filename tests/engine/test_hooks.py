"""Tests of segtron.engine.hooks, run inside the real training loop (SimpleTrainer)."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fvcore.common.param_scheduler import LinearParamScheduler
from torch import nn

from segtron.checkpoint import DetectionCheckpointer
from segtron.engine import hooks
from segtron.engine.train_loop import SimpleTrainer
from segtron.utils.events import CommonMetricPrinter, EventWriter, JSONWriter, get_event_storage


class _LinearModel(nn.Module):
    """Returns two losses for a batch of 2-d points."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.fc(x)
        return {"loss_a": (out**2).mean(), "loss_b": out.abs().mean()}


class _BNModel(nn.Module):
    """A BatchNorm layer whose output's square is the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": (self.bn(x) ** 2).mean()}


def _batches(fail_at: int | None = None) -> Iterator[torch.Tensor]:
    for i in itertools.count():
        if i == fail_at:
            raise RuntimeError(f"data loader failed at batch {i}")
        yield torch.randn(4, 2)


def _trainer(
    model: nn.Module | None = None, fail_at: int | None = None, lr: float = 0.1
) -> SimpleTrainer:
    """A SimpleTrainer with a StepLR ``scheduler`` attribute, as DefaultTrainer has."""
    model = model or _LinearModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    trainer = SimpleTrainer(model, _batches(fail_at), optimizer)
    trainer.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)
    return trainer


class _RecordingWriter(EventWriter):
    """Records the storage's iteration at each write."""

    def __init__(self) -> None:
        self.writes: list[int] = []
        self.closed = False

    def write(self) -> None:
        self.writes.append(get_event_storage().iter)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def logs(caplog) -> pytest.LogCaptureFixture:
    """Capture segtron's INFO lines."""
    caplog.set_level(logging.INFO, logger="segtron")
    return caplog


def test_callback_hook_calls_each_function_with_the_trainer_and_releases_them() -> None:
    calls: list[tuple[str, int]] = []
    hook = hooks.CallbackHook(
        before_train=lambda t: calls.append(("before_train", t.iter)),
        before_step=lambda t: calls.append(("before_step", t.iter)),
        after_step=lambda t: calls.append(("after_step", t.iter)),
        after_train=lambda t: calls.append(("after_train", t.iter)),
    )
    trainer = _trainer()
    trainer.register_hooks([hook])
    trainer.train(0, 2)
    assert calls == [
        ("before_train", 0),
        ("before_step", 0),
        ("after_step", 0),
        ("before_step", 1),
        ("after_step", 1),
        ("after_train", 2),
    ]
    assert hook._before_train is hook._after_train is hook._before_step is None


def test_iteration_timer_times_steps_after_warmup(logs) -> None:
    trainer = _trainer()
    trainer.register_hooks([hooks.IterationTimer(warmup_iter=2)])
    trainer.train(0, 6)
    times = trainer.storage.history("time").values()
    assert [itr for _, itr in times] == [2, 3, 4, 5]
    assert all(t > 0 for t, _ in times)
    assert trainer.storage.smoothing_hints()["time"] is not False
    assert "Overall training speed: 4 iterations in 0:00:00 (" in logs.text
    assert "Total training time: 0:00:00 (0:00:00 on hooks)" in logs.text


def test_periodic_writer_writes_at_period_last_iteration_and_end() -> None:
    writer = _RecordingWriter()
    trainer = _trainer()
    trainer.register_hooks([hooks.PeriodicWriter([writer], period=3)])
    trainer.train(0, 8)
    assert writer.writes == [2, 5, 7, 8]  # periods, last iteration, after_train
    assert writer.closed
    with pytest.raises(TypeError, match="EventWriter"):
        hooks.PeriodicWriter([object()])


def test_periodic_writer_writes_and_closes_after_an_error() -> None:
    writer = _RecordingWriter()
    trainer = _trainer(fail_at=4)
    trainer.register_hooks([hooks.PeriodicWriter([writer], period=3)])
    with pytest.raises(RuntimeError, match="batch 4"):
        trainer.train(0, 8)
    assert writer.writes == [2, 4] and writer.closed


def _checkpoint_hook(trainer: SimpleTrainer, folder: str) -> hooks.PeriodicCheckpointer:
    checkpointer = DetectionCheckpointer(trainer.model, folder, trainer=trainer)
    return hooks.PeriodicCheckpointer(checkpointer, period=5)


def test_periodic_checkpointer_saves_every_period_and_final(tmp_path) -> None:
    trainer = _trainer()
    trainer.register_hooks([_checkpoint_hook(trainer, str(tmp_path))])
    trainer.train(0, 12)
    saved = sorted(p.name for p in tmp_path.glob("*.pth"))
    assert saved == ["model_0000004.pth", "model_0000009.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    final = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert final["iteration"] == 11
    assert torch.equal(final["model"]["fc.weight"], trainer.model.fc.weight)


def test_periodic_checkpointer_saves_no_final_after_an_error(tmp_path) -> None:
    trainer = _trainer(fail_at=7)
    trainer.register_hooks([_checkpoint_hook(trainer, str(tmp_path))])
    with pytest.raises(RuntimeError, match="batch 7"):
        trainer.train(0, 12)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000004.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"


def test_lr_scheduler_puts_the_lr_used_and_steps() -> None:
    trainer = _trainer(lr=1.0)
    trainer.register_hooks([hooks.LRScheduler()])
    trainer.train(0, 5)
    lrs = trainer.storage.history("lr").values()
    assert [itr for _, itr in lrs] == [0, 1, 2, 3, 4]
    assert [lr for lr, _ in lrs] == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    assert trainer.storage.smoothing_hints()["lr"] is False
    assert trainer.scheduler.last_epoch == 5


def test_lr_scheduler_state_round_trips_through_the_trainer() -> None:
    trainer = _trainer(lr=1.0)
    trainer.register_hooks([hooks.LRScheduler()])
    trainer.train(0, 5)
    state = trainer.state_dict()
    assert state["hooks"]["LRScheduler"] == trainer.scheduler.state_dict()

    resumed = _trainer(lr=1.0)
    resumed.register_hooks([hooks.LRScheduler()])
    resumed.load_state_dict(state)
    assert resumed.scheduler.last_epoch == 5
    assert resumed.scheduler.get_last_lr() == pytest.approx([0.01])
    resumed.train(5, 7)
    assert [lr for lr, _ in resumed.storage.history("lr").values()] == pytest.approx([0.01, 0.001])


def test_lr_scheduler_applies_a_param_scheduler_from_the_start_iteration() -> None:
    multiplier = LinearParamScheduler(start_value=1.0, end_value=0.0)
    trainer = _trainer(lr=2.0)
    hook = hooks.LRScheduler(scheduler=multiplier)
    trainer.register_hooks([hook])
    trainer.train(0, 4)
    assert [lr for lr, _ in trainer.storage.history("lr").values()] == [2.0, 1.5, 1.0, 0.5]
    assert hook.state_dict() == {"base_lrs": [2.0], "last_epoch": 4}

    # A resumed run: the optimizer's state comes from the checkpoint, the schedule from the
    # start iteration.
    model = _LinearModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.123)
    optimizer.load_state_dict(trainer.optimizer.state_dict())
    resumed = SimpleTrainer(model, _batches(), optimizer)
    resumed.register_hooks([hooks.LRScheduler(scheduler=multiplier)])
    assert resumed.state_dict()["hooks"] == {}  # a bare ParamScheduler has no state
    resumed.train(2, 4)
    assert [lr for lr, _ in resumed.storage.history("lr").values()] == [1.0, 0.5]


def test_lr_scheduler_reports_the_largest_group() -> None:
    a, b, c, d = (nn.Parameter(torch.zeros(1)) for _ in range(4))
    groups = [{"params": [a], "lr": 0.5}, {"params": [b, c, d], "lr": 0.2}]
    optimizer = torch.optim.SGD(groups, lr=1.0)
    assert hooks.LRScheduler.get_best_param_group_id(optimizer) == 1
    singles = [{"params": [p], "lr": lr} for p, lr in zip((a, b, c), (0.5, 0.2, 0.2))]
    assert hooks.LRScheduler.get_best_param_group_id(torch.optim.SGD(singles, lr=1.0)) == 1


def _eval_function(values: list[float]) -> Any:
    calls = iter(values)

    def evaluate() -> dict[str, Any]:
        miou = next(calls)
        return {
            "sem_seg": {"mIoU": np.float32(miou), "IoU-road": miou + 1},
            "bbox": {"AP": torch.tensor(30.0)},
        }

    return evaluate


def test_eval_hook_runs_at_period_and_after_training(tmp_path) -> None:
    trainer = _trainer()
    metrics = tmp_path / "metrics.json"
    eval_hook = hooks.EvalHook(3, _eval_function([50.0, 60.0]))
    writer = hooks.PeriodicWriter([JSONWriter(str(metrics))], period=100)
    trainer.register_hooks([eval_hook, writer])
    trainer.train(0, 6)
    history = trainer.storage.history("sem_seg/mIoU").values()
    assert history == [(50.0, 2), (60.0, 6)]  # not at iteration 5: after training instead
    assert trainer.storage.latest()["bbox/AP"] == (30.0, 6)
    assert trainer.storage.latest()["sem_seg/IoU-road"] == (61.0, 6)
    assert trainer.storage.smoothing_hints()["sem_seg/mIoU"] is False
    assert eval_hook._func is None  # released
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    evals = [line for line in lines if "sem_seg/mIoU" in line]
    assert evals == [
        {"bbox/AP": 30.0, "iteration": 2, "sem_seg/IoU-road": 51.0, "sem_seg/mIoU": 50.0},
        {"bbox/AP": 30.0, "iteration": 6, "sem_seg/IoU-road": 61.0, "sem_seg/mIoU": 60.0},
    ]


def test_eval_hook_skips_final_eval_when_disabled_or_after_an_error() -> None:
    trainer = _trainer()
    trainer.register_hooks([hooks.EvalHook(2, _eval_function([1.0, 2.0]), eval_after_train=False)])
    trainer.train(0, 4)
    assert trainer.storage.history("sem_seg/mIoU").values() == [(1.0, 1)]

    failing = _trainer(fail_at=3)
    failing.register_hooks([hooks.EvalHook(2, _eval_function([1.0, 2.0]))])
    with pytest.raises(RuntimeError, match="batch 3"):
        failing.train(0, 6)
    assert failing.storage.history("sem_seg/mIoU").values() == [(1.0, 1)]


def test_eval_hook_rejects_results_that_are_not_numbers() -> None:
    trainer = _trainer()
    trainer.register_hooks([hooks.EvalHook(0, lambda: {"sem_seg": {"mIoU": "high"}})])
    with pytest.raises(ValueError, match="'sem_seg/mIoU': 'high'"):
        trainer.train(0, 1)


@pytest.mark.parametrize(
    ("mode", "expected_saves"), [("max", [(50.0, 1), (60.0, 6)]), ("min", [(50.0, 1), (40.0, 3)])]
)
def test_best_checkpointer_saves_only_improvements(tmp_path, mode, expected_saves) -> None:
    trainer = _trainer()
    checkpointer = DetectionCheckpointer(trainer.model, str(tmp_path))
    saves: list[tuple[float, int]] = []
    save = checkpointer.save

    def recording_save(name: str, iteration: int) -> None:
        saves.append((trainer.storage.latest()["sem_seg/mIoU"][0], iteration))
        save(name, iteration=iteration)

    checkpointer.save = recording_save
    best = hooks.BestCheckpointer(2, checkpointer, "sem_seg/mIoU", mode=mode)
    trainer.register_hooks([hooks.EvalHook(2, _eval_function([50.0, 40.0, 60.0])), best])
    trainer.train(0, 6)
    assert saves == expected_saves
    assert (best.best_metric, best.best_iter) == expected_saves[-1]
    assert (
        torch.load(tmp_path / "model_best.pth", weights_only=False)["iteration"]
        == (expected_saves[-1][1])
    )
    with pytest.raises(ValueError, match="max"):
        hooks.BestCheckpointer(2, checkpointer, "sem_seg/mIoU", mode="higher")


def test_best_checkpointer_warns_when_the_metric_is_missing(tmp_path, logs) -> None:
    trainer = _trainer()
    checkpointer = DetectionCheckpointer(trainer.model, str(tmp_path))
    trainer.register_hooks([hooks.BestCheckpointer(2, checkpointer, "segm/AP")])
    trainer.train(0, 2)
    assert "segm/AP does not seem to be computed/stored" in logs.text
    assert not list(tmp_path.glob("*.pth"))


def test_precise_bn_sets_the_population_statistics() -> None:
    model = _BNModel()
    data = torch.randn(4, 8, 2) * 3 + 5  # 4 batches of 8, unlike the training data
    trainer = _trainer(model=model)
    trainer.register_hooks([hooks.PreciseBN(0, model, list(data), num_iter=4)])
    trainer.train(0, 3)
    assert torch.allclose(model.bn.running_mean, data.reshape(-1, 2).mean(0), atol=1e-5)
    assert model.bn.momentum == 0.1  # restored


def test_precise_bn_is_a_no_op_without_training_bn(logs) -> None:
    trainer = _trainer()
    trainer.register_hooks([hooks.PreciseBN(1, trainer.model, _batches(fail_at=0), num_iter=4)])
    trainer.train(0, 2)  # the loader would fail if it were read
    assert "PreciseBN is disabled" in logs.text


def test_default_hook_stack_logs_and_writes_metrics(tmp_path, logs) -> None:
    trainer = _trainer()
    trainer.checkpointer = DetectionCheckpointer(trainer.model, str(tmp_path), trainer=trainer)
    metrics = tmp_path / "metrics.json"
    trainer.register_hooks(
        [
            hooks.IterationTimer(warmup_iter=1),
            hooks.LRScheduler(),
            hooks.PeriodicCheckpointer(trainer.checkpointer, period=4),
            hooks.EvalHook(4, lambda: {"sem_seg": {"mIoU": 12.5}}),
            hooks.PeriodicWriter(
                [CommonMetricPrinter(max_iter=8), JSONWriter(str(metrics))], period=4
            ),
        ]
    )
    trainer.train(0, 8)
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [3, 7, 8]
    assert {"data_time", "eta_seconds", "loss_a", "loss_b", "lr", "time", "total_loss"} <= set(
        lines[0]
    )
    assert lines[0]["sem_seg/mIoU"] == 12.5 and lines[2] == {"iteration": 8, "sem_seg/mIoU": 12.5}
    printed = [r.getMessage() for r in logs.records if "iter: " in r.getMessage()]
    assert len(printed) == 2
    assert printed[1].startswith(" eta: 0:00:00  iter: 7  total_loss: ")
    assert "loss_a: " in printed[1] and printed[1].endswith("lr: 0.0001")
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == [
        "model_0000003.pth",
        "model_0000007.pth",
        "model_final.pth",
    ]
