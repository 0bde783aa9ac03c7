"""The training loop: ``HookBase``, ``TrainerBase``, ``SimpleTrainer`` and ``AMPTrainer``.

The names and the hook protocol are Detectron2's. One behaviour differs on purpose: the losses
are checked for NaN or infinity right after the forward pass, before any gradient reaches the
weights, and the error names the loss and the iteration (Detectron2 checks only after the
optimizer step, when the weights may already be damaged).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from segtron.utils import comm
from segtron.utils.events import EventStorage, get_event_storage

__all__ = ["AMPTrainer", "HookBase", "SimpleTrainer", "TrainerBase"]

logger = logging.getLogger(__name__)


class HookBase:
    """Base class of the hooks a trainer calls around training and around every step.

    ``self.trainer`` is a weak proxy to the trainer, set by `TrainerBase.register_hooks`. In
    ``after_step`` the trainer's ``iter`` is the iteration that has just run.
    """

    trainer: TrainerBase

    def before_train(self) -> None:
        """Called once before the first iteration."""

    def after_train(self) -> None:
        """Called once after the last iteration, also when training stopped with an error."""

    def before_step(self) -> None:
        """Called before each iteration."""

    def after_backward(self) -> None:
        """Called after the backward pass of each iteration, before the optimizer step."""

    def after_step(self) -> None:
        """Called after each iteration."""

    def state_dict(self) -> dict[str, Any]:
        """The hook's state to checkpoint (empty for stateless hooks)."""
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned (no-op for stateless hooks)."""


class TrainerBase:
    """A loop over iterations with hooks; subclasses implement `run_step`.

    Attributes:
        iter: the current iteration.
        start_iter: the first iteration of this run.
        max_iter: the iteration at which training stops (exclusive).
        storage: the `EventStorage` open while training.
    """

    def __init__(self) -> None:
        """Create a trainer with no hooks."""
        self._hooks: list[HookBase] = []
        self.iter: int = 0
        self.start_iter: int = 0
        self.max_iter: int = 0
        self.storage: EventStorage

    def register_hooks(self, hooks: Iterable[HookBase | None]) -> None:
        """Append hooks (None entries are skipped); they run in registration order.

        Args:
            hooks: the hooks to add.
        """
        hooks = [h for h in hooks if h is not None]
        for h in hooks:
            if not isinstance(h, HookBase):
                raise TypeError(f"Expected a HookBase, got {type(h).__name__}.")
            # A weak proxy avoids a reference cycle between the trainer and its hooks.
            h.trainer = weakref.proxy(self)
        self._hooks.extend(hooks)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter`` to ``max_iter - 1``.

        Args:
            start_iter: the first iteration.
            max_iter: the iteration to stop at.
        """
        logger.info(f"Starting training from iteration {start_iter}")
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                # The loop leaves ``iter`` at the last iteration run; after a complete run
                # it is ``max_iter`` so that after_train can tell completion from an error.
                self.iter += 1
            except Exception:
                logger.exception(f"Exception during training at iteration {self.iter}:")
                raise
            finally:
                self.after_train()

    def before_train(self) -> None:
        """Run the hooks' ``before_train``."""
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        """Run the hooks' ``after_train`` with the storage at the current iteration."""
        self.storage.iter = self.iter
        for h in self._hooks:
            h.after_train()

    def before_step(self) -> None:
        """Set the storage's iteration and run the hooks' ``before_step``."""
        self.storage.iter = self.iter
        for h in self._hooks:
            h.before_step()

    def after_backward(self) -> None:
        """Run the hooks' ``after_backward``."""
        for h in self._hooks:
            h.after_backward()

    def after_step(self) -> None:
        """Run the hooks' ``after_step``."""
        for h in self._hooks:
            h.after_step()

    def run_step(self) -> None:
        """One training iteration."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The iteration and the state of every stateful hook, keyed by its class path."""
        hooks_state = {}
        for h in self._hooks:
            state = h.state_dict()
            if state:
                name = type(h).__qualname__
                if name in hooks_state:
                    # Two hooks of one class cannot be told apart on resume.
                    continue
                hooks_state[name] = state
        return {"iteration": self.iter, "hooks": hooks_state}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.iter = int(state_dict["iteration"])
        for key, value in state_dict.get("hooks", {}).items():
            for h in self._hooks:
                if type(h).__qualname__ == key:
                    h.load_state_dict(value)
                    break
            else:
                logger.warning(f"Cannot find the hook '{key}'; its state is not restored.")


