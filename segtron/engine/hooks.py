"""The standard training hooks: timing, writing metrics, checkpoints, LR schedule, evaluation.

Each hook is a :class:`~segtron.engine.train_loop.HookBase` that a trainer calls around training
and around every iteration. Names, arguments and behaviour are Detectron2's, so a hook list
written for Detectron2's ``DefaultTrainer`` works here.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import math
import operator
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer
from fvcore.common.checkpoint import PeriodicCheckpointer as _PeriodicCheckpointer
from fvcore.common.param_scheduler import ParamScheduler
from fvcore.common.timer import Timer
from torch import nn
from torch.optim.lr_scheduler import LRScheduler as TorchLRScheduler

from segtron.engine.train_loop import HookBase
from segtron.evaluation.testing import flatten_results_dict
from segtron.solver import LRMultiplier
from segtron.utils import comm
from segtron.utils.events import EventStorage, EventWriter

with warnings.catch_warnings():
    # fvcore.nn scripts its losses on import, which recent torch answers with a FutureWarning.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    from fvcore.nn.precise_bn import get_bn_modules, update_bn_stats

__all__ = [
    "BestCheckpointer",
    "CallbackHook",
    "EvalHook",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "PreciseBN",
]

logger = logging.getLogger(__name__)

_Callback = Callable[[Any], None] | None


class CallbackHook(HookBase):
    """A hook made of functions, each called with the trainer.

    The functions are dropped after training, as they often hold references to the trainer.

    Args:
        before_train, after_train, before_step, after_step: the functions to call at these
            points; None skips that point.
    """

    def __init__(
        self,
        *,
        before_train: _Callback = None,
        after_train: _Callback = None,
        before_step: _Callback = None,
        after_step: _Callback = None,
    ) -> None:
        self._before_train = before_train
        self._after_train = after_train
        self._before_step = before_step
        self._after_step = after_step

    def before_train(self) -> None:
        """Call ``before_train(trainer)``."""
        if self._before_train:
            self._before_train(self.trainer)

    def after_train(self) -> None:
        """Call ``after_train(trainer)``, then release every function."""
        if self._after_train:
            self._after_train(self.trainer)
        self._before_train = self._after_train = None
        self._before_step = self._after_step = None

    def before_step(self) -> None:
        """Call ``before_step(trainer)``."""
        if self._before_step:
            self._before_step(self.trainer)

    def after_step(self) -> None:
        """Call ``after_step(trainer)``."""
        if self._after_step:
            self._after_step(self.trainer)


class IterationTimer(HookBase):
    """Puts the duration of each step into the storage as ``time`` and logs the training speed.

    A step lasts from this hook's ``before_step`` to its ``after_step``; register it first so
    that the other hooks' ``after_step`` are left out. The first ``warmup_iter`` steps of a run
    are not timed, as they include one-off costs (allocations, cudnn benchmarking). Detectron2
    leaves out one step fewer than its docstring says; here exactly ``warmup_iter`` are.

    Args:
        warmup_iter: the number of iterations not timed at the start of a run.
    """

    def __init__(self, warmup_iter: int = 3) -> None:
        self._warmup_iter = warmup_iter
        self._step_timer = Timer()
        self._start_time = time.perf_counter()
        self._total_timer = Timer()  # runs during the timed steps only
        self._timed_steps = 0

    def before_train(self) -> None:
        """Start the clocks."""
        self._start_time = time.perf_counter()
        self._total_timer.reset()
        self._total_timer.pause()
        self._timed_steps = 0

    def after_train(self) -> None:
        """Log the speed of the timed steps and the total time, with the time spent in hooks."""
        total_time = time.perf_counter() - self._start_time
        step_time = self._total_timer.seconds()
        hook_time = total_time - step_time
        num_iter = self._timed_steps
        if num_iter > 0 and step_time > 0:
            logger.info(
                f"Overall training speed: {num_iter} iterations in {_hms(step_time)} "
                f"({step_time / num_iter:.4f} s / it)"
            )
        logger.info(f"Total training time: {_hms(total_time)} ({_hms(hook_time)} on hooks)")

    def before_step(self) -> None:
        """Start timing the step."""
        self._step_timer.reset()
        self._total_timer.resume()

    def after_step(self) -> None:
        """Record the step's duration (after warm-up)."""
        iter_done = self.trainer.storage.iter - self.trainer.start_iter + 1
        if iter_done > self._warmup_iter:
            self.trainer.storage.put_scalars(time=self._step_timer.seconds())
            self._timed_steps += 1
        else:
            # Still warming up: restart the overall clocks at the end of this step.
            self._start_time = time.perf_counter()
            self._total_timer.reset()
        self._total_timer.pause()


