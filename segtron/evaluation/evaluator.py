"""The evaluator interface and the loop that runs a model over a dataset for evaluation.

``DatasetEvaluator`` is the protocol every evaluator follows (``reset`` / ``process`` /
``evaluate``); ``DatasetEvaluators`` runs several at once; ``inference_on_dataset`` feeds a
data loader through a model in inference mode, hands each batch to the evaluator, logs progress
with an ETA and returns the evaluator's results.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from segtron.utils.comm import all_gather, get_world_size, is_main_process

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "inference_context", "inference_on_dataset"]

logger = logging.getLogger(__name__)

# Seconds between two progress lines of inference_on_dataset.
_LOG_PERIOD_S = 5.0
# Skipped files named in the summary line of inference_on_dataset.
_MAX_SKIPPED_NAMED = 5


class DatasetEvaluator:
    """Base class of evaluators: accumulates model outputs over a dataset, then scores them.

    Subclasses override ``reset``, ``process`` and ``evaluate``. ``inference_on_dataset`` calls
    ``reset`` once, ``process`` for every batch and ``evaluate`` at the end.
    """

    def reset(self) -> None:
        """Prepare for a new round of evaluation (called before the first ``process``)."""

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Accumulate one batch.

        Args:
            inputs: the batch given to the model (a list of dataset dicts).
            outputs: what the model returned for it, one dict per input.
        """

    def evaluate(self) -> dict[str, Any] | None:
        """Score everything processed since ``reset``.

        Returns:
            A dict of task name -> {metric name: value}, or None (for example on the non-main
            processes of a distributed evaluation).
        """
        return None


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators driven as one; their result dicts are merged.

    Args:
        evaluators: the evaluators to run, in order.
    """

    def __init__(self, evaluators: Iterable[DatasetEvaluator]) -> None:
        super().__init__()
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> dict[str, Any]:
        """Run every evaluator and merge their results.

        Raises:
            KeyError: when two evaluators report the same task name.
        """
        results: dict[str, Any] = OrderedDict()
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if not is_main_process() or result is None:
                continue
            for key, value in result.items():
                if key in results:
                    raise KeyError(
                        f"Several evaluators report the task '{key}'; "
                        f"{type(evaluator).__name__} would overwrite an earlier result."
                    )
                results[key] = value
        return results


@contextmanager
def inference_context(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the duration of the block, then restore its mode.

    Args:
        model: the module to switch to eval mode.
    """
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _as_evaluator(
    evaluator: DatasetEvaluator | list[DatasetEvaluator] | None,
) -> DatasetEvaluator:
    if evaluator is None:
        return DatasetEvaluators([])
    if isinstance(evaluator, list):
        return DatasetEvaluators(evaluator)
    return evaluator


def _sync_cuda() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _format_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


def inference_on_dataset(
    model: nn.Module | Callable[[list[dict]], list[dict]],
    data_loader: Iterable[list[dict]],
    evaluator: DatasetEvaluator | list[DatasetEvaluator] | None,
    callbacks: dict[str, Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """Run ``model`` on every batch of ``data_loader`` and evaluate the outputs.

    The model runs under ``torch.no_grad`` and, when it is an ``nn.Module``, in eval mode (its
    mode is restored afterwards). Progress is logged every few seconds with an ETA; the timing
    statistics leave out the first ``min(5, len(data_loader) - 1)`` warm-up iterations. In a
    distributed run every process sees its shard of the data and ``evaluator.evaluate()`` is
    responsible for gathering across processes.

    Images that the loader left out as unreadable (the ``skipped`` list of a
    `segtron.data.common.InferenceBatch`) reach neither the model nor the evaluator; a batch
    with nothing left is passed over, and one warning at the end counts and names them.

    Args:
        model: a callable taking a batch (list of dicts) and returning a list of output dicts.
        data_loader: an iterable of batches with a ``len``.
        evaluator: an evaluator, a list of evaluators, or None to only run the model.
        callbacks: optional functions called without arguments, keyed by event:
            ``"on_start"``, ``"before_inference"``, ``"after_inference"``, ``"on_end"``.

    Returns:
        The evaluator's results; ``{}`` when it returns None.
    """
    num_devices = get_world_size()
    total = len(data_loader)  # type: ignore[arg-type]
    logger.info("Start inference on %d batches", total)
    evaluator = _as_evaluator(evaluator)
    evaluator.reset()
    callbacks = callbacks or {}

    def call(event: str) -> None:
        if event in callbacks:
            callbacks[event]()

    skipped: list[str] = []
    num_warmup = min(5, total - 1)
    start_time = time.perf_counter()
    total_data_time = total_compute_time = total_eval_time = 0.0
    last_log = start_time
    with ExitStack() as stack:
        if isinstance(model, nn.Module):
            stack.enter_context(inference_context(model))
        stack.enter_context(torch.no_grad())
        call("on_start")
        data_start = time.perf_counter()
        for idx, inputs in enumerate(data_loader):
            total_data_time += time.perf_counter() - data_start
            if idx == num_warmup:
                start_time = time.perf_counter()
                total_data_time = total_compute_time = total_eval_time = 0.0
            skipped.extend(s.file_name for s in getattr(inputs, "skipped", ()))
            if isinstance(inputs, list) and not inputs:
                data_start = time.perf_counter()
                continue
            compute_start = time.perf_counter()
            call("before_inference")
            outputs = model(inputs)
            call("after_inference")
            _sync_cuda()
            total_compute_time += time.perf_counter() - compute_start
            eval_start = time.perf_counter()
            evaluator.process(inputs, outputs)
            total_eval_time += time.perf_counter() - eval_start

            now = time.perf_counter()
            if idx >= num_warmup and now - last_log >= _LOG_PERIOD_S:
                iters_after_warmup = idx + 1 - num_warmup
                per_iter = (now - start_time) / iters_after_warmup
                logger.info(
                    "Inference done %d/%d. Dataloading: %.4f s/iter. Inference: %.4f s/iter. "
                    "Eval: %.4f s/iter. Total: %.4f s/iter. ETA=%s",
                    idx + 1,
                    total,
                    total_data_time / iters_after_warmup,
                    total_compute_time / iters_after_warmup,
                    total_eval_time / iters_after_warmup,
                    per_iter,
                    _format_seconds(per_iter * (total - idx - 1)),
                )
                last_log = now
            data_start = time.perf_counter()
        call("on_end")

    total_time = time.perf_counter() - start_time
    timed_iters = max(total - num_warmup, 1)
    logger.info(
        "Total inference time: %s (%.6f s / iter per device, on %d devices)",
        _format_seconds(total_time),
        total_time / timed_iters,
        num_devices,
    )
    logger.info(
        "Total inference pure compute time: %s (%.6f s / iter per device, on %d devices)",
        _format_seconds(total_compute_time),
        total_compute_time / timed_iters,
        num_devices,
    )
    _log_skipped(skipped)
    results = evaluator.evaluate()
    return {} if results is None else results


def _log_skipped(skipped: list[str]) -> None:
    """Log, on the main process, how many unreadable images all processes left out."""
    skipped = [name for names in all_gather(skipped) for name in names]
    if not skipped or not is_main_process():
        return
    named = ", ".join(skipped[:_MAX_SKIPPED_NAMED])
    more = (
        f" and {len(skipped) - _MAX_SKIPPED_NAMED} more"
        if len(skipped) > _MAX_SKIPPED_NAMED
        else ""
    )
    logger.warning(
        "Skipped %d unreadable image(s) during inference; the results leave them out: %s%s",
        len(skipped),
        named,
        more,
    )
