"""`DatasetMapper`: turns one dataset dict into the model's input dict; the mapper registry.

Mirrors ``detectron2.data.dataset_mapper``: read the image, apply augmentations consistently to
the image, the semantic label map and the instance annotations, and build tensors.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
from fvcore.common.registry import Registry
from fvcore.transforms.transform import TransformList

from segtron.config import configurable
from segtron.data import detection_utils as utils
from segtron.data import transforms as T

__all__ = ["DATASET_MAPPER_REGISTRY", "DatasetMapper"]

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Training mappers, selected by ``cfg.INPUT.DATASET_MAPPER_NAME`` (default ``"DatasetMapper"``).

A registered object is called as ``obj(cfg, is_train)`` and returns a callable that turns one
dataset dict into the model's input dict.
"""

logger = logging.getLogger(__name__)


@DATASET_MAPPER_REGISTRY.register()
class DatasetMapper:
    """Map a dataset dict (Detectron2's standard format) to what models take.

    The output dict keeps the input's fields and adds "image" (C×H×W uint8 tensor in
    `image_format`), "sem_seg" (H×W int64 tensor, when the input has "sem_seg_file_name"),
    "instances" (`Instances` with gt_boxes, gt_classes and optionally gt_masks, gt_keypoints;
    training only) and "proposals" (when precomputed proposals are used). Crowd annotations
    are dropped in training; at test time all annotations are removed.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list[T.Augmentation | T.Transform],
        image_format: str,
        use_instance_mask: bool = False,
        use_keypoint: bool = False,
        instance_mask_format: str = "polygon",
        keypoint_hflip_indices: np.ndarray | None = None,
        precomputed_proposal_topk: int | None = None,
        recompute_boxes: bool = False,
    ) -> None:
        """Create the mapper.

        Args:
            is_train: whether the mapper prepares training data.
            augmentations: augmentations or transforms, applied in order.
            image_format: the format given to `read_image` ("BGR", "RGB", ...).
            use_instance_mask: keep instance masks ("segmentation") as gt_masks.
            use_keypoint: keep keypoints as gt_keypoints.
            instance_mask_format: "polygon" or "bitmask".
            keypoint_hflip_indices: see `transform_keypoint_annotations`.
            precomputed_proposal_topk: when set, load this many precomputed proposals.
            recompute_boxes: replace gt_boxes by the boxes of the transformed masks (useful
                after crops); requires `use_instance_mask`.
        """
        if recompute_boxes and not use_instance_mask:
            raise ValueError("recompute_boxes=True needs use_instance_mask=True.")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.use_instance_mask = use_instance_mask
        self.instance_mask_format = instance_mask_format
        self.use_keypoint = use_keypoint
        self.keypoint_hflip_indices = keypoint_hflip_indices
        self.proposal_topk = precomputed_proposal_topk
        self.recompute_boxes = recompute_boxes
        mode = "training" if is_train else "inference"
        logger.info(f"[DatasetMapper] Augmentations used in {mode}: {self.augmentations}")

    @classmethod
    def from_config(cls, cfg: Any, is_train: bool = True) -> dict[str, Any]:
        """Arguments from INPUT.*, MODEL.MASK_ON/KEYPOINT_ON/LOAD_PROPOSALS and DATASETS.*."""
        augs = utils.build_augmentation(cfg, is_train)
        recompute_boxes = False
        if cfg.INPUT.CROP.ENABLED and is_train:
            augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
            recompute_boxes = cfg.MODEL.MASK_ON
        ret = {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "use_instance_mask": cfg.MODEL.MASK_ON,
            "instance_mask_format": cfg.INPUT.MASK_FORMAT,
            "use_keypoint": cfg.MODEL.KEYPOINT_ON,
            "recompute_boxes": recompute_boxes,
        }
        if cfg.MODEL.KEYPOINT_ON:
            ret["keypoint_hflip_indices"] = utils.create_keypoint_hflip_indices(cfg.DATASETS.TRAIN)
        if cfg.MODEL.LOAD_PROPOSALS:
            ret["precomputed_proposal_topk"] = (
                cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN
                if is_train
                else cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST
            )
        return ret

    def _transform_annotations(
        self, dataset_dict: dict[str, Any], transforms: TransformList, image_shape: tuple[int, int]
    ) -> None:
        annos = []
        for obj in dataset_dict.pop("annotations"):
            if obj.get("iscrowd", 0) != 0:
                continue
            if not self.use_instance_mask:
                obj.pop("segmentation", None)
            if not self.use_keypoint:
                obj.pop("keypoints", None)
            annos.append(
                utils.transform_instance_annotations(
                    obj,
                    transforms,
                    image_shape,
                    keypoint_hflip_indices=self.keypoint_hflip_indices,
                )
            )
        instances = utils.annotations_to_instances(
            annos, image_shape, mask_format=self.instance_mask_format
        )
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)

    def _read_sem_seg(self, dataset_dict: dict[str, Any]) -> np.ndarray | None:
        """Pop the dict's semantic label source and return the H×W label map (None if absent).

        Subclasses that derive labels (and ``annotations``) from other files override this.
        """
        if "sem_seg_file_name" not in dataset_dict:
            return None
        return utils.read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        """Map one dataset dict; the input is not modified.

        Args:
            dataset_dict: one image's dict ("file_name", optional "annotations",
                "sem_seg_file_name", "height", "width", ...).

        Returns:
            The model's input dict (see the class docstring).
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        sem_seg_gt = self._read_sem_seg(dataset_dict)

        aug_input = T.AugInput(image, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, sem_seg_gt = aug_input.image, aug_input.sem_seg
        image_shape = image.shape[:2]

        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(
                dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk
            )

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