def _hms(seconds: float) -> str:
    """``H:MM:SS`` for a number of seconds."""
    return str(datetime.timedelta(seconds=int(seconds)))


class PeriodicWriter(HookBase):
    """Calls the writers every ``period`` iterations, at the last one, and after training.

    The writers are closed after training.

    Args:
        writers: the :class:`~segtron.utils.events.EventWriter` objects.
        period: the number of iterations between writes.
    """

    def __init__(self, writers: Iterable[EventWriter], period: int = 20) -> None:
        self._writers = list(writers)
        for writer in self._writers:
            if not isinstance(writer, EventWriter):
                raise TypeError(f"Expected an EventWriter, got {type(writer).__name__}.")
        self._period = period

    def after_step(self) -> None:
        """Write at every period and at the last iteration."""
        next_iter = self.trainer.iter + 1
        if next_iter % self._period == 0 or next_iter == self.trainer.max_iter:
            for writer in self._writers:
                writer.write()

    def after_train(self) -> None:
        """Write what other hooks added after the last write (e.g. final results), then close."""
        try:
            for writer in self._writers:
                writer.write()
        finally:
            for writer in self._writers:
                writer.close()


class PeriodicCheckpointer(_PeriodicCheckpointer, HookBase):
    """fvcore's ``PeriodicCheckpointer`` as a hook: saves ``model_{iter:07d}`` every period.

    After the last iteration it also saves ``model_final``. A run that stops with an error
    saves nothing more, so the last periodic checkpoint stays the one to resume from.

    Args:
        checkpointer: the checkpointer that saves (e.g. a ``DetectionCheckpointer``).
        period: the number of iterations between checkpoints.
        max_iter: replaced by the trainer's when training starts.
        max_to_keep: how many periodic checkpoints to keep (None keeps all).
        file_prefix: the start of the file names.
    """

    def before_train(self) -> None:
        """Take ``max_iter`` from the trainer."""
        self.max_iter = self.trainer.max_iter

    def after_step(self) -> None:
        """Save if this iteration ends a period, and ``model_final`` after the last one."""
        self.step(self.trainer.iter)


class BestCheckpointer(HookBase):
    """Saves ``<file_prefix>.pth`` whenever an evaluation metric reaches a new best value.

    It reads the metric's latest value from the storage at the same iterations as an
    ``EvalHook`` with the same period runs, so register it after that ``EvalHook``.

    Args:
        eval_period: the evaluation period, in iterations.
        checkpointer: the checkpointer that saves.
        val_metric: the metric's name in the storage, e.g. ``"sem_seg/mIoU"``.
        mode: ``"max"`` if higher is better, ``"min"`` if lower is better.
        file_prefix: the checkpoint's file name, without ``.pth``.
    """

    def __init__(
        self,
        eval_period: int,
        checkpointer: Checkpointer,
        val_metric: str,
        mode: str = "max",
        file_prefix: str = "model_best",
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f'BestCheckpointer mode must be "max" or "min", got {mode!r}.')
        self._period = eval_period
        self._val_metric = val_metric
        self._compare = operator.gt if mode == "max" else operator.lt
        self._checkpointer = checkpointer
        self._file_prefix = file_prefix
        self.best_metric: float | None = None
        self.best_iter: int | None = None

    def _best_checking(self) -> None:
        latest = self.trainer.storage.latest().get(self._val_metric)
        if latest is None:
            logger.warning(
                f"Given val metric {self._val_metric} does not seem to be computed/stored. "
                "Will not be checkpointing based on it."
            )
            return
        value, metric_iter = latest
        if math.isnan(value) or math.isinf(value):
            logger.warning(f"Not saving: {self._val_metric} is {value} at {metric_iter}.")
            return
        if self.best_metric is not None and not self._compare(value, self.best_metric):
            logger.info(
                f"Not saving as latest eval score for {self._val_metric} is {value:0.5f}, "
                f"not better than best score {self.best_metric:0.5f} @ iteration "
                f"{self.best_iter}."
            )
            return
        self._checkpointer.save(self._file_prefix, iteration=metric_iter)
        if self.best_metric is None:
            logger.info(f"Saved first model at {value:0.5f} @ {metric_iter} steps")
        else:
            logger.info(
                f"Saved best model as latest eval score for {self._val_metric} is {value:0.5f}, "
                f"better than last best score {self.best_metric:0.5f} @ iteration "
                f"{self.best_iter}."
            )
        self.best_metric, self.best_iter = value, metric_iter

    def after_step(self) -> None:
        """Check at the end of each evaluation period except the last one."""
        next_iter = self.trainer.iter + 1
        if (
            self._period > 0
            and next_iter % self._period == 0
            and next_iter != self.trainer.max_iter
        ):
            self._best_checking()

    def after_train(self) -> None:
        """Check after the final evaluation, unless training stopped early."""
        if self.trainer.iter >= self.trainer.max_iter:
            self._best_checking()


