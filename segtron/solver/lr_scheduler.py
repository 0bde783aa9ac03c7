"""Learning-rate schedules: fvcore param schedulers driven by a torch ``LRScheduler``.

:class:`WarmupParamScheduler` puts a warmup in front of any fvcore ``ParamScheduler``;
:class:`LRMultiplier` turns such a schedule (a multiplier of the base learning rate as a function
of training progress) into a torch ``LRScheduler`` that is stepped once per iteration;
:class:`PolyParamScheduler` is the DeepLab "poly" decay with a constant floor. The older
self-contained schedulers :class:`WarmupMultiStepLR`, :class:`WarmupCosineLR` and
:class:`WarmupPolyLR` are kept so that code importing them from Detectron2 (or its DeepLab
project) keeps working; new code uses :func:`segtron.solver.build_lr_scheduler`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    LinearParamScheduler,
    ParamScheduler,
)
from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "LRMultiplier",
    "PolyParamScheduler",
    "WarmupCosineLR",
    "WarmupMultiStepLR",
    "WarmupParamScheduler",
    "WarmupPolyLR",
]

_WARMUP_METHODS = ("constant", "linear")


class WarmupParamScheduler(CompositeParamScheduler):
    """A param scheduler preceded by a warmup over the first ``warmup_length`` of training.

    The warmup starts at ``warmup_factor * scheduler(0)``. A "constant" warmup stays there; a
    "linear" one rises linearly to the value that ``scheduler`` has when it takes over.

    Args:
        scheduler: the schedule to warm up, a function of training progress in [0, 1].
        warmup_factor: the multiplier of ``scheduler(0)`` at the start of the warmup.
        warmup_length: the fraction of training that the warmup takes, in [0, 1].
        warmup_method: "linear" or "constant".
        rescale_interval: when True, ``scheduler`` is stretched over the iterations after the
            warmup (it starts at its beginning when the warmup ends); when False, it is
            evaluated at the overall training progress.

    Raises:
        ValueError: ``warmup_method`` is neither "linear" nor "constant".
    """

    def __init__(
        self,
        scheduler: ParamScheduler,
        warmup_factor: float,
        warmup_length: float,
        warmup_method: str = "linear",
        rescale_interval: bool = False,
    ) -> None:
        start_value = warmup_factor * scheduler(0.0)
        end_value = scheduler(0.0) if rescale_interval else scheduler(warmup_length)
        if warmup_method == "constant":
            warmup: ParamScheduler = ConstantParamScheduler(start_value)
        elif warmup_method == "linear":
            warmup = LinearParamScheduler(start_value, end_value)
        else:
            raise ValueError(
                f"Unknown warmup method {warmup_method!r} (SOLVER.WARMUP_METHOD); "
                f"expected one of {_WARMUP_METHODS}."
            )
        super().__init__(
            [warmup, scheduler],
            lengths=[warmup_length, 1.0 - warmup_length],
            interval_scaling=["rescaled", "rescaled" if rescale_interval else "fixed"],
        )


class PolyParamScheduler(ParamScheduler):
    """DeepLab's "poly" decay ``(1 - where) ** power``, never below ``constant_ending``.

    Args:
        power: the exponent of the decay.
        constant_ending: a floor on the value (0 disables it), as in the DeepLab project's
            ``SOLVER.POLY_LR_CONSTANT_ENDING``.
    """

    def __init__(self, power: float, constant_ending: float = 0.0) -> None:
        self._power = power
        self._constant_ending = constant_ending

    def __call__(self, where: float) -> float:
        return max((1.0 - min(where, 1.0)) ** self._power, self._constant_ending)


class LRMultiplier(LRScheduler):
    """A torch LR scheduler whose learning rates are ``base_lr * multiplier(iter / max_iter)``.

    Each parameter group keeps its own base learning rate (its ``lr`` when the scheduler was
    created); the multiplier, an fvcore ``ParamScheduler``, is shared by all groups. Call
    :meth:`step` once per iteration, after ``optimizer.step()``.

    segtron differences from Detectron2, both on purpose:

    * once ``iter`` reaches ``max_iter`` the learning rate stays at its value of the last
      iteration (``max_iter - 1``), rather than evaluating schedules past their end, where some
      of them are undefined (step schedules raise, cosine rises again);
    * :meth:`load_state_dict` also writes the restored iteration's learning rates into the
      optimizer, so a resumed scheduler continues exactly even with a fresh optimizer.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        multiplier: the schedule, a function of training progress in [0, 1).
        max_iter: the number of training iterations.
        last_iter: the last finished iteration; -1 starts a new schedule.

    Raises:
        ValueError: ``multiplier`` is not a ``ParamScheduler``, or ``max_iter`` is not positive.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        multiplier: ParamScheduler,
        max_iter: int,
        last_iter: int = -1,
    ) -> None:
        if not isinstance(multiplier, ParamScheduler):
            raise ValueError(
                "LRMultiplier(multiplier=) must be an fvcore ParamScheduler, got "
                f"{type(multiplier).__name__}."
            )
        if max_iter <= 0:
            raise ValueError(f"LRMultiplier needs max_iter > 0, got {max_iter}.")
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> dict[str, Any]:
        """The iteration and base learning rates (fvcore schedulers carry no state)."""
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the iteration and base learning rates, and apply that iteration's rates."""
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = state_dict["last_epoch"]
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def get_lr(self) -> list[float]:
        """The learning rate of each parameter group at iteration ``last_epoch``."""
        iteration = min(self.last_epoch, self._max_iter - 1)
        multiplier = self._multiplier(iteration / self._max_iter)
        return [base_lr * multiplier for base_lr in self.base_lrs]


