"""``build_evaluator``: the evaluators of a dataset, chosen by its metadata.

segtron addition (Detectron2 leaves this to each training script): ``tools/train_net.py`` and
``DefaultTrainer`` score every model with the metrics its test dataset declares through the
metadata's ``evaluator_type``.
"""

from __future__ import annotations

from typing import Any

from segtron.data import MetadataCatalog
from segtron.evaluation.cityscapes_evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
)
from segtron.evaluation.coco_evaluation import COCOEvaluator
from segtron.evaluation.evaluator import DatasetEvaluator, DatasetEvaluators
from segtron.evaluation.panoptic_evaluation import COCOPanopticEvaluator
from segtron.evaluation.sem_seg_evaluation import SemSegEvaluator

__all__ = ["EVALUATOR_TYPES", "build_evaluator"]

EVALUATOR_TYPES = (
    "sem_seg",
    "coco",
    "coco_panoptic_seg",
    "cityscapes_instance",
    "cityscapes_sem_seg",
    "cityscapes_panoptic_seg",
)


def build_evaluator(
    cfg: Any, dataset_name: str, output_folder: str | None = None
) -> DatasetEvaluator:
    """The evaluators that the metadata's ``evaluator_type`` of `dataset_name` asks for.

    ``sem_seg`` → mIoU…; ``coco`` → box/mask AP; ``coco_panoptic_seg`` → PQ, plus AP when the
    metadata has an instances ``json_file`` and mIoU when it has a ``sem_seg_root`` (Panoptic
    FPN's "separated" datasets); ``cityscapes_*`` → the official Cityscapes scripts
    (``cityscapes_panoptic_seg`` is scored with the COCO panoptic rules, as Detectron2 does).

    Args:
        cfg: the full config (kept for signature compatibility with Detectron2's trainers).
        dataset_name: a registered dataset.
        output_folder: where evaluators write predictions; None writes nothing.

    Returns:
        One evaluator, or a `DatasetEvaluators` of several.

    Raises:
        NotImplementedError: the metadata has no known ``evaluator_type``.
    """
    meta = MetadataCatalog.get(dataset_name)
    evaluator_type = meta.get("evaluator_type", None)
    panoptic = evaluator_type == "coco_panoptic_seg"
    evaluators: list[DatasetEvaluator] = []
    if evaluator_type == "sem_seg" or (panoptic and meta.get("sem_seg_root", None)):
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    if evaluator_type == "coco" or (panoptic and meta.get("json_file", None)):
        evaluators.append(COCOEvaluator(dataset_name, output_dir=output_folder))
    if evaluator_type in ("coco_panoptic_seg", "cityscapes_panoptic_seg"):
        evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
    if evaluator_type == "cityscapes_instance":
        evaluators.append(CityscapesInstanceEvaluator(dataset_name))
    if evaluator_type == "cityscapes_sem_seg":
        evaluators.append(CityscapesSemSegEvaluator(dataset_name))
    if not evaluators:
        raise NotImplementedError(
            f"Dataset {dataset_name!r} has evaluator_type={evaluator_type!r}; known types are "
            f"{', '.join(EVALUATOR_TYPES)}. Set MetadataCatalog.get({dataset_name!r})"
            ".evaluator_type, or pass evaluators to DefaultTrainer.test."
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
