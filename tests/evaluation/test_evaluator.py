"""Tests of the evaluator interface and inference_on_dataset with a fake model."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import segtron.evaluation.evaluator as evaluator_module
from segtron.data.common import InferenceBatch, SkippedImage
from segtron.evaluation import (
    DatasetEvaluator,
    DatasetEvaluators,
    inference_context,
    inference_on_dataset,
)


class _DoublingModel(nn.Module):
    """Returns 2 * x for each input; records whether it ran in eval mode without grad."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, batch: list[dict]) -> list[dict]:
        self.calls.append((self.training, torch.is_grad_enabled()))
        return [{"value": 2 * d["x"]} for d in batch]


class _SumEvaluator(DatasetEvaluator):
    """Counts inputs and sums output values; reports under ``task``."""

    def __init__(self, task: str = "sum") -> None:
        self.task = task
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1
        self.count = 0
        self.total = 0

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        self.count += len(inputs)
        self.total += sum(o["value"] for o in outputs)

    def evaluate(self) -> dict:
        return {self.task: {"count": self.count, "total": self.total}}


def _loader(num_batches: int, batch_size: int = 2) -> list[list[dict]]:
    return [[{"x": b * batch_size + i} for i in range(batch_size)] for b in range(num_batches)]


def test_inference_on_dataset_runs_every_batch_in_eval_mode(caplog) -> None:
    model = _DoublingModel()
    model.train()
    evaluator = _SumEvaluator()
    events: list[str] = []
    callbacks = {k: (lambda k=k: events.append(k)) for k in ("on_start", "on_end")}
    with caplog.at_level(logging.INFO, logger="segtron.evaluation.evaluator"):
        results = inference_on_dataset(model, _loader(8), evaluator, callbacks=callbacks)
    # x = 0..15, outputs 2x: sum = 2 * 120.
    assert results == {"sum": {"count": 16, "total": 240}}
    assert evaluator.resets == 1
    assert model.calls == [(False, False)] * 8
    assert model.training  # mode restored
    assert events == ["on_start", "on_end"]
    assert "Total inference time" in caplog.text
    assert "on 1 devices" in caplog.text


def test_progress_is_logged_after_the_warmup_iterations(caplog, monkeypatch) -> None:
    monkeypatch.setattr(evaluator_module, "_LOG_PERIOD_S", 0.0)
    with caplog.at_level(logging.INFO, logger="segtron.evaluation.evaluator"):
        inference_on_dataset(_DoublingModel(), _loader(8), _SumEvaluator())
    # The first min(5, 8 - 1) = 5 iterations are warm-up: progress starts at the 6th batch.
    assert "Inference done 5/8" not in caplog.text
    for done in (6, 7, 8):
        assert f"Inference done {done}/8" in caplog.text
    assert "ETA=0:00:00" in caplog.text


def test_inference_on_dataset_accepts_lists_none_and_plain_callables() -> None:
    evaluators = [_SumEvaluator("a"), _SumEvaluator("b")]
    results = inference_on_dataset(_DoublingModel(), _loader(1, 3), evaluators)
    assert results == {"a": {"count": 3, "total": 6}, "b": {"count": 3, "total": 6}}
    assert inference_on_dataset(_DoublingModel(), _loader(2), None) == {}

    def plain(batch: list[dict]) -> list[dict]:
        return [{"value": d["x"]} for d in batch]

    assert inference_on_dataset(plain, _loader(2), _SumEvaluator()) == {
        "sum": {"count": 4, "total": 6}
    }


def _batch_with_skipped(kept: list[dict], names: list[str]) -> InferenceBatch:
    batch = InferenceBatch(kept)
    batch.skipped = [SkippedImage(name, "Image file not found") for name in names]
    return batch


def test_inference_on_dataset_leaves_out_and_reports_skipped_images(caplog) -> None:
    names = [f"/data/bad{i}.jpg" for i in range(7)]
    loader = [
        [{"x": 1}, {"x": 2}],
        _batch_with_skipped([{"x": 3}], names[:1]),
        _batch_with_skipped([], names[1:3]),  # nothing left: the model is not called
        _batch_with_skipped([{"x": 4}], names[3:]),
    ]
    model = _DoublingModel()
    with caplog.at_level(logging.WARNING, logger="segtron.evaluation.evaluator"):
        results = inference_on_dataset(model, loader, _SumEvaluator())
    assert results == {"sum": {"count": 4, "total": 20}}
    assert len(model.calls) == 3
    (summary,) = [r.getMessage() for r in caplog.records]
    assert "Skipped 7 unreadable image(s)" in summary
    assert ", ".join(names[:5]) + " and 2 more" in summary


def test_inference_on_dataset_returns_empty_dict_when_evaluate_returns_none() -> None:
    assert inference_on_dataset(_DoublingModel(), _loader(3), DatasetEvaluator()) == {}


def test_dataset_evaluators_reject_duplicate_tasks() -> None:
    evaluators = DatasetEvaluators([_SumEvaluator("same"), _SumEvaluator("same")])
    evaluators.reset()
    with pytest.raises(KeyError, match="same"):
        evaluators.evaluate()


def test_inference_context_restores_mode_after_an_error() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(RuntimeError), inference_context(model):
        assert not model.training
        raise RuntimeError("boom")
    assert model.training
