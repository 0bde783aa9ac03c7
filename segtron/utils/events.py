"""Training metrics: the ``EventStorage`` that collects them and the writers that report them.

Code running inside a trainer puts scalars (losses, timings, evaluation results), images and
histograms into the storage returned by :func:`get_event_storage`; writers periodically read it
and send what is new to a JSON-lines file (:class:`JSONWriter`), TensorBoard
(:class:`TensorboardXWriter`) or the log (:class:`CommonMetricPrinter`). The names, signatures
and output formats are Detectron2's, so its tools (and scripts parsing ``metrics.json``) work.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import numpy as np
import torch
from fvcore.common.history_buffer import HistoryBuffer

from segtron.utils.file_io import PathManager

__all__ = [
    "CommonMetricPrinter",
    "EventStorage",
    "EventWriter",
    "JSONWriter",
    "TensorboardXWriter",
    "get_event_storage",
]

# Storages entered with ``with EventStorage(...)``, innermost last.
_CURRENT_STORAGE_STACK: list[EventStorage] = []


def get_event_storage() -> EventStorage:
    """The innermost :class:`EventStorage` currently open.

    Raises:
        RuntimeError: when called outside any ``with EventStorage(...)`` block (Detectron2
            raises an AssertionError there).
    """
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError(
            "get_event_storage() has to be called inside a 'with EventStorage(...)' context; "
            "trainers open one in train(). Outside a trainer, wrap the code in "
            "'with EventStorage(start_iter):'."
        )
    return _CURRENT_STORAGE_STACK[-1]


class EventStorage:
    """Collects the metrics of a training run, keyed by name and iteration.

    Use it as a context manager; while it is open, :func:`get_event_storage` returns it.

    Args:
        start_iter: the iteration new values are attributed to until :attr:`iter` changes.
    """

    def __init__(self, start_iter: int = 0) -> None:
        self._history: defaultdict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: dict[str, bool] = {}
        self._latest_scalars: dict[str, tuple[float, int]] = {}
        self._iter = int(start_iter)
        self._current_prefix = ""
        # Read (and cleared) by TensorboardXWriter.
        self._vis_data: list[tuple[str, Any, int]] = []
        self._histograms: list[dict[str, Any]] = []

    def __enter__(self) -> EventStorage:
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not _CURRENT_STORAGE_STACK or _CURRENT_STORAGE_STACK[-1] is not self:
            raise RuntimeError("EventStorage contexts must be exited in the reverse order.")
        _CURRENT_STORAGE_STACK.pop()

    def put_scalar(
        self,
        name: str,
        value: float | torch.Tensor | np.ndarray,
        smoothing_hint: bool = True,
        cur_iter: int | None = None,
    ) -> None:
        """Record a scalar value.

        Args:
            name: the metric's name; the current :meth:`name_scope` is prepended.
            value: anything ``float()`` accepts (a number, a 1-element tensor or array).
            smoothing_hint: whether writers should smooth this (noisy) metric over a window;
                it must stay the same for every value of one metric.
            cur_iter: the iteration the value belongs to; defaults to :attr:`iter`.

        Raises:
            ValueError: if the metric was recorded before with another ``smoothing_hint``.
        """
        name = self._current_prefix + name
        cur_iter = self._iter if cur_iter is None else int(cur_iter)
        value = float(value)
        existing_hint = self._smoothing_hints.setdefault(name, smoothing_hint)
        if existing_hint != smoothing_hint:
            raise ValueError(
                f"Scalar {name!r} was put with smoothing_hint={existing_hint} before and now "
                f"with smoothing_hint={smoothing_hint}; one metric needs one hint."
            )
        self._history[name].update(value, cur_iter)
        self._latest_scalars[name] = (value, cur_iter)

    def put_scalars(
        self, *, smoothing_hint: bool = True, cur_iter: int | None = None, **kwargs: Any
    ) -> None:
        """Record several scalars, e.g. ``put_scalars(loss_a=0.5, loss_b=0.1)``.

        Args:
            smoothing_hint: as in :meth:`put_scalar`, for all of them.
            cur_iter: as in :meth:`put_scalar`.
            **kwargs: metric name -> value.
        """
        for name, value in kwargs.items():
            self.put_scalar(name, value, smoothing_hint=smoothing_hint, cur_iter=cur_iter)

    def put_image(self, img_name: str, img_tensor: torch.Tensor | np.ndarray) -> None:
        """Record an image for TensorBoard.

        Args:
            img_name: the image's tag.
            img_tensor: a CHW RGB image, float in [0, 1] or uint8 in [0, 255].
        """
        self._vis_data.append((img_name, img_tensor, self._iter))

    def put_histogram(self, hist_name: str, hist_tensor: torch.Tensor, bins: int = 1000) -> None:
        """Record the histogram of a tensor's values for TensorBoard.

        Args:
            hist_name: the histogram's tag.
            hist_tensor: a tensor of any shape.
            bins: the number of bins between its minimum and maximum.
        """
        values = hist_tensor.detach().float().flatten().cpu()
        lo, hi = values.min().item(), values.max().item()
        counts = torch.histc(values, bins=bins, min=lo, max=hi)
        edges = torch.linspace(lo, hi, steps=bins + 1, dtype=torch.float32)
        self._histograms.append(
            {
                "tag": hist_name,
                "min": lo,
                "max": hi,
                "num": values.numel(),
                "sum": float(values.sum()),
                "sum_squares": float((values**2).sum()),
                "bucket_limits": edges[1:].tolist(),
                "bucket_counts": counts.tolist(),
                "global_step": self._iter,
            }
        )

    def history(self, name: str) -> HistoryBuffer:
        """The recorded values of a metric.

        Raises:
            KeyError: if nothing was recorded under ``name``.
        """
        buffer = self._history.get(name)
        if buffer is None:
            raise KeyError(f"No history metric available for {name!r}.")
        return buffer

    def histories(self) -> dict[str, HistoryBuffer]:
        """Every metric's :class:`~fvcore.common.history_buffer.HistoryBuffer`, by name."""
        return self._history

    def latest(self) -> dict[str, tuple[float, int]]:
        """Each metric's most recent value and the iteration it belongs to."""
        return self._latest_scalars

    def latest_with_smoothing_hint(self, window_size: int = 20) -> dict[str, tuple[float, int]]:
        """Like :meth:`latest`, with metrics that asked for smoothing replaced by a median.

        The median covers the values of the last ``window_size`` iterations (see
        :meth:`count_samples`), which the default writers report.

        Args:
            window_size: the number of iterations to smooth over.
        """
        result = {}
        for name, (value, itr) in self._latest_scalars.items():
            if self._smoothing_hints[name]:
                value = float(self._history[name].median(self.count_samples(name, window_size)))
            result[name] = (value, itr)
        return result

    def count_samples(self, name: str, window_size: int = 20) -> int:
        """How many values of ``name`` belong to its last ``window_size`` iterations.

        Args:
            name: the metric.
            window_size: the number of iterations, counted back from its latest value.
        """
        buffer = self._history.get(name)
        data = buffer.values() if buffer is not None else []
        if not data:
            return 0
        oldest = data[-1][1] - window_size
        count = 0
        for _, itr in reversed(data):
            if itr <= oldest:
                break
            count += 1
        return count

    def smoothing_hints(self) -> dict[str, bool]:
        """Each metric's ``smoothing_hint``, by name."""
        return self._smoothing_hints

    def step(self) -> None:
        """Advance :attr:`iter` by one (trainers set :attr:`iter` directly instead)."""
        self._iter += 1

    @property
    def iter(self) -> int:
        """The iteration new values are attributed to; trainers keep it equal to theirs."""
        return self._iter

    @iter.setter
    def iter(self, val: int) -> None:
        self._iter = int(val)

    @property
    def iteration(self) -> int:
        """Alias of :attr:`iter`, kept for compatibility."""
        return self._iter

    @contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        """Prefix the names of scalars put inside the block with ``name/``.

        Args:
            name: the prefix, without or with a trailing ``/``.
        """
        old_prefix = self._current_prefix
        self._current_prefix = name.rstrip("/") + "/"
        try:
            yield
        finally:
            self._current_prefix = old_prefix

    def clear_images(self) -> None:
        """Forget the images recorded so far (after they were written)."""
        self._vis_data = []

    def clear_histograms(self) -> None:
        """Forget the histograms recorded so far (after they were written)."""
        self._histograms = []


