"""Tests of segtron.utils.events: EventStorage and the JSON, TensorBoard and log writers."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from segtron.utils import events
from segtron.utils.events import (
    CommonMetricPrinter,
    EventStorage,
    JSONWriter,
    TensorboardXWriter,
    get_event_storage,
)


@pytest.fixture
def printer_logs(caplog) -> pytest.LogCaptureFixture:
    """Capture the printer's INFO lines."""
    caplog.set_level(logging.INFO, logger="segtron.utils.events")
    return caplog


def test_get_event_storage_needs_an_open_storage_and_returns_the_innermost() -> None:
    with pytest.raises(RuntimeError, match="inside a 'with EventStorage"):
        get_event_storage()
    with EventStorage() as outer:
        assert get_event_storage() is outer
        with EventStorage(5) as inner:
            assert get_event_storage() is inner
            assert inner.iter == 5
        assert get_event_storage() is outer
    with pytest.raises(RuntimeError):
        get_event_storage()


def test_smoothed_scalars_are_the_median_of_the_window_and_others_the_latest() -> None:
    with EventStorage() as storage:
        for i in range(30):
            storage.iter = i
            storage.put_scalar("loss", float(i))
            storage.put_scalar("lr", 0.1 * i, smoothing_hint=False)
        assert storage.latest() == {"loss": (29.0, 29), "lr": (pytest.approx(2.9), 29)}
        smoothed = storage.latest_with_smoothing_hint(window_size=20)
        assert smoothed["loss"] == (np.median(np.arange(10, 30)), 29)  # 19.5
        assert smoothed["lr"] == (pytest.approx(2.9), 29)
        assert storage.latest_with_smoothing_hint(window_size=4)["loss"] == (27.5, 29)
        assert storage.smoothing_hints() == {"loss": True, "lr": False}
        assert len(storage.history("loss").values()) == 30
        assert storage.history("loss").global_avg() == pytest.approx(14.5)
        assert set(storage.histories()) == {"loss", "lr"}


def test_smoothing_window_counts_iterations_not_values() -> None:
    with EventStorage() as storage:
        for i in range(0, 40, 2):  # one value every other iteration
            storage.put_scalar("loss", float(i), cur_iter=i)
        assert storage.count_samples("loss", window_size=10) == 5  # iterations 30..38
        assert storage.latest_with_smoothing_hint(10)["loss"] == (34.0, 38)
        assert storage.count_samples("missing") == 0
        assert "missing" not in storage.histories()


def test_put_scalar_arguments() -> None:
    with EventStorage(start_iter=7) as storage:
        storage.put_scalar("a", torch.tensor(1.5))
        storage.put_scalar("b", np.float32(2.0), cur_iter=3)
        storage.put_scalars(c=1, d=2, smoothing_hint=False, cur_iter=4)
        with storage.name_scope("val/"):
            storage.put_scalar("e", 3)
        storage.put_scalar("f", 4)
        assert storage.latest() == {
            "a": (1.5, 7),
            "b": (2.0, 3),
            "c": (1.0, 4),
            "d": (2.0, 4),
            "val/e": (3.0, 7),
            "f": (4.0, 7),
        }
        assert storage.smoothing_hints()["c"] is False
        with pytest.raises(ValueError, match="'a'.*smoothing_hint"):
            storage.put_scalar("a", 1.0, smoothing_hint=False)
        with pytest.raises(KeyError, match="nothing_here"):
            storage.history("nothing_here")


def test_iteration_property_setter_and_step() -> None:
    storage = EventStorage(start_iter=3)
    assert storage.iter == storage.iteration == 3
    storage.iter = 10.0
    assert storage.iter == 10 and isinstance(storage.iter, int)
    storage.step()
    assert storage.iteration == 11


def test_images_and_histograms_are_kept_until_cleared() -> None:
    with EventStorage(2) as storage:
        storage.put_image("img", torch.zeros(3, 4, 4))
        storage.put_histogram("weights", torch.tensor([[0.0, 1.0], [1.0, 3.0]]), bins=3)
        ((name, _, itr),) = storage._vis_data
        assert (name, itr) == ("img", 2)
        (hist,) = storage._histograms
        assert hist["num"] == 4 and hist["min"] == 0.0 and hist["max"] == 3.0
        assert hist["sum"] == 5.0 and hist["sum_squares"] == 11.0
        assert hist["bucket_counts"] == [1.0, 2.0, 1.0]
        assert hist["bucket_limits"] == [1.0, 2.0, 3.0]
        storage.clear_images()
        storage.clear_histograms()
        assert storage._vis_data == [] and storage._histograms == []


