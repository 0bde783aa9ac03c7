"""Tests of COCOEvaluator and instances_to_coco_json on a tiny two-image COCO dataset."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segtron.data import DatasetCatalog, MetadataCatalog
from segtron.evaluation import COCOEvaluator
from segtron.evaluation.coco_evaluation import instances_to_coco_json
from segtron.structures import Boxes, BoxMode, Instances

SIZE = 20
# (image id, dataset category id, (y0, y1, x0, x1)); categories "A" (id 1) and "B" (id 3).
OBJECTS = [(10, 1, (2, 8, 3, 11)), (11, 3, (5, 15, 4, 10))]
# A third image with a second "A", for the tests of images left unprocessed.
OBJECTS3 = [*OBJECTS, (12, 1, (10, 18, 12, 19))]
ID_MAP = {1: 0, 3: 1}


def _mask(rect: tuple[int, int, int, int]) -> np.ndarray:
    y0, y1, x0, x1 = rect
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("utf-8")}


def _xywh(rect: tuple[int, int, int, int]) -> list[float]:
    y0, y1, x0, x1 = rect
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _dataset_dicts(objects: list = OBJECTS) -> list[dict]:
    return [
        {
            "file_name": f"{image_id}.jpg",
            "image_id": image_id,
            "height": SIZE,
            "width": SIZE,
            "annotations": [
                {
                    "bbox": _xywh(rect),
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "category_id": ID_MAP[cat],
                    "segmentation": _rle(_mask(rect)),
                    "iscrowd": 0,
                }
            ],
        }
        for image_id, cat, rect in objects
    ]


def _coco_json(path: Path, objects: list = OBJECTS) -> str:
    data = {
        "images": [
            {"id": i, "file_name": f"{i}.jpg", "height": SIZE, "width": SIZE} for i, *_ in objects
        ],
        "categories": [{"id": 1, "name": "A"}, {"id": 3, "name": "B"}],
        "annotations": [
            {
                "id": k + 1,
                "image_id": image_id,
                "category_id": cat,
                "bbox": _xywh(rect),
                "area": float(_mask(rect).sum()),
                "segmentation": _rle(_mask(rect)),
                "iscrowd": 0,
            }
            for k, (image_id, cat, rect) in enumerate(objects)
        ],
    }
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def dataset(tmp_path: Path, request):
    """A registered dataset; ``request.param`` says whether its metadata has a json_file."""
    name = f"_test_coco_{tmp_path.name}"
    DatasetCatalog.register(name, _dataset_dicts)
    meta = MetadataCatalog.get(name).set(
        thing_classes=["A", "B"], thing_dataset_id_to_contiguous_id=ID_MAP
    )
    if getattr(request, "param", True):
        meta.json_file = _coco_json(tmp_path / "gt.json")
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@pytest.fixture
def dataset3(tmp_path: Path):
    """A registered dataset of the three images of OBJECTS3, with a json_file."""
    name = f"_test_coco3_{tmp_path.name}"
    DatasetCatalog.register(name, lambda: _dataset_dicts(OBJECTS3))
    MetadataCatalog.get(name).set(
        thing_classes=["A", "B"],
        thing_dataset_id_to_contiguous_id=ID_MAP,
        json_file=_coco_json(tmp_path / "gt3.json", OBJECTS3),
    )
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _instances(rects: list, classes: list[int], scores: list[float]) -> Instances:
    boxes = [[x0, y0, x1, y1] for y0, y1, x0, x1 in rects]
    return Instances(
        (SIZE, SIZE),
        pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
        scores=torch.tensor(scores),
        pred_classes=torch.tensor(classes, dtype=torch.int64),
        pred_masks=torch.from_numpy(
            np.stack([_mask(r) for r in rects]) if rects else np.zeros((0, SIZE, SIZE), bool)
        ),
    )


def _evaluate(evaluator: COCOEvaluator, per_image: list[Instances]) -> dict:
    evaluator.reset()
    for (image_id, *_), instances in zip(OBJECTS, per_image):
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    return evaluator.evaluate()


def test_instances_to_coco_json() -> None:
    rect = OBJECTS[0][2]
    records = instances_to_coco_json(_instances([rect], [1], [0.75]), img_id=10)
    assert len(records) == 1
    record = records[0]
    assert record["image_id"] == 10 and record["category_id"] == 1
    assert record["bbox"] == _xywh(rect)
    assert record["score"] == pytest.approx(0.75)
    assert isinstance(record["segmentation"]["counts"], str)
    assert record["segmentation"] == _rle(_mask(rect))
    assert instances_to_coco_json(_instances([], [], []), img_id=10) == []


@pytest.mark.parametrize("dataset", [True, False], indirect=True, ids=["json_file", "converted"])
def test_perfect_predictions_give_ap_100(dataset: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    evaluator = COCOEvaluator(dataset, distributed=False, output_dir=str(out))
    per_image = [_instances([rect], [ID_MAP[cat]], [0.9]) for _, cat, rect in OBJECTS]
    results = _evaluate(evaluator, per_image)
    assert list(results) == ["bbox", "segm"]
    for task in ("bbox", "segm"):
        res = results[task]
        for key in ("AP", "AP50", "AP75", "APs", "AP-A", "AP-B"):
            assert res[key] == pytest.approx(100.0), (task, key)
        # Both objects are small: no medium or large ground truth, so those APs are NaN.
        assert math.isnan(res["APm"]) and math.isnan(res["APl"])
    saved = json.loads((out / "coco_instances_results.json").read_text())
    assert sorted(r["category_id"] for r in saved) == [1, 3]  # mapped back to dataset ids


def test_per_category_names_on_a_standard_panoptic_dataset(dataset: str) -> None:
    # Standard panoptic metadata name every category in thing_classes (things A, B and one
    # stuff class S); the thing ids map into that list.
    json_file = MetadataCatalog.get(dataset).json_file
    MetadataCatalog.remove(dataset)
    MetadataCatalog.get(dataset).set(
        thing_classes=["A", "S", "B"],
        thing_dataset_id_to_contiguous_id={1: 0, 3: 2},
        json_file=json_file,
    )
    per_image = [_instances([rect], [{1: 0, 3: 2}[cat]], [0.9]) for _, cat, rect in OBJECTS]
    res = _evaluate(COCOEvaluator(dataset, tasks=("segm",), distributed=False), per_image)
    assert res["segm"]["AP-A"] == res["segm"]["AP-B"] == pytest.approx(100.0)
    assert "AP-S" not in res["segm"]


def test_wrong_class_lowers_ap(dataset: str) -> None:
    # Image 11's object (a "B") is predicted as "A" with a higher score than the true "A".
    # A: detections FP (0.9) then TP (0.8) -> precision 0.5 at every recall -> AP 50.
    # B: never detected -> AP 0. Mean AP 25.
    (_, _, rect_a), (_, _, rect_b) = OBJECTS
    per_image = [_instances([rect_a], [0], [0.8]), _instances([rect_b], [0], [0.9])]
    res = _evaluate(COCOEvaluator(dataset, tasks=("bbox",), distributed=False), per_image)
    assert list(res) == ["bbox"]
    assert res["bbox"]["AP-A"] == pytest.approx(50.0)
    assert res["bbox"]["AP-B"] == pytest.approx(0.0)
    assert res["bbox"]["AP"] == pytest.approx(25.0)


def test_empty_predictions_do_not_crash(dataset: str, caplog) -> None:
    evaluator = COCOEvaluator(dataset, distributed=False)
    with caplog.at_level(logging.WARNING, logger="segtron.evaluation.coco_evaluation"):
        res = _evaluate(evaluator, [_instances([], [], []) for _ in OBJECTS])
        assert list(res) == ["bbox"]
        assert all(math.isnan(v) for v in res["bbox"].values())
        assert "No predictions" in caplog.text
        evaluator.reset()
        assert evaluator.evaluate() == {}
        assert "Did not receive valid predictions" in caplog.text


def test_smaller_max_dets_per_image(dataset: str) -> None:
    evaluator = COCOEvaluator(dataset, distributed=False, max_dets_per_image=5)
    per_image = [_instances([rect], [ID_MAP[cat]], [0.9]) for _, cat, rect in OBJECTS]
    assert _evaluate(evaluator, per_image)["bbox"]["AP"] == pytest.approx(100.0)


@pytest.mark.parametrize("dataset", [False], indirect=True)
def test_conversion_needs_an_output_dir(dataset: str) -> None:
    with pytest.raises(ValueError, match="output_dir"):
        COCOEvaluator(dataset)


def _perfect(objects: list) -> list[Instances]:
    return [_instances([rect], [ID_MAP[cat]], [0.9]) for _, cat, rect in objects]


def test_unprocessed_image_is_not_scored(dataset3: str) -> None:
    # Image 12 (the second "A") never reaches the evaluator, as when the test loader skips it.
    evaluator = COCOEvaluator(dataset3, distributed=False)
    for (image_id, *_), instances in zip(OBJECTS3[:2], _perfect(OBJECTS3[:2])):
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    results = evaluator.evaluate()
    for task in ("bbox", "segm"):
        for key in ("AP", "AP-A", "AP-B"):
            assert results[task][key] == pytest.approx(100.0), (task, key)
    # Explicit img_ids are scored as given: image 12's "A" is then missed.
    explicit = evaluator.evaluate(img_ids=[10, 11, 12])
    assert explicit["bbox"]["AP-A"] == pytest.approx(100 * 51 / 101)


def test_processed_image_without_predictions_counts_as_missed(
    dataset3: str, tmp_path: Path
) -> None:
    # Image 12 is processed but the model returns nothing for it: its "A" is missed.
    # A: one of two found at score 0.9 -> precision 1 up to recall 0.5 -> 51 of COCO's 101
    # recall points. B: found -> 100.
    evaluator = COCOEvaluator(dataset3, distributed=False, output_dir=str(tmp_path / "out"))
    evaluator.reset()
    for (image_id, *_), instances in zip(OBJECTS3[:2], _perfect(OBJECTS3[:2])):
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    evaluator.process([{"image_id": 12}], [{}])
    results = evaluator.evaluate()
    expected_a = 100 * 51 / 101
    for task in ("bbox", "segm"):
        assert results[task]["AP-A"] == pytest.approx(expected_a), task
        assert results[task]["AP-B"] == pytest.approx(100.0), task
        assert results[task]["AP"] == pytest.approx((expected_a + 100) / 2), task
    # Every image processed: the same as Detectron2's default, COCOeval on the whole ground
    # truth (pycocotools run directly on the saved results).
    coco_gt = COCO(MetadataCatalog.get(dataset3).json_file)
    saved = json.loads((tmp_path / "out" / "coco_instances_results.json").read_text())
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(saved), "bbox")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    assert results["bbox"]["AP"] == pytest.approx(100 * coco_eval.stats[0])


def test_evaluate_twice_gives_the_same_results(dataset3: str) -> None:
    # The contiguous ids are mapped back to dataset ids (1 -> 3 for "B") on copies, so a
    # second call sees the contiguous ids again.
    evaluator = COCOEvaluator(dataset3, distributed=False)
    per_image = _perfect(OBJECTS3)
    per_image[2] = _instances([OBJECTS3[1][2]], [1], [0.5])  # a false "B" instead of the "A"
    for (image_id, *_), instances in zip(OBJECTS3, per_image):
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    first = evaluator.evaluate()
    assert first["bbox"]["AP"] < 100
    second = evaluator.evaluate()
    assert list(second) == list(first) == ["bbox", "segm"]
    for task in first:
        assert second[task] == pytest.approx(first[task], nan_ok=True), task
