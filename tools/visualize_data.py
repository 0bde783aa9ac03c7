#!/usr/bin/env python
"""Draw the ground truth of a config's training datasets, as annotated or as the model sees it.

``--source annotation`` draws the dataset dicts of ``cfg.DATASETS.TRAIN`` (instances, semantic
and panoptic annotations); ``--source dataloader`` draws the augmented training images of
``build_detection_train_loader(cfg)`` with their ``instances`` and ``sem_seg`` targets. The
training loader never ends: stop it with ``--num-images`` (a segtron addition, as is ``--scale``).

Usage: ``python tools/visualize_data.py --source {annotation,dataloader} --config-file CFG
[--output-dir DIR] [--show] [--num-images N] [--scale S] [KEY VALUE ...]``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import cv2

from segtron.config import CfgNode, get_cfg
from segtron.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from segtron.data import detection_utils as utils
from segtron.data.build import filter_images_with_few_keypoints
from segtron.structures import Instances
from segtron.utils.logger import setup_logger
from segtron.utils.visualizer import VisImage, Visualizer

logger = logging.getLogger("segtron.tools.visualize_data")


def setup(args: argparse.Namespace) -> CfgNode:
    """The frozen config: defaults, then ``--config-file``, then the trailing KEY VALUE pairs."""
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.freeze()
    return cfg


def parse_args(in_args: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``in_args``, default ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description="Visualize ground-truth data")
    parser.add_argument(
        "--source",
        choices=["annotation", "dataloader"],
        required=True,
        help="draw the dataset annotations, or the training data loader's output (augmented)",
    )
    parser.add_argument("--config-file", metavar="FILE", help="path to config file")
    parser.add_argument("--output-dir", default="./", help="path to output directory")
    parser.add_argument("--show", action="store_true", help="show output in a window")
    parser.add_argument(
        "--num-images", type=int, default=None, help="stop after drawing this many images"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="output size / image size")
    parser.add_argument(
        "opts",
        help="Modify config options using the command-line 'KEY VALUE' pairs",
        default=None,
        nargs=argparse.REMAINDER,
    )
    return parser.parse_args(in_args)


def _annotations(cfg: CfgNode, metadata: Any, scale: float) -> Iterator[tuple[VisImage, str]]:
    """The dataset dicts of DATASETS.TRAIN, drawn."""
    dicts = list(itertools.chain.from_iterable(DatasetCatalog.get(k) for k in cfg.DATASETS.TRAIN))
    if cfg.MODEL.KEYPOINT_ON:
        dicts = filter_images_with_few_keypoints(dicts, 1)
    for dic in dicts:
        img = utils.read_image(dic["file_name"], "RGB")
        visualizer = Visualizer(img, metadata=metadata, scale=scale)
        stem = os.path.splitext(os.path.basename(dic["file_name"]))[0]
        yield visualizer.draw_dataset_dict(dic), stem + ".png"


def _dataloader(cfg: CfgNode, metadata: Any, scale: float) -> Iterator[tuple[VisImage, str]]:
    """The images of the training loader (after augmentation) with their targets, drawn."""
    count = 0
    for batch in build_detection_train_loader(cfg):
        for per_image in batch:
            img = per_image["image"].permute(1, 2, 0).cpu().numpy()
            img = utils.convert_image_to_rgb(img, cfg.INPUT.FORMAT)
            visualizer = Visualizer(img, metadata=metadata, scale=scale)
            if "sem_seg" in per_image:
                visualizer.draw_sem_seg(per_image["sem_seg"], area_threshold=0, alpha=0.5)
            if "instances" in per_image:
                visualizer.draw_instance_predictions(_as_predictions(per_image["instances"]))
            stem = os.path.splitext(os.path.basename(per_image["file_name"]))[0]
            yield visualizer.output, f"{count:05d}_{stem}.png"
            count += 1


def _as_predictions(targets: Instances) -> Instances:
    """Ground-truth instances renamed as predictions (boxes, classes, masks; no scores)."""
    fields = {"gt_boxes": "pred_boxes", "gt_classes": "pred_classes", "gt_masks": "pred_masks"}
    predictions = Instances(targets.image_size)
    for gt_name, pred_name in fields.items():
        if targets.has(gt_name):
            predictions.set(pred_name, targets.get(gt_name))
    return predictions


def _can_show() -> bool:
    return sys.platform in ("win32", "darwin") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Draw the images and save them to ``--output-dir`` (or show them with ``--show``).

    Args:
        argv: the command-line arguments, default ``sys.argv[1:]``.
    """
    args = parse_args(argv)
    setup_logger()
    cfg = setup(args)
    os.makedirs(args.output_dir, exist_ok=True)
    metadata = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    show = args.show
    if show and not _can_show():
        logger.warning("--show: no display found; saving the images to %s.", args.output_dir)
        show = False
    draw = _annotations if args.source == "annotation" else _dataloader
    for vis, file_name in itertools.islice(draw(cfg, metadata, args.scale), args.num_images):
        if show:
            try:
                cv2.imshow("window", vis.get_image()[:, :, ::-1])
                cv2.waitKey()
                continue
            except cv2.error as err:
                logger.warning("Cannot open a window (%s); saving the images instead.", err)
                show = False
        path = os.path.join(args.output_dir, file_name)
        logger.info("Saving to %s ...", path)
        vis.save(path)


if __name__ == "__main__":
    main()
