"""Evaluation: the evaluator interface, the inference loop, COCO / semantic / panoptic /
Cityscapes metrics and helpers around results."""

from segtron.evaluation.build import build_evaluator
from segtron.evaluation.cityscapes_evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
)
from segtron.evaluation.coco_evaluation import COCOEvaluator
from segtron.evaluation.evaluator import (
    DatasetEvaluator,
    DatasetEvaluators,
    inference_context,
    inference_on_dataset,
)
from segtron.evaluation.panoptic_evaluation import COCOPanopticEvaluator
from segtron.evaluation.panoptic_quality import pq_compute
from segtron.evaluation.sem_seg_evaluation import SemSegEvaluator
from segtron.evaluation.testing import (
    flatten_results_dict,
    format_results_table,
    print_csv_format,
    verify_results,
)

__all__ = [
    "COCOEvaluator",
    "COCOPanopticEvaluator",
    "CityscapesInstanceEvaluator",
    "CityscapesSemSegEvaluator",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "SemSegEvaluator",
    "build_evaluator",
    "flatten_results_dict",
    "format_results_table",
    "inference_context",
    "inference_on_dataset",
    "pq_compute",
    "print_csv_format",
    "verify_results",
]
