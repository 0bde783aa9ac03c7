"""Panoptic Quality (PQ, SQ, RQ) computed exactly as the COCO panoptic API does.

``pq_compute`` is a drop-in for ``panopticapi.evaluation.pq_compute``: same arguments, same
result dict, same matching rules. Per image, the intersections of every (ground-truth segment,
predicted segment) pair come from one joint histogram of the two id maps; GT areas come from the
GT JSON, predicted areas are counted in the predicted PNG. A pair is a true positive when its IoU
(with the predicted pixels that fall on VOID taken out of the union) is strictly above 0.5. An
unmatched non-crowd GT segment is a false negative; an unmatched prediction is a false positive
unless more than half of it lies on VOID or on a crowd region of its own category. Images are
scored in parallel over a pool of worker processes.

Differences from panopticapi, on purpose (the scores are the same): a group (Things or Stuff)
with no scored category gets 0 with ``n = 0`` instead of a ZeroDivisionError; input errors raise
``ValueError`` / ``FileNotFoundError`` with messages naming the file, image and segment; GT
images without a prediction (scored over the predicted images only, as panopticapi does) and GT
PNG segment ids missing from the GT JSON (ignored, as panopticapi does) are logged as warnings;
progress goes to the logger, not to stdout.

``tools/evaluate_panoptic.py --gt-json G --pred-json P`` prints the table and elapsed time.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from tabulate import tabulate

from segtron.utils.panoptic import rgb2id

__all__ = [
    "OFFSET",
    "VOID",
    "PQStat",
    "PQStatCat",
    "format_panoptic_results",
    "main",
    "pq_compute",
    "pq_compute_multi_core",
    "pq_compute_single_core",
    "pq_compute_single_image",
]

logger = logging.getLogger(__name__)

# Segment ids fit in 24 bits (RGB), so gt_id * OFFSET + pred_id is a unique key of a pair.
OFFSET = 256 * 256 * 256
VOID = 0

# Number of chunks handed to each worker process, so that a slow chunk does not stall the pool.
_CHUNKS_PER_WORKER = 4


class PQStatCat:
    """Sum of matched IoUs and counts of TP / FP / FN for one category."""

    def __init__(self) -> None:
        self.iou = 0.0
        self.tp = 0
        self.fp = 0
        self.fn = 0

    def __iadd__(self, other: PQStatCat) -> PQStatCat:
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self


class PQStat:
    """Per-category ``PQStatCat`` accumulator; ``a += b`` merges the statistics of ``b``.

    Attributes:
        pq_per_cat: category id -> `PQStatCat`.
        unlisted_gt_ids: GT PNG -> the non-VOID segment ids in it that its JSON does not list
            (ignored when scoring, as the COCO panoptic API does; `pq_compute` warns about them).
    """

    def __init__(self) -> None:
        self.pq_per_cat: defaultdict[int, PQStatCat] = defaultdict(PQStatCat)
        self.unlisted_gt_ids: dict[str, list[int]] = {}

    def __getitem__(self, category_id: int) -> PQStatCat:
        return self.pq_per_cat[category_id]

    def __iadd__(self, other: PQStat) -> PQStat:
        for category_id, stat in other.pq_per_cat.items():
            self.pq_per_cat[category_id] += stat
        self.unlisted_gt_ids.update(other.unlisted_gt_ids)
        return self

    def pq_average(
        self, categories: dict[int, dict], isthing: bool | None
    ) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
        """Average PQ, SQ and RQ over a group of categories.

        Args:
            categories: category id -> category dict (with an ``isthing`` field), as in the GT
                JSON's ``categories``.
            isthing: True for thing categories only, False for stuff only, None for all.

        Returns:
            ``({"pq", "sq", "rq", "n"}, {category_id: {"pq", "sq", "rq"}})``: the means over the
            ``n`` categories of the group with TP + FP + FN > 0, and the per-category values
            (0 for categories that were never seen on either side).
        """
        totals = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
        per_class: dict[int, dict[str, float]] = {}
        n = 0
        for category_id, info in categories.items():
            if isthing is not None and (info.get("isthing", 0) == 1) != isthing:
                continue
            stat = self.pq_per_cat.get(category_id, PQStatCat())
            denominator = stat.tp + 0.5 * stat.fp + 0.5 * stat.fn
            if denominator == 0:
                per_class[category_id] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            values = {
                "pq": stat.iou / denominator,
                "sq": stat.iou / stat.tp if stat.tp else 0.0,
                "rq": stat.tp / denominator,
            }
            per_class[category_id] = values
            for key, value in values.items():
                totals[key] += value
        means = {key: (value / n if n else 0.0) for key, value in totals.items()}
        return {**means, "n": n}, per_class


def pq_compute_single_image(
    gt_ann: dict,
    pred_ann: dict,
    pan_gt: np.ndarray,
    pan_pred: np.ndarray,
    categories: dict[int, dict],
    *,
    gt_png: str | None = None,
    pred_png: str | None = None,
) -> PQStat:
    """Score one image given its two decoded id maps.

    Args:
        gt_ann: the GT annotation (``image_id``, ``segments_info`` with ``id``, ``category_id``,
            ``area``, ``iscrowd``).
        pred_ann: the predicted annotation (``segments_info`` with ``id``, ``category_id``).
        pan_gt: H×W GT segment ids (0 = VOID).
        pan_pred: H×W predicted segment ids (0 = no prediction).
        categories: category id -> category dict.
        gt_png, pred_png: the PNG paths, named in errors and ``unlisted_gt_ids``.

    Returns:
        The statistics of this image.

    Raises:
        ValueError: the maps differ in size; a predicted id is in the PNG but not in the JSON (or
            the reverse); a predicted segment has an unknown category.
    """
    image_id = gt_ann["image_id"]
    where = f"Image {image_id}" + (f" (predicted PNG {pred_png})" if pred_png else "")
    if pan_gt.shape != pan_pred.shape:
        raise ValueError(
            f"{where}: the predicted PNG is {pan_pred.shape[1]}×{pan_pred.shape[0]} but the GT "
            f"PNG{f' {gt_png}' if gt_png else ''} is {pan_gt.shape[1]}×{pan_gt.shape[0]}."
        )
    gt_segms = {int(s["id"]): s for s in gt_ann["segments_info"]}
    pred_cats = {int(s["id"]): s["category_id"] for s in pred_ann["segments_info"]}

    # One joint histogram gives every intersection; predicted areas are its column sums.
    keys, counts = np.unique(
        pan_gt.astype(np.int64) * OFFSET + pan_pred.astype(np.int64), return_counts=True
    )
    pair_gt = keys // OFFSET
    pair_pred = keys % OFFSET
    pred_ids, pred_index = np.unique(pair_pred, return_inverse=True)
    pred_area_values = np.bincount(pred_index, weights=counts).astype(np.int64)
    pred_areas = dict(zip(pred_ids.tolist(), pred_area_values.tolist()))
    pred_areas.pop(VOID, None)

    for pred_id in pred_areas:
        if pred_id not in pred_cats:
            raise ValueError(
                f"{where}: segment id {pred_id} is in the predicted PNG but not in the "
                "predicted JSON."
            )
        if pred_cats[pred_id] not in categories:
            raise ValueError(
                f"{where}: predicted segment {pred_id} has unknown category_id "
                f"{pred_cats[pred_id]}."
            )
    missing = sorted(set(pred_cats) - set(pred_areas))
    if missing:
        raise ValueError(
            f"{where}: segment ids {missing} are in the predicted JSON but not in the "
            "predicted PNG."
        )

    intersections = dict(zip(zip(pair_gt.tolist(), pair_pred.tolist()), counts.tolist()))
    stat = PQStat()
    unlisted = sorted({int(i) for i in pair_gt.tolist() if i != VOID and i not in gt_segms})
    if unlisted:
        stat.unlisted_gt_ids[gt_png or f"image {image_id}"] = unlisted
    gt_matched: set[int] = set()
    pred_matched: set[int] = set()
    for (gt_id, pred_id), inter in intersections.items():
        gt_segm = gt_segms.get(gt_id)
        if gt_segm is None or pred_id not in pred_areas or gt_segm.get("iscrowd", 0) == 1:
            continue
        if gt_segm["category_id"] != pred_cats[pred_id]:
            continue
        union = (
            pred_areas[pred_id] + gt_segm["area"] - inter - intersections.get((VOID, pred_id), 0)
        )
        iou = inter / union
        if iou > 0.5:
            stat[gt_segm["category_id"]].tp += 1
            stat[gt_segm["category_id"]].iou += iou
            gt_matched.add(gt_id)
            pred_matched.add(pred_id)

    # Like panopticapi, the crowd region of a category is its last crowd segment in the JSON.
    crowd_by_category: dict[int, int] = {}
    for gt_id, gt_segm in gt_segms.items():
        if gt_id in gt_matched:
            continue
        if gt_segm.get("iscrowd", 0) == 1:
            crowd_by_category[gt_segm["category_id"]] = gt_id
        else:
            stat[gt_segm["category_id"]].fn += 1

    for pred_id, area in pred_areas.items():
        if pred_id in pred_matched:
            continue
        category_id = pred_cats[pred_id]
        ignored = intersections.get((VOID, pred_id), 0)
        if category_id in crowd_by_category:
            ignored += intersections.get((crowd_by_category[category_id], pred_id), 0)
        if ignored / area > 0.5:
            continue
        stat[category_id].fp += 1
    return stat


def _read_id_map(path: str, image_id: Any, role: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"Image {image_id}: the {role} PNG {path} does not exist.") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"Image {image_id}: cannot read the {role} PNG {path}: {err}") from err
    return rgb2id(rgb)


def pq_compute_single_core(
    proc_id: int,
    annotation_set: Sequence[tuple[dict, dict]],
    gt_folder: str,
    pred_folder: str,
    categories: dict[int, dict],
) -> PQStat:
    """Score a list of (GT annotation, predicted annotation) pairs in this process.

    Args:
        proc_id: index of this chunk (for the log).
        annotation_set: the matched annotation pairs.
        gt_folder: folder of the GT PNGs.
        pred_folder: folder of the predicted PNGs.
        categories: category id -> category dict.

    Returns:
        The summed statistics of these images.
    """
    stat = PQStat()
    for gt_ann, pred_ann in annotation_set:
        image_id = gt_ann["image_id"]
        gt_png = os.path.join(gt_folder, gt_ann["file_name"])
        pred_png = os.path.join(pred_folder, pred_ann["file_name"])
        pan_gt = _read_id_map(gt_png, image_id, "ground-truth")
        pan_pred = _read_id_map(pred_png, image_id, "predicted")
        stat += pq_compute_single_image(
            gt_ann, pred_ann, pan_gt, pan_pred, categories, gt_png=gt_png, pred_png=pred_png
        )
    logger.debug("PQ chunk %d: %d images scored.", proc_id, len(annotation_set))
    return stat


def _score_chunk(args: tuple) -> PQStat:
    return pq_compute_single_core(*args)


def pq_compute_multi_core(
    matched_annotations_list: Sequence[tuple[dict, dict]],
    gt_folder: str,
    pred_folder: str,
    categories: dict[int, dict],
    num_workers: int | None = None,
) -> PQStat:
    """Score all annotation pairs, in chunks spread over a pool of worker processes.

    Args:
        matched_annotations_list: the (GT annotation, predicted annotation) pairs.
        gt_folder: folder of the GT PNGs.
        pred_folder: folder of the predicted PNGs.
        categories: category id -> category dict.
        num_workers: number of processes; None means min(cpu_count, 8); 1 scores in this
            process.

    Returns:
        The summed statistics of all images.
    """
    if num_workers is None:
        num_workers = min(multiprocessing.cpu_count(), 8)
    num_images = len(matched_annotations_list)
    num_workers = max(1, min(num_workers, num_images))
    if num_workers == 1:
        return pq_compute_single_core(
            0, matched_annotations_list, gt_folder, pred_folder, categories
        )
    chunk_size = math.ceil(num_images / (num_workers * _CHUNKS_PER_WORKER))
    tasks = [
        (
            i,
            matched_annotations_list[start : start + chunk_size],
            gt_folder,
            pred_folder,
            categories,
        )
        for i, start in enumerate(range(0, num_images, chunk_size))
    ]
    logger.info("Scoring %d images with %d processes.", num_images, num_workers)
    total = PQStat()
    with multiprocessing.Pool(processes=num_workers) as pool:
        for stat in pool.imap(_score_chunk, tasks):
            total += stat
    return total


def _load_json(path: str, role: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"The {role} JSON file {path} does not exist.") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"The {role} JSON file {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or "annotations" not in data:
        raise ValueError(f"The {role} JSON file {path} has no 'annotations' list.")
    return data


def _match_annotations(
    gt_json: dict, pred_json: dict, pred_json_file: str
) -> list[tuple[dict, dict]]:
    pred_by_image: dict[Any, dict] = {}
    for ann in pred_json["annotations"]:
        if ann["image_id"] in pred_by_image:
            raise ValueError(
                f"{pred_json_file}: image {ann['image_id']} has more than one prediction."
            )
        pred_by_image[ann["image_id"]] = ann
    gt_ids = {ann["image_id"] for ann in gt_json["annotations"]}
    extra = [image_id for image_id in pred_by_image if image_id not in gt_ids]
    if extra:
        raise ValueError(
            f"{pred_json_file}: {len(extra)} predictions are for images that are not in the "
            f"ground truth, e.g. image ids {extra[:5]}."
        )
    missing = [image_id for image_id in gt_ids if image_id not in pred_by_image]
    if missing:
        logger.warning(
            f"{pred_json_file}: no prediction for {len(missing)} of the {len(gt_ids)} "
            f"ground-truth images, e.g. image ids {sorted(missing, key=str)[:5]}; like the COCO "
            "panoptic API, PQ is computed over the predicted images only."
        )
    return [
        (ann, pred_by_image[ann["image_id"]])
        for ann in gt_json["annotations"]
        if ann["image_id"] in pred_by_image
    ]


def _default_folder(json_file: str) -> str:
    return json_file[: -len(".json")] if json_file.endswith(".json") else json_file


def pq_compute(
    gt_json_file: str,
    pred_json_file: str,
    gt_folder: str | None = None,
    pred_folder: str | None = None,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """Compute PQ, SQ and RQ of COCO-panoptic-format predictions against the ground truth.

    Args:
        gt_json_file: GT JSON (``annotations`` and ``categories``).
        pred_json_file: predicted JSON (``annotations``; at most one per GT image).
        gt_folder: folder of the GT PNGs; default: ``gt_json_file`` without ``.json``.
        pred_folder: folder of the predicted PNGs; default: ``pred_json_file`` without ``.json``.
        num_workers: processes to use; None means min(cpu_count, 8); 1 scores in this process.

    Returns:
        ``{"All" | "Things" | "Stuff": {"pq", "sq", "rq", "n"}, "per_class": {category_id:
        {"pq", "sq", "rq"}}}``, values as fractions in [0, 1].

    Raises:
        FileNotFoundError: a JSON file, a folder or a PNG is missing.
        ValueError: a JSON file is malformed, a prediction is for an image that is not in the
            ground truth, a PNG cannot be decoded, or a predicted PNG and its JSON disagree.
    """
    gt_json = _load_json(gt_json_file, "ground-truth")
    pred_json = _load_json(pred_json_file, "prediction")
    if "categories" not in gt_json:
        raise ValueError(f"The ground-truth JSON file {gt_json_file} has no 'categories' list.")
    gt_folder = gt_folder or _default_folder(gt_json_file)
    pred_folder = pred_folder or _default_folder(pred_json_file)
    for folder, role in ((gt_folder, "ground-truth"), (pred_folder, "prediction")):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"The {role} PNG folder {folder} does not exist.")
    categories = {cat["id"]: cat for cat in gt_json["categories"]}
    matched = _match_annotations(gt_json, pred_json, pred_json_file)
    stat = pq_compute_multi_core(matched, gt_folder, pred_folder, categories, num_workers)
    for gt_png, ids in sorted(stat.unlisted_gt_ids.items()):
        logger.warning(
            f"The ground-truth PNG {gt_png} has segment ids {ids} missing from its JSON's "
            "segments_info; they are ignored (not VOID), as the COCO panoptic API does."
        )

    results: dict[str, Any] = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = stat.pq_average(categories, isthing)
        if isthing is None:
            results["per_class"] = per_class
    return results


def format_panoptic_results(results: dict[str, Any]) -> str:
    """The All / Things / Stuff rows of a ``pq_compute`` result as a table, in percent."""
    rows = [
        [name] + [100 * results[name][key] for key in ("pq", "sq", "rq")] + [results[name]["n"]]
        for name in ("All", "Things", "Stuff")
    ]
    return tabulate(
        rows,
        headers=["", "PQ", "SQ", "RQ", "#categories"],
        tablefmt="pipe",
        floatfmt=".3f",
        stralign="center",
        numalign="center",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: score a prediction JSON + PNG folder against the ground truth.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 when the inputs are invalid.
    """
    parser = argparse.ArgumentParser(
        description="Panoptic Quality of COCO-panoptic predictions (COCO panoptic API rules)."
    )
    parser.add_argument("--gt-json", required=True, help="ground-truth JSON file")
    parser.add_argument("--pred-json", required=True, help="predictions JSON file")
    parser.add_argument(
        "--gt-folder", help="ground-truth PNG folder (default: GT JSON minus .json)"
    )
    parser.add_argument(
        "--pred-folder", help="predicted PNG folder (default: pred JSON minus .json)"
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: ≤ 8 CPUs)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        results = pq_compute(
            args.gt_json, args.pred_json, args.gt_folder, args.pred_folder, args.workers
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_panoptic_results(results))
    print(f"Time elapsed: {time.perf_counter() - start:.2f} seconds")
    return 0