class LRScheduler(HookBase):
    """Steps the LR scheduler after every iteration and puts the learning rate used as ``lr``.

    The reported ``lr`` is that of the parameter group with the most parameters (when every
    group has one parameter: the first group with the most common learning rate). The
    hook's state is that of a torch scheduler, so checkpoints of the trainer restore the
    schedule; a schedule given as an fvcore ``ParamScheduler`` needs no state, as it is
    rebuilt from the trainer's iteration.

    Args:
        optimizer: the optimizer; defaults to the trainer's.
        scheduler: a ``torch.optim.lr_scheduler.LRScheduler``, or an fvcore ``ParamScheduler``
            of the learning-rate multiplier (applied by :class:`~segtron.solver.LRMultiplier`
            when training starts); defaults to the trainer's.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: TorchLRScheduler | ParamScheduler | None = None,
    ) -> None:
        self._optimizer = optimizer
        self._scheduler = scheduler
        self._best_param_group_id = 0

    @property
    def scheduler(self) -> TorchLRScheduler | ParamScheduler:
        """The scheduler given, else the trainer's."""
        return self._scheduler or self.trainer.scheduler

    def before_train(self) -> None:
        """Find the optimizer and the parameter group to report; wrap a ``ParamScheduler``."""
        self._optimizer = self._optimizer or self.trainer.optimizer
        if isinstance(self.scheduler, ParamScheduler):
            self._scheduler = LRMultiplier(
                self._optimizer,
                self.scheduler,
                self.trainer.max_iter,
                last_iter=self.trainer.iter - 1,
            )
        self._best_param_group_id = self.get_best_param_group_id(self._optimizer)

    @staticmethod
    def get_best_param_group_id(optimizer: torch.optim.Optimizer) -> int:
        """The index of the parameter group whose learning rate is reported.

        Args:
            optimizer: the optimizer.
        """
        groups = optimizer.param_groups
        largest = max(len(g["params"]) for g in groups)
        if largest == 1:
            # Per-parameter groups: report the most common learning rate.
            lr = Counter(g["lr"] for g in groups).most_common(1)[0][0]
            return next(i for i, g in enumerate(groups) if g["lr"] == lr)
        return next(i for i, g in enumerate(groups) if len(g["params"]) == largest)

    def after_step(self) -> None:
        """Put the learning rate of this iteration, then step the scheduler."""
        lr = self._optimizer.param_groups[self._best_param_group_id]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        """The torch scheduler's state (empty for a ``ParamScheduler``)."""
        if isinstance(self.scheduler, TorchLRScheduler):
            return self.scheduler.state_dict()
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the torch scheduler's state."""
        if isinstance(self.scheduler, TorchLRScheduler):
            logger.info("Loading scheduler from state_dict ...")
            self.scheduler.load_state_dict(dict(state_dict))