def _check_losses_finite(loss_dict: Mapping[str, torch.Tensor], iteration: int) -> None:
    """Raise FloatingPointError naming every NaN or infinite loss."""
    bad = {k: float(v.detach()) for k, v in loss_dict.items() if not torch.isfinite(v).all()}
    if bad:
        names = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise FloatingPointError(
            f"Loss became infinite or NaN at iteration {iteration}: {names}. Training stopped "
            "before this step changed the weights; the last checkpoint in OUTPUT_DIR is intact. "
            "Try a lower SOLVER.BASE_LR, a longer SOLVER.WARMUP_ITERS or "
            "SOLVER.CLIP_GRADIENTS.ENABLED True."
        )


class SimpleTrainer(TrainerBase):
    """Forward, backward and optimizer step on one batch per iteration.

    The model takes a batch from the data loader and returns a dict of scalar losses, which are
    summed. Subclass it or write your own `TrainerBase` for anything more complicated.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable[Any],
        optimizer: torch.optim.Optimizer,
        gather_metric_period: int = 1,
        zero_grad_before_forward: bool = False,
    ) -> None:
        """Create the trainer.

        Args:
            model: returns a dict of losses for a batch; set to training mode here.
            data_loader: an iterable of batches (iterated lazily, once, from the start).
            optimizer: updates the model's parameters.
            gather_metric_period: gather losses from all ranks every this many iterations.
            zero_grad_before_forward: clear gradients before the forward pass rather than
                right before the backward pass.
        """
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter_obj: Iterator[Any] | None = None
        self.optimizer = optimizer
        self.gather_metric_period = gather_metric_period
        self.zero_grad_before_forward = zero_grad_before_forward

    @property
    def _data_loader_iter(self) -> Iterator[Any]:
        # Created on first use, so that a resumed run can reposition the loader first.
        if self._data_loader_iter_obj is None:
            self._data_loader_iter_obj = iter(self.data_loader)
        return self._data_loader_iter_obj

    def run_step(self) -> None:
        """Load a batch, compute the losses, back-propagate and step the optimizer."""
        assert self.model.training, "The model was switched to eval mode during training."
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with self._autocast():
            loss_dict = self._losses(self.model(data))
            _check_losses_finite(loss_dict, self.iter)
            losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        self._backward_and_step(losses, loss_dict, data_time)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """The context of the forward pass (none here; autocast in `AMPTrainer`)."""
        return contextlib.nullcontext()

    def _backward_and_step(
        self, losses: torch.Tensor, loss_dict: Mapping[str, torch.Tensor], data_time: float
    ) -> None:
        losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()

    @staticmethod
    def _losses(output: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if isinstance(output, torch.Tensor):
            return {"total_loss": output}
        if not isinstance(output, Mapping) or not output:
            raise TypeError(
                "In training mode the model must return a non-empty dict of scalar losses, got "
                f"{type(output).__name__}."
            )
        return dict(output)

    def _write_metrics(
        self, loss_dict: Mapping[str, torch.Tensor], data_time: float, prefix: str = ""
    ) -> None:
        if (self.iter + 1) % self.gather_metric_period == 0:
            write_metrics(loss_dict, data_time, self.iter, prefix)

    def state_dict(self) -> dict[str, Any]:
        """The base state plus the optimizer's."""
        state = super().state_dict()
        state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the base state and the optimizer's."""
        super().load_state_dict(state_dict)
        self.optimizer.load_state_dict(state_dict["optimizer"])