class EventWriter:
    """Base class of the writers that report what is in the current :class:`EventStorage`."""

    def write(self) -> None:
        """Report the new data of the current storage."""
        raise NotImplementedError

    def close(self) -> None:
        """Release files and other resources."""


class JSONWriter(EventWriter):
    """Appends the scalars to a file, one JSON object per iteration and line.

    Each :meth:`write` adds a line for each iteration that received values since the previous
    write, with those values (smoothed as :meth:`EventStorage.latest_with_smoothing_hint` does)
    and the key ``iteration``, e.g.
    ``{"data_time": 0.01, "iteration": 19, "lr": 0.02, "total_loss": 1.92}``.

    Args:
        json_file: the file to append to (created with its folder if missing).
        window_size: the smoothing window, in iterations.
    """

    def __init__(self, json_file: str, window_size: int = 20) -> None:
        folder = os.path.dirname(json_file)
        if folder:
            PathManager.mkdirs(folder)
        self._file_handle = PathManager.open(json_file, "a")
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        """Append one line per iteration with values not written yet."""
        storage = get_event_storage()
        by_iter: defaultdict[int, dict[str, Any]] = defaultdict(dict)
        for name, (value, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr > self._last_write:
                by_iter[itr][name] = value
        for itr in sorted(by_iter):
            line = {**by_iter[itr], "iteration": itr}
            self._file_handle.write(json.dumps(line, sort_keys=True) + "\n")
        if by_iter:
            self._last_write = max(by_iter)
        self._file_handle.flush()
        try:
            os.fsync(self._file_handle.fileno())
        except (AttributeError, OSError):  # not every iopath handle is a real file
            pass

    def close(self) -> None:
        """Close the file."""
        self._file_handle.close()


class TensorboardXWriter(EventWriter):
    """Writes scalars, images and histograms to TensorBoard event files.

    The ``SummaryWriter`` (and its event file) is created on the first :meth:`write`, so a
    writer that never writes leaves no empty file behind. Images and histograms are removed
    from the storage once written.

    Args:
        log_dir: the folder for the event files.
        window_size: the smoothing window for scalars, in iterations.
        **kwargs: passed to ``torch.utils.tensorboard.SummaryWriter``.
    """

    def __init__(self, log_dir: str, window_size: int = 20, **kwargs: Any) -> None:
        self._window_size = window_size
        self._writer_args = {"log_dir": log_dir, **kwargs}
        self._last_write = -1

    @cached_property
    def _writer(self) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(**self._writer_args)

    def write(self) -> None:
        """Add the new scalars, then every recorded image and histogram."""
        storage = get_event_storage()
        last_write = self._last_write
        for name, (value, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr > self._last_write:
                self._writer.add_scalar(name, value, itr)
                last_write = max(last_write, itr)
        self._last_write = last_write
        # This writer owns the images and histograms: it clears them after writing.
        if storage._vis_data:
            for img_name, img, itr in storage._vis_data:
                self._writer.add_image(img_name, img, itr)
            storage.clear_images()
        if storage._histograms:
            for params in storage._histograms:
                self._writer.add_histogram_raw(**params)
            storage.clear_histograms()

    def close(self) -> None:
        """Flush and close the event file, if one was opened."""
        if "_writer" in self.__dict__:
            self._writer.close()


class CommonMetricPrinter(EventWriter):
    """Logs one line of training progress: ETA, iteration, losses, timings, lr and memory.

    For example ``eta: 0:01:23  iter: 19  total_loss: 1.23  loss_a: 0.7  time: 0.1234
    last_time: 0.1201  data_time: 0.0123  last_data_time: 0.0101  lr: 0.001  max_mem: 123M``
    (``max_mem`` only with CUDA). Losses (scalars whose name contains ``loss``) and
    ``[metric]`` scalars are medians over the window; ``time`` is the mean step time since
    warm-up and ``data_time`` the mean over the window. The ETA uses the median step time
    when an ``IterationTimer`` records it, otherwise the wall-clock time between writes.
    Nothing is printed for an iteration already printed, or at ``max_iter`` (after training).

    Args:
        max_iter: the number of iterations of the run, for the ETA; None prints no ETA.
        window_size: the smoothing window, in iterations.
    """

    def __init__(self, max_iter: int | None = None, window_size: int = 20) -> None:
        self.logger = logging.getLogger(__name__)
        self._max_iter = max_iter
        self._window_size = window_size
        self._last_write: tuple[int, float] | None = None  # (iteration, time) for the ETA
        self._last_printed: int | None = None

    def _get_eta(self, storage: EventStorage) -> str | None:
        if self._max_iter is None:
            return None
        iteration = storage.iter
        remaining = self._max_iter - iteration - 1
        try:
            eta_seconds = storage.history("time").median(1000) * remaining
        except KeyError:
            # No step times recorded: estimate from the wall-clock time between writes.
            eta_seconds = None
            now = time.perf_counter()
            if self._last_write is not None and iteration > self._last_write[0]:
                per_iter = (now - self._last_write[1]) / (iteration - self._last_write[0])
                eta_seconds = per_iter * remaining
            self._last_write = (iteration, now)
            if eta_seconds is None:
                return None
        else:
            storage.put_scalar("eta_seconds", eta_seconds, smoothing_hint=False)
        return str(datetime.timedelta(seconds=int(eta_seconds)))

    def write(self) -> None:
        """Log the progress line for the storage's current iteration."""
        storage = get_event_storage()
        iteration = storage.iter
        if iteration == self._max_iter or iteration == self._last_printed:
            return
        self._last_printed = iteration

        def median(name: str) -> float:
            return float(
                storage.history(name).median(storage.count_samples(name, self._window_size))
            )

        parts = []
        eta = self._get_eta(storage)
        if eta:
            parts.append(f"eta: {eta}")
        parts.append(f"iter: {iteration}")
        histories = storage.histories()
        parts += [f"{k}: {median(k):.4g}" for k in histories if "loss" in k]
        parts += [f"{k}: {median(k):.4g}" for k in histories if "[metric]" in k and "loss" not in k]
        if "time" in histories:
            parts.append(f"time: {storage.history('time').global_avg():.4f}")
            parts.append(f"last_time: {storage.history('time').latest():.4f}")
        if "data_time" in histories:
            window = storage.count_samples("data_time", self._window_size)
            parts.append(f"data_time: {storage.history('data_time').avg(window):.4f}")
            parts.append(f"last_data_time: {storage.history('data_time').latest():.4f}")
        lr = f"{storage.history('lr').latest():.5g}" if "lr" in histories else "N/A"
        parts.append(f"lr: {lr}")
        if torch.cuda.is_available():
            parts.append(f"max_mem: {torch.cuda.max_memory_allocated() / 1024**2:.0f}M")
        # Detectron2's line starts with a space; scripts that parse logs rely on the layout.
        self.logger.info(" " + "  ".join(parts))
