"""`PanopticSeparatedDatasetMapper`: Panoptic FPN's "separated" targets from a panoptic PNG.

Panoptic FPN and UPSNet train on instance annotations (boxes, classes 0..T-1, masks) plus
semantic labels where 0 is "any thing", 1..S the stuff classes and 255 VOID. COCO and the
synthetic dataset ship that form as files (``..._panoptic_separated``); other datasets, such as
Cityscapes, have only the standard panoptic form (``pan_seg_file_name`` + ``segments_info``).
This mapper builds the separated targets from the standard form on the fly, then augments
them as the core `DatasetMapper` does. It is selected for training with
``INPUT.DATASET_MAPPER_NAME: "PanopticSeparatedDatasetMapper"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pycocotools.mask as mask_util

from segtron.config import configurable
from segtron.data import detection_utils as utils
from segtron.data.catalog import MetadataCatalog
from segtron.data.dataset_mapper import DATASET_MAPPER_REGISTRY, DatasetMapper
from segtron.structures import BoxMode
from segtron.utils.panoptic import rgb2id

__all__ = ["PanopticSeparatedDatasetMapper", "separate_panoptic"]

_FIX = (
    "PanopticSeparatedDatasetMapper reads standard panoptic dicts (pan_seg_file_name + "
    "segments_info) whose category ids are contiguous under separated metadata (things "
    "0..T-1, stuff 1..S), e.g. 'cityscapes_fine_panoptic_separated_train'."
)


def separate_panoptic(
    panoptic_ids: np.ndarray, segments_info: list[dict], ignore_label: int = 255
) -> tuple[np.ndarray, list[dict]]:
    """Split a panoptic id map into instance annotations and Panoptic FPN's semantic labels.

    Args:
        panoptic_ids: H×W segment ids (0 and ids not in ``segments_info`` are unlabeled).
        segments_info: the image's segments, each with ``id``, ``category_id`` (contiguous
            under separated metadata: things 0..T-1, stuff 1..S), ``isthing`` and optionally
            ``iscrowd``.
        ignore_label: the label of unlabeled pixels.

    Returns:
        ``(sem_seg, annotations)``: H×W uint8 labels (stuff pixels their ``category_id``, thing
        pixels, crowds included, 0, the rest ``ignore_label``) and one annotation per non-empty
        thing segment (``bbox`` in XYWH_ABS, ``bbox_mode``, ``category_id``, ``iscrowd`` and
        ``segmentation`` as compressed RLE).

    Raises:
        KeyError: a segment has no ``isthing``.
        ValueError: a stuff segment's ``category_id`` is 0 (the "things" label: the dict was
            made with standard metadata) or does not fit the label map.
    """
    sem_seg = np.full(panoptic_ids.shape, ignore_label, dtype=np.uint8)
    annotations = []
    for segment in segments_info:
        if "isthing" not in segment:
            raise KeyError(f"Segment {segment.get('id')} has no 'isthing'. {_FIX}")
        mask = panoptic_ids == segment["id"]
        category_id = int(segment["category_id"])
        if not segment["isthing"]:
            if not 0 < category_id < 255 or category_id == ignore_label:
                raise ValueError(
                    f"Stuff segment {segment['id']} has category_id={category_id}; separated "
                    f"stuff labels are 1..254 (0 = things, {ignore_label} = ignore). {_FIX}"
                )
            sem_seg[mask] = category_id
            continue
        sem_seg[mask] = 0
        rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
        if mask_util.area(rle) == 0:
            continue
        annotations.append(
            {
                "bbox": mask_util.toBbox(rle).tolist(),
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": category_id,
                "iscrowd": int(segment.get("iscrowd", 0)),
                "segmentation": rle,
            }
        )
    return sem_seg, annotations


@DATASET_MAPPER_REGISTRY.register()
class PanopticSeparatedDatasetMapper(DatasetMapper):
    """`DatasetMapper` for dicts in the standard panoptic form, giving the separated targets.

    The panoptic PNG (``pan_seg_file_name``) and ``segments_info`` are turned into instance
    annotations (RLE masks) and the semantic label map by `separate_panoptic`, before the
    augmentations; from there on, images, labels and annotations go the core mapper's way
    (crowds are dropped from the instances, but stay "things" (0) in ``sem_seg``). The dict's
    own ``sem_seg_file_name`` (labels in another convention) is not read. Masks are bitmasks,
    so ``INPUT.MASK_FORMAT`` must be ``"bitmask"``.
    """

    @configurable
    def __init__(self, is_train: bool, *, ignore_label: int = 255, **kwargs: Any) -> None:
        """Create the mapper.

        Args:
            is_train: whether the mapper prepares training data.
            ignore_label: the semantic label of unlabeled pixels.
            **kwargs: the arguments of `DatasetMapper` (``augmentations``, ``image_format``,
                ``use_instance_mask``, ``instance_mask_format``...).

        Raises:
            ValueError: instance masks in the "polygon" format.
        """
        if kwargs.get("use_instance_mask") and kwargs.get("instance_mask_format") != "bitmask":
            raise ValueError(
                "PanopticSeparatedDatasetMapper makes RLE masks from the panoptic PNG; set "
                "INPUT.MASK_FORMAT 'bitmask' (instance_mask_format='bitmask')."
            )
        super().__init__(is_train, **kwargs)
        self.ignore_label = ignore_label

    @classmethod
    def from_config(cls, cfg: Any, is_train: bool = True) -> dict[str, Any]:
        """`DatasetMapper`'s arguments, plus ``ignore_label`` of DATASETS.TRAIN[0]'s metadata."""
        ret = super().from_config(cfg, is_train)
        if cfg.DATASETS.TRAIN:
            ret["ignore_label"] = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get(
                "ignore_label", 255
            )
        return ret

    def _read_sem_seg(self, dataset_dict: dict[str, Any]) -> np.ndarray:
        """Separated labels from the panoptic PNG; also sets the dict's ``annotations``.

        Raises:
            KeyError: the dict is not in the standard panoptic form.
        """
        missing = [k for k in ("pan_seg_file_name", "segments_info") if k not in dataset_dict]
        if missing:
            raise KeyError(
                f"The dataset dict of {dataset_dict.get('file_name')} has no {missing} (its keys: "
                f"{sorted(dataset_dict)}). {_FIX} A dataset already in the separated form "
                "(annotations + sem_seg_file_name, e.g. 'coco_2017_train_panoptic_separated') "
                "takes the core mapper: INPUT.DATASET_MAPPER_NAME 'DatasetMapper'."
            )
        panoptic_ids = rgb2id(utils.read_image(dataset_dict.pop("pan_seg_file_name"), "RGB"))
        dataset_dict.pop("sem_seg_file_name", None)
        sem_seg, dataset_dict["annotations"] = separate_panoptic(
            panoptic_ids, dataset_dict["segments_info"], self.ignore_label
        )
        return sem_seg
