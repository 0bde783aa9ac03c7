"""Tests of the result helpers and of the Cityscapes evaluators' missing-dependency error."""

from __future__ import annotations

import logging
import sys

import pytest

from segtron.config import get_cfg
from segtron.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    flatten_results_dict,
    print_csv_format,
    verify_results,
)

RESULTS = {"bbox": {"AP": 40.0, "AP50": 61.25, "AP-person": 70.0}, "sem_seg": {"mIoU": 33.5}}


def test_print_csv_format_skips_per_class_metrics(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="segtron.evaluation.testing"):
        print_csv_format({**RESULTS, "elapsed": 3})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "copypaste: Task: bbox",
        "copypaste: AP,AP50",
        "copypaste: 40.0000,61.2500",
        "copypaste: Task: sem_seg",
        "copypaste: mIoU",
        "copypaste: 33.5000",
        "copypaste: elapsed=3",
    ]


def test_verify_results() -> None:
    cfg = get_cfg()
    assert verify_results(cfg, RESULTS)  # nothing expected
    cfg.TEST.EXPECTED_RESULTS = [["bbox", "AP", 40.5, 1.0], ["sem_seg", "mIoU", 33.0, 0.6]]
    assert verify_results(cfg, RESULTS)
    for wrong in (["bbox", "AP", 42.0, 1.0], ["bbox", "APs", 1.0, 1.0], ["segm", "AP", 1.0, 1.0]):
        cfg.TEST.EXPECTED_RESULTS = [wrong]
        with pytest.raises(SystemExit):
            verify_results(cfg, RESULTS)
    cfg.TEST.EXPECTED_RESULTS = [["bbox", "AP", 40.0, 1.0]]
    with pytest.raises(SystemExit):
        verify_results(cfg, {"bbox": {"AP": float("nan")}})


def test_flatten_results_dict() -> None:
    nested = {"bbox": {"AP": 1.0, "deep": {"x": 2}}, "time": 3}
    assert flatten_results_dict(nested) == {"bbox/AP": 1.0, "bbox/deep/x": 2, "time": 3}


@pytest.mark.parametrize("cls", [CityscapesInstanceEvaluator, CityscapesSemSegEvaluator])
def test_cityscapes_evaluators_explain_missing_dependency(cls, monkeypatch) -> None:
    # A None entry in sys.modules makes every import of the package fail.
    monkeypatch.setitem(sys.modules, "cityscapesscripts", None)
    monkeypatch.setitem(sys.modules, "cityscapesscripts.helpers.labels", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[cityscapes\]"'):
        cls("_test_cityscapes_missing")