def write_metrics(
    loss_dict: Mapping[str, torch.Tensor],
    data_time: float,
    cur_iter: int,
    prefix: str = "",
) -> None:
    """Gather losses and data time from all ranks and put their means into the event storage.

    Args:
        loss_dict: scalar losses of this rank.
        data_time: seconds spent waiting for the data on this rank.
        cur_iter: the iteration they belong to.
        prefix: prepended to the metric names.
    """
    metrics = {k: v.detach().cpu().item() for k, v in loss_dict.items()}
    metrics["data_time"] = data_time
    all_metrics = comm.gather(metrics)
    if not comm.is_main_process():
        return
    storage = get_event_storage()
    # data_time differs a lot between ranks; the slowest one is what matters.
    storage.put_scalar("data_time", max(m.pop("data_time") for m in all_metrics), cur_iter=cur_iter)
    means = {k: float(np.mean([m[k] for m in all_metrics])) for k in all_metrics[0]}
    total = sum(means.values())
    if not math.isfinite(total):
        raise FloatingPointError(
            f"Loss became infinite or NaN at iteration {cur_iter} on another rank: {means}."
        )
    storage.put_scalar(f"{prefix}total_loss", total, cur_iter=cur_iter)
    if len(means) > 1:
        storage.put_scalars(cur_iter=cur_iter, **{f"{prefix}{k}": v for k, v in means.items()})


class AMPTrainer(SimpleTrainer):
    """`SimpleTrainer` with automatic mixed precision: fp16 with a GradScaler, or bf16."""

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable[Any],
        optimizer: torch.optim.Optimizer,
        gather_metric_period: int = 1,
        zero_grad_before_forward: bool = False,
        grad_scaler: torch.amp.GradScaler | None = None,
        precision: torch.dtype = torch.float16,
        log_grad_scaler: bool = False,
    ) -> None:
        """Create the trainer.

        Args:
            model, data_loader, optimizer, gather_metric_period, zero_grad_before_forward:
                as in `SimpleTrainer`.
            grad_scaler: the loss scaler; by default one for fp16, none for bf16 (which
                needs no scaling).
            precision: torch.float16 or torch.bfloat16.
            log_grad_scaler: put the scaler's scale into the event storage.
        """
        if precision not in (torch.float16, torch.bfloat16):
            raise ValueError(f"AMP precision must be float16 or bfloat16, got {precision}.")
        super().__init__(
            model, data_loader, optimizer, gather_metric_period, zero_grad_before_forward
        )
        self.device_type = _model_device_type(model)
        if precision == torch.float16 and self.device_type == "cpu":
            raise ValueError(
                "fp16 autocast is not supported for training on CPU; use "
                "SOLVER.AMP.PRECISION bfloat16 or train on a GPU."
            )
        if grad_scaler is None and precision == torch.float16:
            grad_scaler = torch.amp.GradScaler(self.device_type)
        self.grad_scaler = grad_scaler
        self.precision = precision
        self.log_grad_scaler = log_grad_scaler

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.precision)

    def _backward_and_step(
        self, losses: torch.Tensor, loss_dict: Mapping[str, torch.Tensor], data_time: float
    ) -> None:
        if self.grad_scaler is None:
            super()._backward_and_step(losses, loss_dict, data_time)
            return
        self.grad_scaler.scale(losses).backward()
        if self.log_grad_scaler:
            get_event_storage().put_scalar("[metric]grad_scaler", self.grad_scaler.get_scale())
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The `SimpleTrainer` state plus the scaler's."""
        state = super().state_dict()
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the `SimpleTrainer` state and the scaler's."""
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


def _model_device_type(model: nn.Module) -> str:
    """The device type ("cuda", "cpu", …) of the model's first parameter."""
    for p in model.parameters():
        return p.device.type
    return "cpu"
