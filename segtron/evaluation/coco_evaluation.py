"""COCO-style instance evaluation (box, mask and keypoint AP) through pycocotools.

``COCOEvaluator`` collects a model's ``instances`` as COCO result records
(``instances_to_coco_json``), writes them to ``coco_instances_results.json`` and scores every
task with pycocotools' ``COCOeval`` on the images it processed. Datasets without a COCO json are
converted first.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from segtron.data import MetadataCatalog
from segtron.evaluation.evaluator import DatasetEvaluator
from segtron.structures import BoxMode, Instances
from segtron.utils.comm import gather, is_main_process, synchronize
from segtron.utils.file_io import PathManager

__all__ = ["COCOEvaluator", "instances_to_coco_json"]

logger = logging.getLogger(__name__)

# Summary metrics per task, in the order of COCOeval.stats.
_METRICS = {
    "bbox": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "segm": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "keypoints": ["AP", "AP50", "AP75", "APm", "APl"],
}


class COCOEvaluator(DatasetEvaluator):
    """Average precision of instance predictions with the official COCO API.

    Results are ``{task: {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>"...}}`` in
    percent, for each task among ``bbox``, ``segm`` and ``keypoints``; a metric COCOeval cannot
    compute is NaN. Differs from Detectron2 on purpose: there is no compiled fast COCOeval
    (``use_fast_impl`` only logs that pycocotools is used), no proposal (``box_proposals``)
    evaluation, and by default only the images given to `process` are scored (Detectron2
    scores every image of the ground truth), so that an image the test loader skipped as
    unreadable does not count as missed detections; the numbers are the same when every
    image was processed.

    Args:
        dataset_name: a registered dataset. Its metadata's ``json_file`` is the ground truth;
            without one, the dataset is converted to ``<output_dir>/<name>_coco_format.json``.
        tasks: tasks to evaluate; by default inferred from the predictions (``bbox`` always,
            ``segm`` when masks are predicted, ``keypoints`` when keypoints are).
        distributed: gather predictions from every process; only the main process reports.
        output_dir: where ``coco_instances_results.json`` and ``instances_predictions.pth``
            are written.
        max_dets_per_image: the largest of COCOeval's three ``maxDets`` (default 100).
        use_fast_impl: accepted for compatibility; pycocotools is always used.
        kpt_oks_sigmas: per-keypoint OKS sigmas for keypoint AP (COCO's when empty).
        allow_cached_coco: reuse an existing converted json.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Sequence[str] | None = None,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        max_dets_per_image: int | None = None,
        use_fast_impl: bool = False,
        kpt_oks_sigmas: Sequence[float] = (),
        allow_cached_coco: bool = True,
    ) -> None:
        self._distributed = distributed
        self._output_dir = output_dir
        self._tasks = tuple(tasks) if tasks is not None else None
        self._max_dets_per_image = [
            1,
            10,
            100 if max_dets_per_image is None else max_dets_per_image,
        ]
        self._kpt_oks_sigmas = kpt_oks_sigmas
        self._cpu_device = torch.device("cpu")
        if use_fast_impl:
            logger.warning("No fast COCOeval implementation in segtron; using pycocotools.")
        self._metadata = MetadataCatalog.get(dataset_name)
        if self._metadata.get("json_file") is None:
            if output_dir is None:
                raise ValueError(
                    f"Dataset '{dataset_name}' has no json_file; COCOEvaluator needs output_dir "
                    "to write its COCO-format conversion."
                )
            from segtron.data.datasets.coco import convert_to_coco_json

            cache_path = os.path.join(output_dir, f"{dataset_name}_coco_format.json")
            logger.info("Converting '%s' to COCO format at %s", dataset_name, cache_path)
            convert_to_coco_json(dataset_name, cache_path, allow_cached=allow_cached_coco)
            self._metadata.json_file = cache_path
        json_file = PathManager.get_local_path(self._metadata.json_file)
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco_api = COCO(json_file)
        self._do_evaluation = "annotations" in self._coco_api.dataset
        self.reset()

    def reset(self) -> None:
        self._predictions: list[dict] = []
        self._image_ids: list[int] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for input_dict, output in zip(inputs, outputs):
            self._image_ids.append(input_dict["image_id"])
            if "instances" not in output:
                continue
            instances = output["instances"].to(self._cpu_device)
            self._predictions.append(
                {
                    "image_id": input_dict["image_id"],
                    "instances": instances_to_coco_json(instances, input_dict["image_id"]),
                }
            )

    def evaluate(self, img_ids: Sequence[int] | None = None) -> OrderedDict | dict | None:
        """Score the collected predictions.

        Args:
            img_ids: the image ids to score; None: those given to `process` (by every
                process).

        Returns:
            ``{task: metrics}``; ``{}`` when nothing was predicted or the ground truth has no
            annotations; None on non-main processes.
        """
        predictions, image_ids = self._predictions, self._image_ids
        if self._distributed:
            synchronize()
            predictions = list(itertools.chain(*gather(self._predictions, dst=0)))
            image_ids = list(itertools.chain(*gather(self._image_ids, dst=0)))
            if not is_main_process():
                return None
        if not predictions:
            logger.warning("[COCOEvaluator] Did not receive valid predictions.")
            return {}
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "instances_predictions.pth")
            with PathManager.open(path, "wb") as f:
                torch.save(predictions, f)
        if img_ids is None:
            img_ids = sorted(set(image_ids))
            num_gt_images = len(self._coco_api.getImgIds())
            if len(img_ids) < num_gt_images:
                logger.info(
                    "Scoring the %d processed images of the %d in the ground truth.",
                    len(img_ids),
                    num_gt_images,
                )
        return self._eval_predictions(predictions, img_ids)

    def _tasks_from_predictions(self, coco_results: list[dict]) -> list[str]:
        tasks = {"bbox"}
        for record in coco_results:
            if "segmentation" in record:
                tasks.add("segm")
            if "keypoints" in record:
                tasks.add("keypoints")
        return sorted(tasks)

    def _eval_predictions(
        self, predictions: list[dict], img_ids: Sequence[int] | None
    ) -> OrderedDict:
        # Copies, remapped below: a later evaluate() must still see the contiguous ids.
        coco_results = [dict(r) for p in predictions for r in p["instances"]]
        tasks = self._tasks or self._tasks_from_predictions(coco_results)
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if id_map is not None:
            reverse = {contiguous: dataset_id for dataset_id, contiguous in id_map.items()}
            for record in coco_results:
                category_id = record["category_id"]
                if category_id not in reverse:
                    raise ValueError(
                        f"Predicted class {category_id} is outside the {len(reverse)} classes "
                        "of thing_dataset_id_to_contiguous_id."
                    )
                record["category_id"] = reverse[category_id]
        if self._output_dir:
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            logger.info("Saving results to %s", path)
            with PathManager.open(path, "w") as f:
                f.write(json.dumps(coco_results))
        results: OrderedDict = OrderedDict()
        if not self._do_evaluation:
            logger.info("Annotations are not available for evaluation.")
            return results
        for task in sorted(tasks):
            if task not in _METRICS:
                raise ValueError(f"Unknown COCO task '{task}'; expected one of {list(_METRICS)}.")
            coco_eval = (
                _evaluate_predictions_on_coco(
                    self._coco_api,
                    coco_results,
                    task,
                    kpt_oks_sigmas=self._kpt_oks_sigmas,
                    img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image,
                )
                if coco_results
                else None
            )
            results[task] = _derive_coco_results(
                coco_eval, task, class_names=self._evaluated_class_names()
            )
        return results

    def _evaluated_class_names(self) -> list[str] | None:
        """Names of the categories COCOeval scores, in its (sorted dataset id) order.

        Usually ``thing_classes``; on a standard panoptic dataset, whose ``thing_classes``
        names every category (Detectron2's convention), only those of the thing ids.
        """
        names = self._metadata.get("thing_classes", None)
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id", None)
        if names is None or id_map is None:
            return names
        return [names[id_map[dataset_id]] for dataset_id in sorted(id_map)]


def instances_to_coco_json(instances: Instances, img_id: int) -> list[dict[str, Any]]:
    """Turn one image's predicted ``Instances`` into COCO result records.

    Boxes become XYWH, masks become RLE with ``counts`` as str, keypoints are shifted by -0.5 to
    COCO's pixel convention. ``category_id`` is the contiguous class id (the evaluator maps it
    back to the dataset's ids).

    Args:
        instances: predictions with ``pred_boxes``, ``scores``, ``pred_classes`` and optionally
            ``pred_masks`` (N×H×W) and ``pred_keypoints`` (N×K×3).
        img_id: the COCO image id.
    """
    if len(instances) == 0:
        return []
    boxes = BoxMode.convert(
        instances.pred_boxes.tensor.numpy(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS
    ).tolist()
    scores = instances.scores.tolist()
    classes = instances.pred_classes.tolist()
    rles = None
    if instances.has("pred_masks"):
        masks = np.asarray(instances.pred_masks, dtype=np.uint8)
        rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
        for rle in rles:
            rle["counts"] = rle["counts"].decode("utf-8")
    keypoints = None
    if instances.has("pred_keypoints"):
        keypoints = instances.pred_keypoints.clone()
        keypoints[:, :, :2] -= 0.5
        keypoints = keypoints.flatten(1).tolist()
    records = []
    for k in range(len(instances)):
        record: dict[str, Any] = {
            "image_id": img_id,
            "category_id": classes[k],
            "bbox": boxes[k],
            "score": scores[k],
        }
        if rles is not None:
            record["segmentation"] = rles[k]
        if keypoints is not None:
            record["keypoints"] = keypoints[k]
        records.append(record)
    return records


def _evaluate_predictions_on_coco(
    coco_gt: COCO,
    coco_results: list[dict],
    iou_type: str,
    kpt_oks_sigmas: Sequence[float] | None = None,
    img_ids: Sequence[int] | None = None,
    max_dets_per_image: list[int] | None = None,
) -> COCOeval:
    """Run COCOeval (evaluate, accumulate, summarize) for one IoU type on non-empty results.

    The records are not modified (loadRes gets copies).
    """
    # With a bbox in a segm record, pycocotools would take the box area as the instance area.
    dropped = ("bbox",) if iou_type == "segm" else ()
    coco_results = [{k: v for k, v in r.items() if k not in dropped} for r in coco_results]
    coco_dt = coco_gt.loadRes(coco_results)
    coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
    max_dets = max_dets_per_image or [1, 10, 100]
    coco_eval.params.maxDets = max_dets
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    if iou_type == "keypoints":
        if kpt_oks_sigmas:
            coco_eval.params.kpt_oks_sigmas = np.array(kpt_oks_sigmas)
        num_dt = len(coco_results[0]["keypoints"]) // 3
        num_gt = len(coco_eval.params.kpt_oks_sigmas)
        if num_dt != num_gt:
            raise ValueError(
                f"Predictions have {num_dt} keypoints but the OKS sigmas cover {num_gt}; "
                "set kpt_oks_sigmas (TEST.KEYPOINT_OKS_SIGMAS)."
            )
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    if max_dets[2] != 100:
        # summarize() computes the first AP at a fixed maxDets=100; recompute it at max_dets[2].
        precision = coco_eval.eval["precision"][:, :, :, 0, -1]
        precision = precision[precision > -1]
        coco_eval.stats[0] = np.mean(precision) if precision.size else -1
    return coco_eval


def _derive_coco_results(
    coco_eval: COCOeval | None, iou_type: str, class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """Summary and per-category AP in percent from an evaluated COCOeval (None: all NaN)."""
    metrics = _METRICS[iou_type]
    if coco_eval is None:
        logger.warning("No predictions from the model!")
        return {metric: float("nan") for metric in metrics}
    results = {
        metric: float(coco_eval.stats[idx] * 100) if coco_eval.stats[idx] >= 0 else float("nan")
        for idx, metric in enumerate(metrics)
    }
    table = tabulate([list(results.values())], headers=list(results), floatfmt=".3f")
    logger.info("Evaluation results for %s:\n%s", iou_type, table)
    if not np.isfinite(sum(results.values())):
        logger.info("Some metrics cannot be computed and are shown as NaN.")
    if not class_names or len(class_names) <= 1:
        return results

    # precision: (iou thresholds, recall thresholds, classes, area ranges, max dets)
    precisions = coco_eval.eval["precision"]
    if precisions.shape[2] != len(class_names):
        raise ValueError(
            f"COCOeval has {precisions.shape[2]} categories but there are {len(class_names)} "
            "thing_classes."
        )
    per_category = []
    for idx, name in enumerate(class_names):
        precision = precisions[:, :, idx, 0, -1]
        precision = precision[precision > -1]
        ap = float(np.mean(precision) * 100) if precision.size else float("nan")
        per_category.append((name, ap))
    num_cols = min(6, 2 * len(per_category))
    flat = list(itertools.chain(*per_category))
    rows = [flat[i : i + num_cols] for i in range(0, len(flat), num_cols)]
    table = tabulate(
        rows,
        tablefmt="pipe",
        floatfmt=".3f",
        headers=["category", "AP"] * (num_cols // 2),
        numalign="left",
    )
    logger.info("Per-category %s AP:\n%s", iou_type, table)
    results.update({f"AP-{name}": ap for name, ap in per_category})
    return results