def _get_warmup_factor_at_iter(
    method: str, iteration: int, warmup_iters: int, warmup_factor: float
) -> float:
    """The multiplier of the learning rate at ``iteration`` due to the warmup alone."""
    if iteration >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        alpha = iteration / warmup_iters
        return warmup_factor * (1.0 - alpha) + alpha
    raise ValueError(f"Unknown warmup method {method!r}; expected one of {_WARMUP_METHODS}.")


class _WarmupLR(LRScheduler):
    """Shared arguments of the self-contained warmup schedulers below."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_factor: float,
        warmup_iters: int,
        warmup_method: str,
        last_epoch: int,
    ) -> None:
        if warmup_method not in _WARMUP_METHODS:
            raise ValueError(
                f"Unknown warmup method {warmup_method!r}; expected one of {_WARMUP_METHODS}."
            )
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def _warmup(self) -> float:
        return _get_warmup_factor_at_iter(
            self.warmup_method, self.last_epoch, self.warmup_iters, self.warmup_factor
        )


class WarmupMultiStepLR(_WarmupLR):
    """``base_lr * warmup(iter) * gamma ** (number of milestones <= iter)`` (Detectron2's old API).

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        milestones: increasing iterations at which the learning rate is multiplied by ``gamma``.
        gamma: the decay factor.
        warmup_factor: the warmup's starting multiplier.
        warmup_iters: the number of warmup iterations.
        warmup_method: "linear" or "constant".
        last_epoch: the last finished iteration; -1 starts a new schedule.

    Raises:
        ValueError: ``milestones`` is not increasing, or the warmup method is unknown.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        milestones: list[int],
        gamma: float = 0.1,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        if list(milestones) != sorted(milestones):
            raise ValueError(f"Milestones should be increasing integers, got {milestones}.")
        self.milestones = list(milestones)
        self.gamma = gamma
        super().__init__(optimizer, warmup_factor, warmup_iters, warmup_method, last_epoch)

    def get_lr(self) -> list[float]:
        """The learning rate of each parameter group at iteration ``last_epoch``."""
        factor = self._warmup() * self.gamma ** bisect_right(self.milestones, self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]


class WarmupCosineLR(_WarmupLR):
    """``base_lr * warmup(iter) * (1 + cos(pi * iter / max_iters)) / 2`` (Detectron2's old API).

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        max_iters: the number of training iterations.
        warmup_factor: the warmup's starting multiplier.
        warmup_iters: the number of warmup iterations.
        warmup_method: "linear" or "constant".
        last_epoch: the last finished iteration; -1 starts a new schedule.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iters: int,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        self.max_iters = max_iters
        super().__init__(optimizer, warmup_factor, warmup_iters, warmup_method, last_epoch)

    def get_lr(self) -> list[float]:
        """The learning rate of each parameter group at iteration ``last_epoch``."""
        cosine = 0.5 * (1.0 + math.cos(math.pi * self.last_epoch / self.max_iters))
        factor = self._warmup() * cosine
        return [base_lr * factor for base_lr in self.base_lrs]


class WarmupPolyLR(_WarmupLR):
    """``base_lr * warmup(iter) * (1 - iter / max_iters) ** power`` (the DeepLab project's API).

    After the warmup, the multiplier never falls below ``constant_ending`` when that is > 0.
    Unlike the DeepLab project's class, iterations past ``max_iters`` keep the final rate
    instead of raising a math error.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        max_iters: the number of training iterations.
        warmup_factor: the warmup's starting multiplier.
        warmup_iters: the number of warmup iterations.
        warmup_method: "linear" or "constant".
        last_epoch: the last finished iteration; -1 starts a new schedule.
        power: the exponent of the decay.
        constant_ending: the floor of the multiplier after the warmup; 0 disables it.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iters: int,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
        power: float = 0.9,
        constant_ending: float = 0.0,
    ) -> None:
        self.max_iters = max_iters
        self.power = power
        self.constant_ending = constant_ending
        super().__init__(optimizer, warmup_factor, warmup_iters, warmup_method, last_epoch)

    def get_lr(self) -> list[float]:
        """The learning rate of each parameter group at iteration ``last_epoch``."""
        warmup = self._warmup()
        poly = (1.0 - min(self.last_epoch / self.max_iters, 1.0)) ** self.power
        if warmup == 1.0 and poly < self.constant_ending:
            return [base_lr * self.constant_ending for base_lr in self.base_lrs]
        return [base_lr * warmup * poly for base_lr in self.base_lrs]