class EvalHook(HookBase):
    """Runs an evaluation function periodically and after training; stores its results.

    The function returns results as nested dicts of numbers, e.g. ``{"sem_seg": {"mIoU": 71.2}}``;
    they are put into the storage flattened (``sem_seg/mIoU``) with ``smoothing_hint=False``,
    for the writers and :class:`BestCheckpointer`. It must be run on every process; processes
    wait for each other after each evaluation.

    Args:
        eval_period: run every this many iterations; 0 runs only after training.
        eval_function: takes no argument and returns the results (or None / an empty dict).
        eval_after_train: also run after the last iteration (the evaluation due at the last
            iteration is left to this, so it is never run twice).
    """

    def __init__(
        self,
        eval_period: int,
        eval_function: Callable[[], Mapping[str, Any] | None],
        eval_after_train: bool = True,
    ) -> None:
        self._period = eval_period
        self._func: Callable[[], Mapping[str, Any] | None] | None = eval_function
        self._eval_after_train = eval_after_train

    def _do_eval(self) -> None:
        results = self._func()
        if results:
            if not isinstance(results, Mapping):
                raise TypeError(
                    f"The eval function must return a dict, got {type(results).__name__}."
                )
            flat = flatten_results_dict(results)
            for key, value in flat.items():
                try:
                    flat[key] = float(value)
                except (TypeError, ValueError) as exc:
                    raise ValueError(
                        "The eval function must return a nested dict of numbers, got "
                        f"{key!r}: {value!r} ({type(value).__name__})."
                    ) from exc
            self.trainer.storage.put_scalars(**flat, smoothing_hint=False)
        # Evaluation takes a different time on each process; start the next step together.
        comm.synchronize()

    def after_step(self) -> None:
        """Evaluate at the end of each period except the last iteration's."""
        next_iter = self.trainer.iter + 1
        if (
            self._period > 0
            and next_iter % self._period == 0
            and next_iter != self.trainer.max_iter
        ):
            self._do_eval()

    def after_train(self) -> None:
        """Evaluate the final model (unless training stopped early), then drop the function."""
        if self._eval_after_train and self.trainer.iter >= self.trainer.max_iter:
            self._do_eval()
        # The function usually holds the trainer (a closure); release it.
        self._func = None


class PreciseBN(HookBase):
    """Recomputes the BatchNorm statistics over many batches, periodically and at the end.

    Uses fvcore's ``update_bn_stats``, which replaces the running averages by the true mean
    and variance over ``num_iter`` batches of the current weights. Models without BatchNorm
    layers in training mode make it a no-op (logged once).

    Args:
        period: run every this many iterations (and after the last one); 0 only after it.
        model: the model, in training mode; its BN layers in training mode are updated.
        data_loader: an iterable of training batches, kept open between runs.
        num_iter: the number of batches per update.
    """

    def __init__(
        self, period: int, model: nn.Module, data_loader: Iterable[Any], num_iter: int
    ) -> None:
        self._disabled = len(get_bn_modules(model)) == 0
        if self._disabled:
            logger.info(
                "PreciseBN is disabled because model does not contain BN layers in training mode."
            )
        self._model = model
        self._data_loader = data_loader
        self._num_iter = num_iter
        self._period = period
        self._data_iter: Iterator[Any] | None = None

    def after_step(self) -> None:
        """Update the statistics at the end of each period and after the last iteration."""
        next_iter = self.trainer.iter + 1
        if next_iter == self.trainer.max_iter or (
            self._period > 0 and next_iter % self._period == 0
        ):
            self.update_stats()

    def update_stats(self) -> None:
        """Run ``num_iter`` batches through the model and set the precise BN statistics."""
        if self._disabled:
            return
        if self._data_iter is None:
            self._data_iter = iter(self._data_loader)

        def batches() -> Iterator[Any]:
            for i in itertools.count(1):
                if i % 100 == 0:
                    logger.info(f"Running precise-BN ... {i}/{self._num_iter} iterations.")
                try:
                    yield next(self._data_iter)
                except StopIteration:  # update_bn_stats then reports the short loader
                    return

        logger.info(
            f"Running precise-BN for {self._num_iter} iterations... Note that this could "
            "produce different statistics every time."
        )
        # The model's training-mode outputs (losses, ...) go to a throw-away storage.
        with EventStorage():
            update_bn_stats(self._model, batches(), self._num_iter)
