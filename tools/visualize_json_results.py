#!/usr/bin/env python
"""Draw instance predictions saved by ``COCOEvaluator`` next to the ground truth.

For each image of ``--dataset``, writes ``<output>/<image name>.png``: the predictions of
``--input`` (``coco_instances_results.json``) scoring above ``--conf-threshold`` on the left,
the dataset's annotations on the right. The results use the dataset's category ids; they are
mapped back to contiguous ids with the metadata's ``thing_dataset_id_to_contiguous_id``.

Usage: ``python tools/visualize_json_results.py --input JSON --output DIR [--dataset NAME]
[--conf-threshold T] [--scale S]`` (``--scale`` is a segtron addition).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from segtron.data import DatasetCatalog, MetadataCatalog
from segtron.data.detection_utils import read_image
from segtron.structures import Boxes, BoxMode, Instances
from segtron.utils.file_io import PathManager
from segtron.utils.logger import setup_logger
from segtron.utils.visualizer import Visualizer

logger = logging.getLogger("segtron.tools.visualize_json_results")


def create_instances(
    predictions: list[dict],
    image_size: tuple[int, int],
    conf_threshold: float,
    dataset_id_map: Callable[[int], int],
) -> Instances:
    """The predictions of one image above ``conf_threshold`` as `Instances`.

    Args:
        predictions: COCO result dicts ("bbox" in XYWH_ABS, "score", "category_id" and
            optionally "segmentation" as RLE).
        image_size: (height, width) of the image.
        conf_threshold: predictions scoring this much or less are dropped.
        dataset_id_map: maps a dataset category id to a contiguous class id.

    Returns:
        Instances with scores, pred_boxes, pred_classes and, when the results have
        segmentations, pred_masks (a list of RLE dicts).
    """
    chosen = [p for p in predictions if p["score"] > conf_threshold]
    instances = Instances(image_size)
    instances.scores = np.asarray([p["score"] for p in chosen], dtype=np.float32)
    boxes = np.asarray([p["bbox"] for p in chosen], dtype=np.float64).reshape(-1, 4)
    instances.pred_boxes = Boxes(BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS))
    instances.pred_classes = np.asarray([dataset_id_map(p["category_id"]) for p in chosen])
    if chosen and all("segmentation" in p for p in chosen):
        instances.pred_masks = [p["segmentation"] for p in chosen]
    return instances


def parse_args(in_args: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``in_args``, default ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(
        description="A script that visualizes the json predictions from COCO or LVIS dataset."
    )
    parser.add_argument("--input", required=True, help="JSON file produced by the model")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--dataset", help="name of the dataset", default="coco_2017_val")
    parser.add_argument("--conf-threshold", default=0.5, type=float, help="confidence threshold")
    parser.add_argument("--scale", type=float, default=1.0, help="output size / image size")
    return parser.parse_args(in_args)


def main(argv: Sequence[str] | None = None) -> None:
    """Write one side-by-side (predictions | ground truth) PNG per dataset image.

    Args:
        argv: the command-line arguments, default ``sys.argv[1:]``.

    Raises:
        ValueError: the dataset's metadata has no ``thing_dataset_id_to_contiguous_id``.
    """
    args = parse_args(argv)
    setup_logger()
    with PathManager.open(args.input, "r") as f:
        predictions = json.load(f)
    by_image = defaultdict(list)
    for prediction in predictions:
        by_image[prediction["image_id"]].append(prediction)

    dicts = list(DatasetCatalog.get(args.dataset))
    metadata = MetadataCatalog.get(args.dataset)
    id_map = metadata.get("thing_dataset_id_to_contiguous_id")
    if id_map is None:
        raise ValueError(
            f"Dataset '{args.dataset}' has no 'thing_dataset_id_to_contiguous_id' in its "
            "metadata, so the category ids of the results cannot be mapped to its classes."
        )
    os.makedirs(args.output, exist_ok=True)
    for dic in dicts:
        img = read_image(dic["file_name"], "RGB")
        instances = create_instances(
            by_image[dic["image_id"]], img.shape[:2], args.conf_threshold, id_map.__getitem__
        )
        drawn_pred = Visualizer(img, metadata, scale=args.scale).draw_instance_predictions(
            instances
        )
        drawn_gt = Visualizer(img, metadata, scale=args.scale).draw_dataset_dict(dic)
        side_by_side = np.concatenate((drawn_pred.get_image(), drawn_gt.get_image()), axis=1)
        stem = os.path.splitext(os.path.basename(dic["file_name"]))[0]
        with PathManager.open(os.path.join(args.output, stem + ".png"), "wb") as f:
            Image.fromarray(side_by_side).save(f, format="PNG")
    logger.info("Wrote %d images to %s", len(dicts), args.output)


if __name__ == "__main__":
    main()
