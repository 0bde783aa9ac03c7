"""Tests of COCOPanopticEvaluator: PNG/JSON conversion, id mapping and PQ in percent."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from segtron.data import MetadataCatalog
from segtron.evaluation.panoptic_evaluation import COCOPanopticEvaluator
from segtron.utils.panoptic import rgb2id

# Dataset category ids: things 3 and 5, stuff 7; contiguous ids 0, 1 and 2.
THING_MAP = {3: 0, 5: 1}
STUFF_MAP = {7: 2}


def _gt_map() -> np.ndarray:
    """16×16 GT: stuff (id 1) everywhere, thing 3 (id 2), thing 5 (id 3), VOID on the last row."""
    ids = np.ones((16, 16), dtype=np.int64)
    ids[2:6, 2:6] = 2
    ids[8:14, 8:14] = 3
    ids[15] = 0
    return ids


@pytest.fixture
def pq_dataset(pq_write_panoptic, tmp_path, request):
    """A registered one-image panoptic dataset; yields its name."""
    segments = [
        {"id": 1, "category_id": 7},
        {"id": 2, "category_id": 3},
        {"id": 3, "category_id": 5},
    ]
    gt_json, _ = pq_write_panoptic(
        [(3, True), (5, True), (7, False)],
        [{"id": 1, "gt": (_gt_map(), segments), "pred": (_gt_map(), segments)}],
    )
    name = f"pq_eval_{request.node.name}"
    MetadataCatalog.get(name).set(
        panoptic_json=gt_json,
        panoptic_root=str(tmp_path / "gt"),
        thing_dataset_id_to_contiguous_id=THING_MAP,
        stuff_dataset_id_to_contiguous_id=STUFF_MAP,
        label_divisor=1000,
    )
    yield name
    MetadataCatalog.remove(name)


INPUTS = [{"image_id": 1, "file_name": "images/000001.jpg"}]


def test_perfect_prediction_with_segments_info(pq_dataset, tmp_path, caplog):
    segments_info = [
        {"id": 1, "category_id": 2, "isthing": False},
        {"id": 2, "category_id": 0, "isthing": True, "score": np.float32(0.5)},
        {"id": 3, "category_id": 1, "isthing": True, "score": torch.tensor(0.25)},
    ]
    evaluator = COCOPanopticEvaluator(pq_dataset, output_dir=str(tmp_path / "out"))
    evaluator.reset()
    evaluator.process(INPUTS, [{"panoptic_seg": (torch.from_numpy(_gt_map()), segments_info)}])
    with caplog.at_level(logging.INFO, logger="segtron.evaluation.panoptic_evaluation"):
        results = evaluator.evaluate()

    assert results["panoptic_seg"] == pytest.approx(
        {k + s: 100.0 for k in ("PQ", "SQ", "RQ") for s in ("", "_th", "_st")}
    )
    assert "Panoptic Evaluation Results" in caplog.text
    assert segments_info[0] == {"id": 1, "category_id": 2, "isthing": False}  # not mutated
    written = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert written["annotations"] == [
        {
            "image_id": 1,
            "file_name": "000001.png",
            "segments_info": [
                {"id": 1, "category_id": 7},
                {"id": 2, "category_id": 3, "score": 0.5},
                {"id": 3, "category_id": 5, "score": 0.25},
            ],
        }
    ]
    png = np.asarray(Image.open(tmp_path / "out" / "predictions" / "000001.png"))
    np.testing.assert_array_equal(rgb2id(png), _gt_map())


def test_label_divisor_ids_in_temporary_folder(pq_dataset):
    # Stuff (contiguous 2) -> 2000, thing 3 (contiguous 0) -> 1; thing 5 is missed (VOID, -1).
    panoptic = np.full((16, 16), 2000, dtype=np.int32)
    panoptic[2:6, 2:6] = 1
    panoptic[8:14, 8:14] = -1
    evaluator = COCOPanopticEvaluator(pq_dataset)
    evaluator.reset()
    evaluator.process(INPUTS, [{"panoptic_seg": (torch.from_numpy(panoptic), None)}])
    prediction = evaluator._predictions[0]
    assert prediction["segments_info"] == [
        {"id": 2, "category_id": 3},
        {"id": 2001, "category_id": 7},
    ]
    # Thing 3: PQ 1; thing 5: one FN, PQ 0; stuff: IoU 1 (its pixels on VOID leave the union).
    res = evaluator.evaluate()["panoptic_seg"]
    assert res == pytest.approx(
        {
            "PQ": 200 / 3,
            "SQ": 200 / 3,
            "RQ": 200 / 3,
            "PQ_th": 50.0,
            "SQ_th": 50.0,
            "RQ_th": 50.0,
            "PQ_st": 100.0,
            "SQ_st": 100.0,
            "RQ_st": 100.0,
        }
    )


def test_segments_without_isthing_keep_dataset_ids(pq_dataset):
    segments_info = [
        {"id": 1, "category_id": 7},
        {"id": 2, "category_id": 3},
        {"id": 3, "category_id": 5},
    ]
    evaluator = COCOPanopticEvaluator(pq_dataset)
    evaluator.reset()
    evaluator.process(INPUTS, [{"panoptic_seg": (torch.from_numpy(_gt_map()), segments_info)}])
    assert evaluator.evaluate()["panoptic_seg"]["PQ"] == pytest.approx(100.0)


def test_unknown_contiguous_category_is_an_error(pq_dataset):
    evaluator = COCOPanopticEvaluator(pq_dataset)
    evaluator.reset()
    bad = [{"id": 2, "category_id": 9, "isthing": True}]
    with pytest.raises(ValueError, match="segment 2 has thing category 9"):
        evaluator.process(INPUTS, [{"panoptic_seg": (torch.from_numpy(_gt_map()), bad)}])


def test_no_prediction_gives_empty_result(pq_dataset):
    evaluator = COCOPanopticEvaluator(pq_dataset)
    evaluator.reset()
    assert evaluator.evaluate() == {}
