"""Semantic segmentation metrics (mIoU, fwIoU, mACC, pACC) from one confusion matrix.

``compute_confusion_matrix`` and ``metrics_from_confusion_matrix`` are the two steps on plain
arrays (also used by the classical baselines); ``SemSegEvaluator`` applies them to a model's
``sem_seg`` outputs against the label PNGs of a registered dataset.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image

from segtron.data import DatasetCatalog, MetadataCatalog
from segtron.evaluation.evaluator import DatasetEvaluator
from segtron.utils.comm import all_gather, is_main_process, synchronize
from segtron.utils.file_io import PathManager

__all__ = [
    "SemSegEvaluator",
    "compute_confusion_matrix",
    "load_sem_seg_png",
    "metrics_from_confusion_matrix",
]

logger = logging.getLogger(__name__)


def load_sem_seg_png(file_name: str, dtype: type | np.dtype = int) -> np.ndarray:
    """Read a label image (one class id per pixel) into an H×W array.

    Args:
        file_name: path of the PNG, opened through ``PathManager``.
        dtype: dtype of the returned array.
    """
    with PathManager.open(file_name, "rb") as f:
        return np.array(Image.open(f), dtype=dtype)


def compute_confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int | None = None
) -> np.ndarray:
    """Count pixels per (predicted class, ground-truth class) pair.

    Args:
        pred: predicted class ids, any shape, values in ``[0, num_classes)``.
        gt: ground-truth class ids with the shape of ``pred``; pixels equal to ``ignore_label``
            are left out.
        num_classes: number of classes.
        ignore_label: the ground-truth value to ignore, or None.

    Returns:
        An int64 array ``m`` of shape (num_classes, num_classes) where ``m[p, g]`` counts the
        pixels predicted ``p`` whose ground truth is ``g``.

    Raises:
        ValueError: when the shapes differ or a value is outside ``[0, num_classes)``.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"Prediction shape {pred.shape} differs from ground truth {gt.shape}.")
    pred = pred.astype(np.int64).ravel()
    gt = gt.astype(np.int64).ravel()
    if ignore_label is not None:
        keep = gt != ignore_label
        pred, gt = pred[keep], gt[keep]
    for kind, values in (("Ground-truth", gt), ("Predicted", pred)):
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.size:
            raise ValueError(
                f"{kind} labels {sorted(set(bad.tolist()))[:10]} are outside [0, {num_classes})"
                f" and are not the ignore label {ignore_label}."
            )
    counts = np.bincount(num_classes * pred + gt, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def metrics_from_confusion_matrix(
    conf_matrix: np.ndarray, class_names: Sequence[str] | None = None
) -> OrderedDict[str, float]:
    """Semantic segmentation metrics, in percent, from a confusion matrix.

    As in Detectron2, a class with no ground-truth pixel has NaN IoU and accuracy and is left
    out of every mean; fwIoU weights each IoU by the class's share of ground-truth pixels.

    Args:
        conf_matrix: (N, N) counts indexed ``[predicted, ground truth]``, as returned by
            ``compute_confusion_matrix``.
        class_names: N names for the per-class keys; defaults to the class indices.

    Returns:
        ``mIoU``, ``fwIoU``, ``IoU-<name>`` for every class, ``mACC``, ``pACC`` and
        ``ACC-<name>`` for every class.
    """
    num_classes = conf_matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a {num_classes}-class confusion matrix.")
    conf = conf_matrix.astype(np.float64)
    tp = np.diagonal(conf)
    pos_gt = conf.sum(axis=0)
    pos_pred = conf.sum(axis=1)
    union = pos_gt + pos_pred - tp
    valid = pos_gt > 0
    acc = np.full(num_classes, np.nan)
    iou = np.full(num_classes, np.nan)
    acc[valid] = tp[valid] / pos_gt[valid]
    iou[valid] = tp[valid] / union[valid]
    total_gt = pos_gt.sum()
    if valid.any():
        miou = float(np.mean(iou[valid]))
        fwiou = float(np.sum(iou[valid] * pos_gt[valid]) / total_gt)
        macc = float(np.mean(acc[valid]))
        pacc = float(tp.sum() / total_gt)
    else:
        miou = fwiou = macc = pacc = float("nan")

    res: OrderedDict[str, float] = OrderedDict()
    res["mIoU"] = 100 * miou
    res["fwIoU"] = 100 * fwiou
    for name, value in zip(names, iou):
        res[f"IoU-{name}"] = 100 * float(value)
    res["mACC"] = 100 * macc
    res["pACC"] = 100 * pacc
    for name, value in zip(names, acc):
        res[f"ACC-{name}"] = 100 * float(value)
    return res


def _contiguous_id_to_dataset_id(meta: Any) -> dict[int, int] | None:
    """The dataset category id of each predicted label, from the metadata's id maps.

    Labels are the stuff map's contiguous ids; on a standard panoptic dataset, where things
    and stuff share one contiguous range without overlap, the thing map's too.
    """
    stuff_map = meta.get("stuff_dataset_id_to_contiguous_id", None)
    if stuff_map is None:
        return None
    reverse = {v: k for k, v in stuff_map.items()}
    thing_map = meta.get("thing_dataset_id_to_contiguous_id", None) or {}
    if reverse.keys().isdisjoint(thing_map.values()):
        reverse.update({v: k for k, v in thing_map.items()})
    return reverse


class SemSegEvaluator(DatasetEvaluator):
    """Evaluate ``sem_seg`` outputs (C×H×W scores) against a dataset's label PNGs.

    The ground truth of an input is read from its ``"sem_seg_file_name"`` or, when the mapper
    dropped that key, from the dataset dict in ``DatasetCatalog`` with the same ``"file_name"``.
    The prediction is the argmax over C; it must have the size of the label image.

    Args:
        dataset_name: a registered dataset; its metadata gives ``stuff_classes`` and
            ``ignore_label`` (default 255 when the metadata has none).
        distributed: gather results from every process; only the main process reports.
        output_dir: when set, ``sem_seg_predictions.json`` (one RLE per predicted class and
            image) and ``sem_seg_evaluation.pth`` (the results) are written there.
        sem_seg_loading_fn: reads a label file given ``(file_name, dtype)``.
        num_classes: overrides ``len(stuff_classes)``.
        ignore_label: overrides the metadata's ``ignore_label``.
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        sem_seg_loading_fn: Callable[[str, type], np.ndarray] = load_sem_seg_png,
        num_classes: int | None = None,
        ignore_label: int | None = None,
    ) -> None:
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._sem_seg_loading_fn = sem_seg_loading_fn
        self._cpu_device = torch.device("cpu")
        meta = MetadataCatalog.get(dataset_name)
        stuff_classes = meta.get("stuff_classes")
        if num_classes is None:
            if stuff_classes is None:
                raise ValueError(
                    f"Dataset '{dataset_name}' has no stuff_classes; pass num_classes."
                )
            num_classes = len(stuff_classes)
        if stuff_classes is not None and len(stuff_classes) != num_classes:
            raise ValueError(
                f"num_classes={num_classes} but '{dataset_name}' has {len(stuff_classes)} "
                "stuff_classes."
            )
        self._num_classes = num_classes
        self._class_names = list(stuff_classes or [str(i) for i in range(num_classes)])
        self._ignore_label = (
            ignore_label if ignore_label is not None else meta.get("ignore_label", 255)
        )
        self._contiguous_id_to_dataset_id = _contiguous_id_to_dataset_id(meta)
        self._file_to_gt_file: dict[str, str] | None = None
        self.reset()

    def reset(self) -> None:
        self._conf_matrix = np.zeros((self._num_classes, self._num_classes), dtype=np.int64)
        self._predictions: list[dict] = []

    def _gt_file(self, input_dict: dict) -> str:
        if "sem_seg_file_name" in input_dict:
            return input_dict["sem_seg_file_name"]
        if self._file_to_gt_file is None:
            self._file_to_gt_file = {
                d["file_name"]: d["sem_seg_file_name"]
                for d in DatasetCatalog.get(self._dataset_name)
            }
        return self._file_to_gt_file[input_dict["file_name"]]

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for input_dict, output in zip(inputs, outputs):
            pred = output["sem_seg"].argmax(dim=0).to(self._cpu_device).numpy()
            gt_file = self._gt_file(input_dict)
            gt = self._sem_seg_loading_fn(gt_file, int)
            try:
                self._conf_matrix += compute_confusion_matrix(
                    pred, gt, self._num_classes, self._ignore_label
                )
            except ValueError as e:
                raise ValueError(f"Cannot evaluate against '{gt_file}': {e}") from e
            if self._output_dir:
                self._predictions.extend(self.encode_json_sem_seg(pred, input_dict["file_name"]))

    def encode_json_sem_seg(self, sem_seg: np.ndarray, input_file_name: str) -> list[dict]:
        """One COCO-style RLE record per class present in ``sem_seg``.

        Args:
            sem_seg: H×W predicted class ids.
            input_file_name: the image's file name, stored in each record.
        """
        records = []
        for label in np.unique(sem_seg).tolist():
            category_id = (
                self._contiguous_id_to_dataset_id[label]
                if self._contiguous_id_to_dataset_id is not None
                else label
            )
            rle = mask_util.encode(np.asfortranarray((sem_seg == label)[:, :, None], np.uint8))[0]
            rle["counts"] = rle["counts"].decode("utf-8")
            records.append(
                {"file_name": input_file_name, "category_id": category_id, "segmentation": rle}
            )
        return records

    def evaluate(self) -> OrderedDict[str, dict[str, float]] | None:
        """Compute the metrics over everything processed (on the main process only)."""
        conf_matrix = self._conf_matrix
        predictions = self._predictions
        if self._distributed:
            synchronize()
            conf_matrix = sum(all_gather(self._conf_matrix))
            predictions = [p for chunk in all_gather(self._predictions) for p in chunk]
            if not is_main_process():
                return None
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "sem_seg_predictions.json")
            with PathManager.open(path, "w") as f:
                f.write(json.dumps(predictions))
        res = metrics_from_confusion_matrix(conf_matrix, self._class_names)
        if self._output_dir:
            with PathManager.open(
                os.path.join(self._output_dir, "sem_seg_evaluation.pth"), "wb"
            ) as f:
                torch.save(res, f)
        results = OrderedDict(sem_seg=res)
        logger.info("Semantic segmentation results on %s: %s", self._dataset_name, dict(res))
        return results