def _read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_json_writer_writes_one_line_per_iteration_with_only_new_values(tmp_path) -> None:
    path = tmp_path / "out" / "metrics.json"
    writer = JSONWriter(str(path), window_size=2)
    with EventStorage() as storage:
        for i in range(5):
            storage.iter = i
            storage.put_scalars(total_loss=float(i), loss_mask=1.0)
            storage.put_scalar("lr", 0.01 * (i + 1), smoothing_hint=False)
        storage.put_scalar("data_time", 0.5, cur_iter=3)  # belongs to an earlier iteration
        writer.write()
        writer.write()  # nothing new: no line
        storage.iter = 5
        storage.put_scalars(**{"bbox/AP": 40.0, "sem_seg/mIoU": 60.0}, smoothing_hint=False)
        writer.write()
    writer.close()
    lines = _read_lines(path)
    assert [line["iteration"] for line in lines] == [3, 4, 5]
    assert lines[0] == {"data_time": 0.5, "iteration": 3}
    # total_loss is the median of the window (iterations 3 and 4); lr is not smoothed.
    assert lines[1] == {"iteration": 4, "loss_mask": 1.0, "lr": 0.05, "total_loss": 3.5}
    assert lines[2] == {"bbox/AP": 40.0, "iteration": 5, "sem_seg/mIoU": 60.0}

    # A new writer on the same file appends.
    writer = JSONWriter(str(path))
    with EventStorage(9) as storage:
        storage.put_scalar("total_loss", 1.0)
        writer.write()
    writer.close()
    assert [line["iteration"] for line in _read_lines(path)] == [3, 4, 5, 9]


def test_tensorboard_writer_creates_its_file_on_first_write(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = tmp_path / "tb"
    writer = TensorboardXWriter(str(log_dir), window_size=1)
    assert not log_dir.exists()
    with EventStorage() as storage:
        for i in range(3):
            storage.iter = i
            storage.put_scalar("total_loss", float(i))
        storage.put_image("vis", torch.rand(3, 8, 8))
        storage.put_histogram("w", torch.randn(100), bins=10)
        writer.write()
        assert storage._vis_data == [] and storage._histograms == []
        storage.iter = 3
        storage.put_scalar("total_loss", 7.0)
        writer.write()
    writer.close()
    (event_file,) = log_dir.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = [(e.step, e.value) for e in acc.Scalars("total_loss")]
    assert scalars == [(2, 2.0), (3, 7.0)]  # only the latest value at each write
    assert acc.Tags()["images"] == ["vis"]
    assert acc.Tags()["histograms"] == ["w"]


def test_tensorboard_writer_that_never_wrote_leaves_no_file(tmp_path) -> None:
    TensorboardXWriter(str(tmp_path / "tb")).close()
    assert not (tmp_path / "tb").exists()


def _fill(storage: EventStorage, iters: range, step_time: float | None = 0.5) -> None:
    for i in iters:
        storage.iter = i
        storage.put_scalars(total_loss=2.0 + i, loss_cls=1.0)
        storage.put_scalar("data_time", 0.01, cur_iter=i)
        storage.put_scalar("lr", 0.001, smoothing_hint=False)
        if step_time is not None:
            storage.put_scalar("time", step_time)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the line ends with max_mem on CUDA")
def test_common_metric_printer_line(printer_logs) -> None:
    printer = CommonMetricPrinter(max_iter=100, window_size=10)
    with EventStorage() as storage:
        _fill(storage, range(20))
        storage.put_scalar("[metric]grad_scaler", 1024.0)
        printer.write()
        (record,) = printer_logs.records
        # 80 iterations left at a median of 0.5 s each; total_loss is the median of 12..21.
        assert record.getMessage() == (
            " eta: 0:00:40  iter: 19  total_loss: 16.5  loss_cls: 1  [metric]grad_scaler: 1024"
            "  time: 0.5000  last_time: 0.5000  data_time: 0.0100  last_data_time: 0.0100"
            "  lr: 0.001"
        )
        assert storage.latest()["eta_seconds"] == (40.0, 19)

        printer.write()  # same iteration: not printed again
        storage.iter = 100
        printer.write()  # after a complete run: nothing to report
        assert len(printer_logs.records) == 1


def test_common_metric_printer_eta_from_wall_clock_without_step_times(
    printer_logs, monkeypatch
) -> None:
    clock = iter([100.0, 110.0])
    monkeypatch.setattr(events.time, "perf_counter", lambda: next(clock))
    printer = CommonMetricPrinter(max_iter=30)
    with EventStorage() as storage:
        _fill(storage, range(10), step_time=None)
        printer.write()
        _fill(storage, range(10, 20), step_time=None)
        printer.write()
    first, second = (r.getMessage() for r in printer_logs.records)
    assert first.startswith(" iter: 9  total_loss:")  # no ETA before two writes
    assert "time:" not in first.replace("data_time", "")
    # 10 iterations took 10 s; 10 iterations are left.
    assert second.startswith(" eta: 0:00:10  iter: 19  ")


def test_common_metric_printer_without_max_iter_or_lr(printer_logs) -> None:
    with EventStorage(4) as storage:
        storage.put_scalar("loss", 0.25)
        CommonMetricPrinter().write()
    message = printer_logs.records[0].getMessage()
    assert "eta" not in message
    assert re.match(r" iter: 4  loss: 0\.25  lr: N/A", message)
