"""`PanopticDeeplabDatasetMapper`: reads a COCO-panoptic style dict and makes the targets."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from segtron.config import configurable
from segtron.data import DATASET_MAPPER_REGISTRY, MetadataCatalog
from segtron.data import detection_utils as utils
from segtron.data import transforms as T
from segtron.utils.panoptic import rgb2id

from .target_generator import PanopticDeepLabTargetGenerator

__all__ = ["PanopticDeeplabDatasetMapper"]

logger = logging.getLogger(__name__)


@DATASET_MAPPER_REGISTRY.register()
class PanopticDeeplabDatasetMapper:
    """Map a panoptic dataset dict to Panoptic-DeepLab's training input.

    Reads the image (``file_name``) and the panoptic PNG (``pan_seg_file_name``), applies the
    same random resize, crop and flip to both, and adds ``image`` and the targets of
    `PanopticDeepLabTargetGenerator` (``sem_seg``, ``center``, ``offset``, their weights...)
    from ``segments_info``, whose ``category_id`` are contiguous ids (as the standard COCO /
    Cityscapes panoptic loaders give them). Registered in ``DATASET_MAPPER_REGISTRY``: configs
    select it with ``INPUT.DATASET_MAPPER_NAME: "PanopticDeeplabDatasetMapper"``.
    """

    @configurable
    def __init__(
        self,
        *,
        augmentations: list[T.Augmentation | T.Transform],
        image_format: str,
        panoptic_target_generator: Callable[[np.ndarray, list[dict]], dict[str, Any]],
    ) -> None:
        """Create the mapper.

        Args:
            augmentations: augmentations or transforms, applied in order.
            image_format: the format given to `read_image` ("BGR", "RGB", ...).
            panoptic_target_generator: called as ``generator(panoptic_ids, segments_info)``;
                returns the targets to add.
        """
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.panoptic_target_generator = panoptic_target_generator
        logger.info(f"[PanopticDeeplabDatasetMapper] Augmentations: {self.augmentations}")

    @classmethod
    def from_config(cls, cfg: Any, is_train: bool = True) -> dict[str, Any]:
        """Arguments from INPUT.* and the metadata of DATASETS.TRAIN[0].

        Training: resize (INPUT.MIN/MAX_SIZE_TRAIN), crop (INPUT.CROP) and horizontal flip, as
        in Detectron2; otherwise the test resize only.
        """
        if is_train:
            augs: list[T.Augmentation] = [
                T.ResizeShortestEdge(
                    cfg.INPUT.MIN_SIZE_TRAIN,
                    cfg.INPUT.MAX_SIZE_TRAIN,
                    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
                )
            ]
            if cfg.INPUT.CROP.ENABLED:
                augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
            augs.append(T.RandomFlip())
        else:
            augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)]
        if not cfg.DATASETS.TRAIN:
            raise ValueError(
                "PanopticDeeplabDatasetMapper reads the thing classes from the metadata of "
                "cfg.DATASETS.TRAIN[0], which is empty: set DATASETS.TRAIN."
            )
        dataset = cfg.DATASETS.TRAIN[0]
        meta = MetadataCatalog.get(dataset)
        if not meta.get("thing_dataset_id_to_contiguous_id", None):
            raise ValueError(
                f"The metadata of {dataset!r} (DATASETS.TRAIN[0]) has no "
                "thing_dataset_id_to_contiguous_id; Panoptic-DeepLab trains on a standard "
                "panoptic dataset such as 'coco_2017_train_panoptic' or "
                "'synthetic_train_panoptic'."
            )
        generator = PanopticDeepLabTargetGenerator(
            ignore_label=meta.get("ignore_label", 255),
            thing_ids=list(meta.thing_dataset_id_to_contiguous_id.values()),
            sigma=cfg.INPUT.GAUSSIAN_SIGMA,
            ignore_stuff_in_offset=cfg.INPUT.IGNORE_STUFF_IN_OFFSET,
            small_instance_area=cfg.INPUT.SMALL_INSTANCE_AREA,
            small_instance_weight=cfg.INPUT.SMALL_INSTANCE_WEIGHT,
            ignore_crowd_in_semantic=cfg.INPUT.IGNORE_CROWD_IN_SEMANTIC,
        )
        return {
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "panoptic_target_generator": generator,
        }

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        """Map one dataset dict; the input is not modified.

        Args:
            dataset_dict: one image's dict with ``file_name``, ``pan_seg_file_name`` and
                ``segments_info``.

        Returns:
            The dict with ``image`` (C×H×W uint8 tensor) and the targets added.

        Raises:
            KeyError: the dict has no panoptic annotation.
        """
        missing = [k for k in ("pan_seg_file_name", "segments_info") if k not in dataset_dict]
        if missing:
            raise KeyError(
                f"{dataset_dict.get('file_name')}: the dataset dict has no {missing}. "
                "Panoptic-DeepLab trains on standard panoptic datasets (e.g. "
                "'coco_2017_train_panoptic', 'synthetic_train_panoptic'), not on the "
                "'_separated' or instance forms."
            )
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        # The RGB-encoded ids go through the transforms as a label map (nearest resizing).
        pan_seg_gt = utils.read_image(dataset_dict.pop("pan_seg_file_name"), "RGB")
        aug_input = T.AugInput(image, sem_seg=pan_seg_gt)
        self.augmentations(aug_input)
        image, pan_seg_gt = aug_input.image, aug_input.sem_seg
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        targets = self.panoptic_target_generator(rgb2id(pan_seg_gt), dataset_dict["segments_info"])
        dataset_dict.update(targets)
        return dataset_dict
