"""Tests of segtron.engine.train_loop: the hook protocol, SimpleTrainer, AMPTrainer, NaN checks
and checkpointable state."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import torch
from torch import nn

from segtron.engine.train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase

_X = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, -2.0], [2.0, 1.0]])


class _TwoLosses(nn.Module):
    """A linear layer with fixed initial weights returning two losses."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 1)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.5, -0.25]]))
            self.fc.bias.fill_(0.1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.fc(x)
        return {"loss_a": (out**2).mean(), "loss_b": out.abs().mean()}


def _constant_batches(fail_at: int | None = None) -> Iterator[torch.Tensor]:
    for i in itertools.count():
        if i == fail_at:
            raise RuntimeError(f"data loader failed at batch {i}")
        yield _X.clone()


class _Recorder(HookBase):
    """Records each hook call with the trainer's iteration."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def before_train(self) -> None:
        self.calls.append(("before_train", self.trainer.iter))

    def before_step(self) -> None:
        self.calls.append(("before_step", self.trainer.iter))

    def after_backward(self) -> None:
        self.calls.append(("after_backward", self.trainer.iter))

    def after_step(self) -> None:
        self.calls.append(("after_step", self.trainer.iter))

    def after_train(self) -> None:
        self.calls.append(("after_train", self.trainer.iter))


class _LatestScalars(HookBase):
    """Copies the storage's latest scalars after every step."""

    def __init__(self) -> None:
        self.per_iter: list[dict[str, float]] = []

    def after_step(self) -> None:
        latest = self.trainer.storage.latest()
        self.per_iter.append({k: v for k, (v, it) in latest.items() if it == self.trainer.iter})


def _simple(model: nn.Module | None = None, lr: float = 0.1, **kw: Any) -> SimpleTrainer:
    model = model or _TwoLosses()
    return SimpleTrainer(model, _constant_batches(**kw), torch.optim.SGD(model.parameters(), lr=lr))


def test_hooks_are_called_in_order_with_the_iteration() -> None:
    trainer = _simple()
    first, second = _Recorder(), _Recorder()
    trainer.register_hooks([first, None, second])
    trainer.train(3, 5)
    expected = [
        ("before_train", 3),
        ("before_step", 3),
        ("after_backward", 3),
        ("after_step", 3),
        ("before_step", 4),
        ("after_backward", 4),
        ("after_step", 4),
        ("after_train", 5),
    ]
    assert first.calls == expected
    assert second.calls == expected
    assert trainer.iter == trainer.max_iter == 5 and trainer.start_iter == 3


def test_hooks_of_one_event_run_in_registration_order() -> None:
    order: list[str] = []

    class Named(HookBase):
        def __init__(self, name: str) -> None:
            self.name = name

        def after_step(self) -> None:
            order.append(self.name)

    trainer = _simple()
    trainer.register_hooks([Named("a"), Named("b")])
    trainer.register_hooks([Named("c")])
    trainer.train(0, 2)
    assert order == ["a", "b", "c"] * 2


def test_register_hooks_rejects_non_hooks() -> None:
    with pytest.raises(TypeError, match="HookBase"):
        _simple().register_hooks([object()])


def test_after_train_runs_after_an_exception_with_iter_below_max_iter() -> None:
    trainer = _simple(fail_at=2)
    recorder = _Recorder()
    trainer.register_hooks([recorder])
    with pytest.raises(RuntimeError, match="data loader failed at batch 2"):
        trainer.train(0, 10)
    assert recorder.calls[-1] == ("after_train", 2)
    assert ("after_step", 1) in recorder.calls and ("after_step", 2) not in recorder.calls
    assert trainer.iter == 2 < trainer.max_iter


def test_simple_trainer_puts_losses_and_data_time_into_the_storage() -> None:
    model = _TwoLosses()
    with torch.no_grad():
        out = model.fc(_X)
        loss_a, loss_b = float((out**2).mean()), float(out.abs().mean())
    trainer = _simple(model)
    scalars = _LatestScalars()
    trainer.register_hooks([scalars])
    trainer.train(0, 3)
    assert len(scalars.per_iter) == 3
    first = scalars.per_iter[0]
    assert {"total_loss", "loss_a", "loss_b", "data_time"} <= set(first)
    assert first["loss_a"] == pytest.approx(loss_a, rel=1e-6)
    assert first["loss_b"] == pytest.approx(loss_b, rel=1e-6)
    assert first["total_loss"] == pytest.approx(loss_a + loss_b, rel=1e-6)
    assert first["data_time"] >= 0
    # The optimizer stepped: the losses of the following iterations are different.
    assert scalars.per_iter[2]["total_loss"] < first["total_loss"]


def test_model_returning_a_tensor_is_its_total_loss() -> None:
    class TensorLoss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor(2.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (self.w * x).pow(2).mean()

    model = TensorLoss()
    trainer = _simple(model, lr=0.01)
    scalars = _LatestScalars()
    trainer.register_hooks([scalars])
    trainer.train(0, 2)
    first = scalars.per_iter[0]
    assert first["total_loss"] == pytest.approx(float((2 * _X).pow(2).mean()), rel=1e-6)
    assert not any(k.startswith("loss") for k in first)
    assert float(model.w.detach()) < 2.0


def test_model_returning_an_empty_dict_raises_a_clear_error() -> None:
    class NoLoss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {}

    with pytest.raises(TypeError, match="non-empty dict of scalar losses"):
        _simple(NoLoss()).train(0, 1)


class _BadAt(_TwoLosses):
    """Returns a non-finite ``loss_bad`` at one call."""

    def __init__(self, at: int, value: float) -> None:
        super().__init__()
        self.at, self.value, self.calls = at, value, 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = super().forward(x)
        bad = losses["loss_a"] * 0
        if self.calls == self.at:
            bad = bad + self.value
        self.calls += 1
        return {**losses, "loss_bad": bad}


class _Snapshot(HookBase):
    """Keeps a copy of the weights after each step, and counts after_backward calls."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []
        self.backwards: list[int] = []

    def after_backward(self) -> None:
        self.backwards.append(self.trainer.iter)

    def after_step(self) -> None:
        model = self.trainer.model
        self.weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})


@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (float("inf"), "inf")])
@pytest.mark.parametrize("amp", [False, True])
def test_non_finite_loss_stops_before_the_optimizer_step(value, shown, amp) -> None:
    model = _BadAt(2, value)
    # Momentum: a step with a zero or NaN gradient would still change the weights.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if amp:
        trainer = AMPTrainer(model, _constant_batches(), optimizer, precision=torch.bfloat16)
    else:
        trainer = SimpleTrainer(model, _constant_batches(), optimizer)
    snapshot = _Snapshot()
    trainer.register_hooks([snapshot])
    with pytest.raises(FloatingPointError, match=rf"iteration 2: loss_bad={shown}") as info:
        trainer.train(0, 5)
    assert "loss_a" not in str(info.value)  # only the bad loss is named
    assert snapshot.backwards == [0, 1]
    assert trainer.iter == 2
    for key, value_after_iter_1 in snapshot.weights[-1].items():
        torch.testing.assert_close(model.state_dict()[key], value_after_iter_1, rtol=0, atol=0)
    assert all(torch.isfinite(p).all() for p in model.parameters())


class _Regression(nn.Module):
    """Least squares on a fixed problem; records the dtype its layer computed in."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 1)
        self.x = torch.randn(32, 8)
        self.y = self.x @ torch.linspace(-1, 1, 8).unsqueeze(1) + 0.5
        self.dtypes: list[torch.dtype] = []

    def forward(self, _batch: Any) -> dict[str, torch.Tensor]:
        out = self.fc(self.x)
        self.dtypes.append(out.dtype)
        return {"loss_mse": ((out.float() - self.y) ** 2).mean()}


def test_amp_trainer_bfloat16_on_cpu_trains() -> None:
    model = _Regression()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = AMPTrainer(model, itertools.repeat(None), optimizer, precision=torch.bfloat16)
    assert trainer.grad_scaler is None  # bf16 needs no loss scaling
    scalars = _LatestScalars()
    trainer.register_hooks([scalars])
    trainer.train(0, 40)
    losses = [s["total_loss"] for s in scalars.per_iter]
    assert losses[-1] < 0.1 * losses[0]
    assert set(model.dtypes) == {torch.bfloat16}  # autocast was on
    assert model.fc.weight.dtype == torch.float32  # the weights stay in full precision


def test_amp_trainer_rejects_fp16_on_cpu_and_other_dtypes() -> None:
    model = _Regression()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="fp16 autocast is not supported .* on CPU.*bfloat16"):
        AMPTrainer(model, [], optimizer)  # float16 is the default precision
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        AMPTrainer(model, [], optimizer, precision=torch.float32)


class _Counter(HookBase):
    """A stateful hook counting the steps it saw."""

    def __init__(self) -> None:
        self.count = 0

    def after_step(self) -> None:
        self.count += 1

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.count = state_dict["count"]


def _momentum(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [
        optimizer.state[p]["momentum_buffer"] for g in optimizer.param_groups for p in g["params"]
    ]


def test_simple_trainer_state_dict_round_trip() -> None:
    model = _TwoLosses()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = SimpleTrainer(model, _constant_batches(), optimizer)
    counter = _Counter()
    trainer.register_hooks([counter, _Recorder()])  # the recorder has no state
    trainer.train(0, 3)
    state = trainer.state_dict()
    assert state["iteration"] == 3
    assert state["hooks"] == {"_Counter": {"count": 3}}
    assert "grad_scaler" not in state

    model2 = _TwoLosses()
    optimizer2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    trainer2 = SimpleTrainer(model2, _constant_batches(), optimizer2)
    counter2 = _Counter()
    trainer2.register_hooks([counter2])
    trainer2.load_state_dict(state)
    assert trainer2.iter == 3
    assert counter2.count == 3
    for a, b in zip(_momentum(optimizer2), _momentum(optimizer), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert torch.count_nonzero(a) > 0


def test_load_state_dict_warns_about_a_missing_hook(caplog) -> None:
    trainer = _simple()
    trainer.register_hooks([_Counter()])
    trainer.train(0, 1)
    state = trainer.state_dict()
    other = _simple()
    with caplog.at_level(logging.WARNING, logger="segtron"):
        other.load_state_dict(state)
    assert "Cannot find the hook '_Counter'" in caplog.text


def test_amp_trainer_state_dict_has_the_grad_scaler() -> None:
    def make(init_scale: float) -> AMPTrainer:
        model = _Regression()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=1)
        return AMPTrainer(
            model,
            itertools.repeat(None),
            optimizer,
            grad_scaler=scaler,
            precision=torch.bfloat16,
        )

    trainer = make(8.0)
    trainer.train(0, 2)
    state = trainer.state_dict()
    assert state["grad_scaler"]["scale"] == trainer.grad_scaler.get_scale() == 32.0
    other = make(1.0)
    other.load_state_dict(state)
    assert other.grad_scaler.get_scale() == 32.0
    assert other.iter == 2
    # Without a scaler the key is neither written nor needed.
    model = _Regression()
    plain = AMPTrainer(
        model,
        itertools.repeat(None),
        torch.optim.SGD(model.parameters(), lr=0.1),
        precision=torch.bfloat16,
    )
    assert "grad_scaler" not in plain.state_dict()
    plain.load_state_dict(state)
    assert plain.iter == 2


def test_trainer_base_needs_run_step() -> None:
    with pytest.raises(NotImplementedError):
        TrainerBase().train(0, 1)
