"""Tests of SemSegEvaluator and the confusion-matrix metrics against hand-computed numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from segtron.data import DatasetCatalog, MetadataCatalog
from segtron.evaluation import SemSegEvaluator
from segtron.evaluation.sem_seg_evaluation import (
    compute_confusion_matrix,
    metrics_from_confusion_matrix,
)

# 2×3 image; the bottom-right pixel is ignored. Non-ignored (gt, pred) pairs:
# (0,0) (0,0) (0,1) | (1,1) (1,0)
GT = np.array([[0, 0, 0], [1, 1, 255]], dtype=np.uint8)
PRED = np.array([[0, 0, 1], [1, 0, 1]])


@pytest.fixture
def register(tmp_path: Path):
    """Register datasets of label maps under unique names; removed after the test."""
    names: list[str] = []

    def _register(labels: list[np.ndarray], classes: list[str], **meta) -> str:
        name = f"_test_sem_seg_{len(names)}_{tmp_path.name}"
        dicts = []
        for i, label in enumerate(labels):
            gt_file = tmp_path / f"{name}_{i}.png"
            Image.fromarray(label.astype(np.uint8)).save(gt_file)
            dicts.append({"file_name": f"img_{i}.jpg", "sem_seg_file_name": str(gt_file)})
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(stuff_classes=classes, ignore_label=255, **meta)
        names.append(name)
        return name

    yield _register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _scores(pred: np.ndarray, num_classes: int) -> torch.Tensor:
    """C×H×W scores whose argmax is ``pred``."""
    return torch.nn.functional.one_hot(torch.as_tensor(pred), num_classes).permute(2, 0, 1).float()


def _run(evaluator: SemSegEvaluator, inputs: list[dict], preds: list[np.ndarray], c: int) -> dict:
    evaluator.reset()
    evaluator.process(inputs, [{"sem_seg": _scores(p, c)} for p in preds])
    return evaluator.evaluate()["sem_seg"]


def test_confusion_matrix_and_metrics_by_hand() -> None:
    conf = compute_confusion_matrix(PRED, GT, num_classes=2, ignore_label=255)
    # conf[pred, gt]
    np.testing.assert_array_equal(conf, [[2, 1], [1, 1]])
    res = metrics_from_confusion_matrix(conf, ["a", "b"])
    assert list(res) == ["mIoU", "fwIoU", "IoU-a", "IoU-b", "mACC", "pACC", "ACC-a", "ACC-b"]
    # IoU-a = 2 / (3 + 3 - 2), IoU-b = 1 / (2 + 2 - 1); GT shares are 3/5 and 2/5.
    assert res["IoU-a"] == pytest.approx(50.0)
    assert res["IoU-b"] == pytest.approx(100 / 3)
    assert res["mIoU"] == pytest.approx((50 + 100 / 3) / 2)
    assert res["fwIoU"] == pytest.approx(100 * (3 / 5 * 0.5 + 2 / 5 / 3))
    assert res["ACC-a"] == pytest.approx(200 / 3)
    assert res["ACC-b"] == pytest.approx(50.0)
    assert res["mACC"] == pytest.approx((200 / 3 + 50) / 2)
    assert res["pACC"] == pytest.approx(60.0)


def test_class_absent_from_ground_truth_is_nan_and_left_out() -> None:
    # Class 2 is predicted once but never in the GT: NaN, excluded from the means (Detectron2).
    pred = np.array([0, 1, 2])
    gt = np.array([0, 1, 1])
    res = metrics_from_confusion_matrix(compute_confusion_matrix(pred, gt, 3))
    assert math.isnan(res["IoU-2"]) and math.isnan(res["ACC-2"])
    assert res["mIoU"] == pytest.approx((100 + 50) / 2)
    assert res["mACC"] == pytest.approx((100 + 50) / 2)
    assert res["pACC"] == pytest.approx(200 / 3)


def test_perfect_prediction(register) -> None:
    labels = [np.array([[0, 1], [1, 255]]), np.array([[1, 1], [0, 0]])]
    name = register(labels, ["a", "b", "never"])
    inputs = DatasetCatalog.get(name)
    preds = [np.where(lab == 255, 2, lab) for lab in labels]  # ignored pixel predicted "never"
    res = _run(SemSegEvaluator(name, distributed=False), inputs, preds, 3)
    for key in ("mIoU", "fwIoU", "mACC", "pACC", "IoU-a", "IoU-b", "ACC-a"):
        assert res[key] == pytest.approx(100.0)
    assert math.isnan(res["IoU-never"])


def test_evaluator_hand_built_case_reads_gt_from_the_catalog(register, tmp_path: Path) -> None:
    name = register([GT], ["a", "b"])
    # The test-time mapper drops "sem_seg_file_name": the evaluator finds it by "file_name".
    inputs = [{"file_name": "img_0.jpg"}]
    evaluator = SemSegEvaluator(name, distributed=True, output_dir=str(tmp_path / "out"))
    res = _run(evaluator, inputs, [PRED], 2)
    assert res["mIoU"] == pytest.approx((50 + 100 / 3) / 2)
    assert res["fwIoU"] == pytest.approx(100 * (3 / 5 * 0.5 + 2 / 5 / 3))
    assert res["pACC"] == pytest.approx(60.0)

    records = json.loads((tmp_path / "out" / "sem_seg_predictions.json").read_text())
    assert [r["category_id"] for r in records] == [0, 1]
    assert all(r["file_name"] == "img_0.jpg" for r in records)
    decoded = mask_util.decode(
        {**records[1]["segmentation"], "counts": records[1]["segmentation"]["counts"].encode()}
    )
    np.testing.assert_array_equal(decoded, PRED == 1)
    assert (tmp_path / "out" / "sem_seg_evaluation.pth").exists()


@pytest.mark.parametrize(
    "id_maps, category_ids",
    [
        # Standard panoptic form: things and stuff share one contiguous range.
        (
            {
                "thing_dataset_id_to_contiguous_id": {7: 0},
                "stuff_dataset_id_to_contiguous_id": {9: 1},
            },
            [7, 9],
        ),
        # Semantic-only form: every label is a "stuff" label.
        ({"stuff_dataset_id_to_contiguous_id": {4: 0, 2: 1}}, [4, 2]),
    ],
)
def test_saved_predictions_use_dataset_category_ids(register, tmp_path, id_maps, category_ids):
    name = register([GT], ["a", "b"], **id_maps)
    evaluator = SemSegEvaluator(name, distributed=False, output_dir=str(tmp_path / "out"))
    _run(evaluator, [{"file_name": "img_0.jpg"}], [PRED], 2)
    records = json.loads((tmp_path / "out" / "sem_seg_predictions.json").read_text())
    assert [r["category_id"] for r in records] == category_ids


def test_ignore_label_override(register) -> None:
    # With ignore_label=1, only the three class-0 pixels count: 2 of 3 right.
    label = np.array([[0, 0, 0], [1, 1, 1]])
    name = register([label], ["a", "b"])
    inputs = DatasetCatalog.get(name)
    res = _run(SemSegEvaluator(name, distributed=False, ignore_label=1), inputs, [PRED], 2)
    assert res["pACC"] == pytest.approx(200 / 3)
    assert res["IoU-a"] == pytest.approx(100 * 2 / 3)
    assert math.isnan(res["IoU-b"])


def test_ground_truth_out_of_range_names_the_file(register) -> None:
    name = register([np.array([[0, 7], [1, 255]])], ["a", "b"])
    inputs = DatasetCatalog.get(name)
    evaluator = SemSegEvaluator(name, distributed=False)
    with pytest.raises(ValueError, match=rf"{name}_0\.png.*\[7\]"):
        evaluator.process(inputs, [{"sem_seg": _scores(np.zeros((2, 2), np.int64), 2)}])


def test_num_classes_must_match_stuff_classes(register) -> None:
    name = register([GT], ["a", "b"])
    with pytest.raises(ValueError, match="num_classes=3"):
        SemSegEvaluator(name, num_classes=3)
