"""Cityscapes panoptic segmentation in the COCO panoptic format made by cityscapesscripts.

``cityscapesscripts``' ``createPanopticImgs`` (run by ``datasets/prepare_cityscapes.py``) writes
``gtFine/cityscapes_panoptic_{split}.json`` and one PNG per image in
``gtFine/cityscapes_panoptic_{split}/``; segment ids are Cityscapes instance ids (label id × 1000
+ k for things, the label id for stuff and crowds) and category ids are Cityscapes label ids.
``load_cityscapes_panoptic`` pairs them with the images of ``leftImg8bit/{split}/`` and the
``*_gtFine_labelTrainIds.png`` semantic labels, as Detectron2 does.

Unlike Detectron2, a missing file is reported for every image (not only the first) with the
command that creates it, the JSON is not modified in place, and the dicts also carry ``height``,
``width`` and each segment's ``isthing``.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping
from typing import Any

from segtron.data.catalog import Metadata
from segtron.data.datasets.coco import read_json_file
from segtron.data.datasets.coco_panoptic import contiguous_segment
from segtron.utils.file_io import PathManager

__all__ = ["load_cityscapes_panoptic"]

logger = logging.getLogger(__name__)

_IMAGE_SUFFIX = "_leftImg8bit.png"
_TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
_PREPARE = (
    "Create it with `python datasets/prepare_cityscapes.py --root <cityscapes folder>` "
    '(it needs cityscapesscripts: `pip install -e ".[cityscapes]"`).'
)


def _images_by_prefix(image_dir: str) -> dict[str, str]:
    """``{"<city>_<seq>_<frame>": image path}`` for every ``<city>/*_leftImg8bit.png``."""
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"The Cityscapes image folder {image_dir} does not exist.")
    pattern = os.path.join(glob.escape(image_dir), "*", "*" + _IMAGE_SUFFIX)
    return {os.path.basename(f)[: -len(_IMAGE_SUFFIX)]: f for f in sorted(glob.glob(pattern))}


def _semantic_dir(image_dir: str) -> str:
    """``<root>/gtFine/<split>`` for an image folder ``<root>/leftImg8bit/<split>``."""
    image_dir = os.path.normpath(image_dir)
    root = os.path.dirname(os.path.dirname(image_dir))
    return os.path.join(root, "gtFine", os.path.basename(image_dir))


_TRAIN_ID_ADVICE = (
    "was the file made with --use-train-id? segtron expects Cityscapes label ids (the default "
    "of createPanopticImgs)."
)


def _check_files(records: list[dict], key: str, what: str) -> None:
    """Raise FileNotFoundError naming the first record whose ``key`` file does not exist."""
    missing = [r[key] for r in records if not PathManager.isfile(r[key])]
    if missing:
        raise FileNotFoundError(
            f"{missing[0]} does not exist ({len(missing)} of {len(records)} {what} are "
            f"missing). {_PREPARE}"
        )


def load_cityscapes_panoptic(
    image_dir: str, gt_dir: str, gt_json: str, meta: Mapping[str, Any] | Metadata
) -> list[dict]:
    """Load Cityscapes panoptic annotations into Detectron2 dataset dicts.

    Args:
        image_dir: the images of one split, e.g. ``"cityscapes/leftImg8bit/train"``.
        gt_dir: the panoptic PNGs, e.g. ``"cityscapes/gtFine/cityscapes_panoptic_train"``.
        gt_json: the panoptic JSON, e.g. ``"cityscapes/gtFine/cityscapes_panoptic_train.json"``.
        meta: metadata with ``thing_dataset_id_to_contiguous_id`` and
            ``stuff_dataset_id_to_contiguous_id`` (Cityscapes label id -> train id).

    Returns:
        One dict per annotation of ``gt_json``, in its order, with ``file_name``, ``image_id``
        (``<city>_<seq>_<frame>``), ``height``, ``width``, ``sem_seg_file_name`` (the
        ``*_gtFine_labelTrainIds.png`` next to the split's other gtFine files),
        ``pan_seg_file_name`` and ``segments_info`` (contiguous ``category_id`` and ``isthing``).

    Raises:
        FileNotFoundError: ``gt_json``, ``image_dir``, a panoptic PNG or a labelTrainIds PNG is
            missing, or the JSON has no annotation.
        ValueError: an annotation's image is not in ``image_dir``, or ``gt_json`` is not JSON.
        KeyError: a segment's category is not in the metadata.
    """
    if isinstance(meta, Metadata):
        meta = meta.as_dict()
    if not PathManager.isfile(gt_json):
        raise FileNotFoundError(
            f"The Cityscapes panoptic JSON {gt_json} does not exist. {_PREPARE}"
        )
    json_info = read_json_file(gt_json)
    images = _images_by_prefix(image_dir)
    sizes = {img["id"]: img for img in json_info.get("images", [])}
    semantic_dir = _semantic_dir(image_dir)
    ret = []
    for ann in json_info.get("annotations", []):
        image_id = ann["image_id"]
        image_file = images.get(image_id)
        if image_file is None:
            raise ValueError(
                f"The annotation {ann.get('file_name')} of {gt_json} is for image '{image_id}', "
                f"but {image_dir} has no <city>/{image_id}{_IMAGE_SUFFIX}. Are the JSON and the "
                "image folder of the same split?"
            )
        city = os.path.basename(os.path.dirname(image_file))
        record = {
            "file_name": image_file,
            "image_id": image_id,
            "sem_seg_file_name": os.path.join(semantic_dir, city, image_id + _TRAIN_IDS_SUFFIX),
            "pan_seg_file_name": os.path.join(gt_dir, ann["file_name"]),
            "segments_info": [
                contiguous_segment(s, meta, gt_json, advice=_TRAIN_ID_ADVICE)
                for s in ann["segments_info"]
            ],
        }
        if image_id in sizes:
            record.update(height=sizes[image_id]["height"], width=sizes[image_id]["width"])
        ret.append(record)
    if not ret:
        raise FileNotFoundError(f"{gt_json} has no annotation. {_PREPARE}")
    _check_files(ret, "pan_seg_file_name", "panoptic PNGs")
    _check_files(ret, "sem_seg_file_name", "labelTrainIds PNGs")
    logger.info("Loaded %d panoptic annotations of %s.", len(ret), image_dir)
    return ret
