"""Helpers shared by dataset mappers: image reading, annotation transforms, `Instances` building.

Mirrors ``detectron2.data.detection_utils``. Differences on purpose: a missing image raises
`FileNotFoundError` and an unreadable or truncated one raises `ImageReadError` (an `OSError`),
both naming the file; keypoints become a float tensor ``gt_keypoints`` (N×K×3) because segtron
has no ``Keypoints`` structure.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from fvcore.transforms.transform import HFlipTransform, Transform, TransformList
from PIL import Image, ImageOps

from segtron.data import transforms as T
from segtron.data.catalog import MetadataCatalog
from segtron.structures import (
    BitMasks,
    Boxes,
    BoxMode,
    Instances,
    PolygonMasks,
    polygons_to_bitmask,
)
from segtron.utils.file_io import PathManager

__all__ = [
    "ImageReadError",
    "SizeMismatchError",
    "annotations_to_instances",
    "build_augmentation",
    "build_transform_gen",
    "check_image_size",
    "check_metadata_consistency",
    "convert_PIL_to_numpy",
    "convert_image_to_rgb",
    "create_keypoint_hflip_indices",
    "filter_empty_instances",
    "read_image",
    "transform_instance_annotations",
    "transform_keypoint_annotations",
    "transform_proposals",
]

logger = logging.getLogger(__name__)

# ITU-R BT.601 RGB <-> YUV matrices (YUV with Y in [0, 1]).
_M_RGB2YUV = [[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]]
_M_YUV2RGB = [[1.0, 0.0, 1.13983], [1.0, -0.39465, -0.58060], [1.0, 2.03211, 0.0]]


class ImageReadError(OSError):
    """An image file exists but cannot be decoded (corrupt, truncated or not an image).

    Raised as ``ImageReadError(errno.EIO, message, file_name)``: ``filename`` is the file and
    ``str()`` is the message alone (without OSError's ``[Errno 5] ...: 'file'`` decoration).
    """

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror is not None else super().__str__()


class SizeMismatchError(ValueError):
    """The image read from disk does not have the size its annotation declares."""


def convert_PIL_to_numpy(image: Image.Image, format: str | None) -> np.ndarray:  # noqa: N802
    """Convert a PIL image to an H×W×C array in `format`.

    Args:
        image: a PIL image.
        format: any PIL mode ("RGB", "L", ...), or "BGR" or "YUV-BT.601"; None keeps the
            image's own mode.

    Returns:
        A uint8 array (float64 for "YUV-BT.601"); "L" images get a trailing channel axis.
    """
    if format is not None:
        pil_mode = "RGB" if format in ("BGR", "YUV-BT.601") else format
        image = image.convert(pil_mode)
    array = np.asarray(image)
    if format == "L":
        array = np.expand_dims(array, -1)
    elif format == "BGR":
        array = array[:, :, ::-1]
    elif format == "YUV-BT.601":
        array = np.dot(array / 255.0, np.array(_M_RGB2YUV).T)
    return array


def convert_image_to_rgb(image: np.ndarray | torch.Tensor, format: str) -> np.ndarray:
    """Convert an H×W×C image in `format` back to a uint8 RGB array (e.g. for visualization)."""
    if isinstance(image, torch.Tensor):
        image = image.cpu().numpy()
    if format == "BGR":
        return image[:, :, [2, 1, 0]]
    if format == "YUV-BT.601":
        return np.dot(image, np.array(_M_YUV2RGB).T) * 255.0
    if format == "L":
        image = image[:, :, 0]
    return np.asarray(Image.fromarray(image.astype(np.uint8), mode=format).convert("RGB"))


def read_image(file_name: str, format: str | None = None) -> np.ndarray:
    """Read an image, apply its EXIF orientation and convert it to `format`.

    Args:
        file_name: a path understood by `PathManager`.
        format: "BGR", "RGB", "L", "YUV-BT.601" or any PIL mode; None keeps the file's mode.

    Returns:
        An H×W×C array (see `convert_PIL_to_numpy`).

    Raises:
        FileNotFoundError: when the file does not exist.
        ImageReadError: when the file cannot be decoded (corrupt, truncated, not an image).
    """
    if not PathManager.exists(file_name):
        raise FileNotFoundError(errno.ENOENT, "Image file not found", file_name)
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()
            image = ImageOps.exif_transpose(image)
            return convert_PIL_to_numpy(image, format)
    except (OSError, SyntaxError, ValueError) as err:
        message = f"Cannot read image '{file_name}': {err}"
        raise ImageReadError(errno.EIO, message, file_name) from err


def check_image_size(dataset_dict: dict[str, Any], image: np.ndarray) -> None:
    """Check the image against the dict's "width"/"height", filling them in when absent.

    Raises:
        SizeMismatchError: when the declared size differs from the image's, naming the file.
    """
    if "width" in dataset_dict or "height" in dataset_dict:
        actual = (image.shape[1], image.shape[0])
        expected = (
            dataset_dict.get("width", image.shape[1]),
            dataset_dict.get("height", image.shape[0]),
        )
        if actual != expected:
            name = dataset_dict.get("file_name", "<unknown file>")
            raise SizeMismatchError(
                f"Image '{name}' has size (w, h) = {actual} but its annotation says {expected}. "
                "Fix the width/height in the annotation (or the image file)."
            )
    dataset_dict.setdefault("width", image.shape[1])
    dataset_dict.setdefault("height", image.shape[0])


def transform_proposals(
    dataset_dict: dict[str, Any],
    image_shape: tuple[int, int],
    transforms: TransformList,
    *,
    proposal_topk: int,
    min_box_size: float = 0,
) -> None:
    """Transform precomputed proposals in place into ``dataset_dict["proposals"]`` (`Instances`).

    Uses and removes "proposal_boxes", "proposal_bbox_mode" and "proposal_objectness_logits";
    boxes are clipped, those smaller than `min_box_size` dropped and the top `proposal_topk`
    kept.
    """
    if "proposal_boxes" not in dataset_dict:
        return
    raw = BoxMode.convert(
        dataset_dict.pop("proposal_boxes"), dataset_dict.pop("proposal_bbox_mode"), BoxMode.XYXY_ABS
    )
    boxes = Boxes(transforms.apply_box(raw))
    logits = torch.as_tensor(dataset_dict.pop("proposal_objectness_logits").astype("float32"))
    boxes.clip(image_shape)
    keep = boxes.nonempty(threshold=min_box_size)
    proposals = Instances(image_shape)
    proposals.proposal_boxes = boxes[keep][:proposal_topk]
    proposals.objectness_logits = logits[keep][:proposal_topk]
    dataset_dict["proposals"] = proposals


def transform_instance_annotations(
    annotation: dict[str, Any],
    transforms: Transform | Sequence[Transform],
    image_size: tuple[int, int],
    *,
    keypoint_hflip_indices: np.ndarray | None = None,
) -> dict[str, Any]:
    """Apply `transforms` to one instance annotation (modified in place and returned).

    The box becomes XYXY_ABS, clipped to the image; polygons are transformed point-wise (and
    cut by crops); an RLE mask is decoded, transformed like a label map and stored as an H×W
    uint8 array; keypoints are transformed when present.

    Args:
        annotation: a dict with "bbox", "bbox_mode" and optional "segmentation", "keypoints".
        transforms: the transforms applied to the image.
        image_size: (h, w) of the transformed image.
        keypoint_hflip_indices: permutation of keypoints under a horizontal flip.

    Returns:
        The annotation.
    """
    if isinstance(transforms, list | tuple):
        transforms = TransformList(list(transforms))
    bbox = BoxMode.convert(annotation["bbox"], annotation["bbox_mode"], BoxMode.XYXY_ABS)
    bbox = transforms.apply_box(np.array([bbox], dtype=np.float64))[0].clip(min=0)
    annotation["bbox"] = np.minimum(bbox, list(image_size + image_size)[::-1])
    annotation["bbox_mode"] = BoxMode.XYXY_ABS

    if "segmentation" in annotation:
        segm = annotation["segmentation"]
        if isinstance(segm, list):
            polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segm]
            annotation["segmentation"] = [
                p.reshape(-1) for p in transforms.apply_polygons(polygons)
            ]
        elif isinstance(segm, dict):
            if isinstance(segm["counts"], list):
                segm = mask_util.frPyObjects(segm, *segm["size"])
            mask = transforms.apply_segmentation(mask_util.decode(segm))
            if tuple(mask.shape[:2]) != tuple(image_size):
                raise ValueError(
                    f"Transformed mask has size {mask.shape[:2]}, expected {tuple(image_size)}."
                )
            annotation["segmentation"] = mask
        else:
            raise ValueError(
                f"Cannot transform segmentation of type {type(segm)}; expected a list of "
                "polygons or a COCO RLE dict."
            )

    if "keypoints" in annotation:
        annotation["keypoints"] = transform_keypoint_annotations(
            annotation["keypoints"], transforms, image_size, keypoint_hflip_indices
        )
    return annotation


def transform_keypoint_annotations(
    keypoints: Sequence[float] | np.ndarray,
    transforms: TransformList,
    image_size: tuple[int, int],
    keypoint_hflip_indices: np.ndarray | None = None,
) -> np.ndarray:
    """Transform flat COCO keypoints [x, y, v, ...] into a K×3 array.

    Keypoints that leave the image get visibility 0 (and all their values set to 0); an odd
    number of horizontal flips reorders them with `keypoint_hflip_indices`.

    Raises:
        ValueError: for a flip without (or with mismatched) `keypoint_hflip_indices`.
    """
    kpts = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    xy = transforms.apply_coords(kpts[:, :2])
    h, w = image_size
    inside = ((xy >= [0, 0]) & (xy <= [w, h])).all(axis=1)
    kpts[:, :2] = xy
    kpts[:, 2][~inside] = 0
    flips = sum(isinstance(t, HFlipTransform) for t in transforms.transforms)
    if flips % 2 == 1:
        if keypoint_hflip_indices is None:
            raise ValueError("Cannot flip keypoints without keypoint_hflip_indices.")
        if len(keypoint_hflip_indices) != len(kpts):
            raise ValueError(
                f"keypoint_hflip_indices has {len(keypoint_hflip_indices)} entries but the "
                f"annotation has {len(kpts)} keypoints."
            )
        kpts = kpts[np.asarray(keypoint_hflip_indices, dtype=np.int64), :]
    kpts[kpts[:, 2] == 0] = 0
    return kpts


def _segm_to_bitmask(segm: Any, image_size: tuple[int, int]) -> np.ndarray:
    if isinstance(segm, list):
        return polygons_to_bitmask(segm, *image_size)
    if isinstance(segm, dict):
        if isinstance(segm["counts"], list):
            segm = mask_util.frPyObjects(segm, *segm["size"])
        return mask_util.decode(segm)
    if isinstance(segm, np.ndarray):
        if segm.ndim != 2:
            raise ValueError(f"A mask array must be H×W, got shape {segm.shape}.")
        return segm
    raise ValueError(
        f"Cannot convert segmentation of type {type(segm)} to a mask; expected polygons, a "
        "COCO RLE dict or an H×W array."
    )


def annotations_to_instances(
    annos: list[dict[str, Any]], image_size: tuple[int, int], mask_format: str = "polygon"
) -> Instances:
    """Build training targets from transformed annotations.

    Args:
        annos: annotations with XYXY_ABS-convertible "bbox", "category_id" and optionally
            "segmentation" and "keypoints".
        image_size: (h, w).
        mask_format: "polygon" (`PolygonMasks`) or "bitmask" (`BitMasks`).

    Returns:
        `Instances` with gt_boxes, gt_classes and, when present, gt_masks and gt_keypoints.
    """
    boxes = (
        np.stack([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos])
        if annos
        else np.zeros((0, 4))
    )
    target = Instances(image_size)
    target.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
    target.gt_classes = torch.tensor([int(a["category_id"]) for a in annos], dtype=torch.int64)

    if annos and "segmentation" in annos[0]:
        segms = [a["segmentation"] for a in annos]
        if mask_format == "polygon":
            try:
                target.gt_masks = PolygonMasks(segms)
            except ValueError as err:
                raise ValueError(
                    "Cannot use mask_format='polygon' with these annotations (RLE or mask "
                    "arrays need INPUT.MASK_FORMAT='bitmask')."
                ) from err
        elif mask_format == "bitmask":
            masks = [
                torch.from_numpy(np.require(_segm_to_bitmask(s, image_size), requirements="CW"))
                for s in segms
            ]
            target.gt_masks = BitMasks(torch.stack(masks))
        else:
            raise ValueError(f"Unknown mask_format {mask_format!r}; use 'polygon' or 'bitmask'.")

    if annos and "keypoints" in annos[0]:
        kpts = [np.asarray(a.get("keypoints", []), dtype=np.float32).reshape(-1, 3) for a in annos]
        target.gt_keypoints = torch.as_tensor(np.stack(kpts))
    return target


def filter_empty_instances(
    instances: Instances,
    by_box: bool = True,
    by_mask: bool = True,
    box_threshold: float = 1e-5,
    return_mask: bool = False,
) -> Instances | tuple[Instances, torch.Tensor]:
    """Drop instances whose box (or mask) is empty.

    Args:
        instances: with gt_boxes and optionally gt_masks.
        by_box: drop boxes with a side not above `box_threshold`.
        by_mask: drop empty masks.
        box_threshold: smallest box side kept.
        return_mask: also return the boolean mask of kept instances.

    Returns:
        The kept instances (and the mask when `return_mask`).
    """
    keep = torch.ones(len(instances), dtype=torch.bool)
    if by_box:
        keep &= instances.gt_boxes.nonempty(threshold=box_threshold)
    if by_mask and instances.has("gt_masks"):
        keep &= instances.gt_masks.nonempty()
    if return_mask:
        return instances[keep], keep
    return instances[keep]


def create_keypoint_hflip_indices(dataset_names: list[str] | str) -> list[int]:
    """For each keypoint, the index of its mirror image, from the datasets' metadata."""
    if isinstance(dataset_names, str):
        dataset_names = [dataset_names]
    check_metadata_consistency("keypoint_names", dataset_names)
    check_metadata_consistency("keypoint_flip_map", dataset_names)
    meta = MetadataCatalog.get(dataset_names[0])
    names = list(meta.keypoint_names)
    flip_map = dict(meta.keypoint_flip_map)
    flip_map.update({v: k for k, v in flip_map.items()})
    return [names.index(flip_map.get(name, name)) for name in names]


def check_metadata_consistency(key: str, dataset_names: list[str]) -> None:
    """Check that every dataset has the same metadata value for `key`.

    Raises:
        ValueError: naming the key and the first dataset that differs.
    """
    if not dataset_names:
        return
    entries = [MetadataCatalog.get(name).get(key) for name in dataset_names]
    for name, entry in zip(dataset_names, entries):
        if entry != entries[0]:
            raise ValueError(
                f"Datasets have different metadata '{key}': '{dataset_names[0]}' has "
                f"{entries[0]!r} but '{name}' has {entry!r}."
            )


def build_augmentation(cfg: Any, is_train: bool) -> list[T.Augmentation]:
    """The default augmentations from a config: ResizeShortestEdge and, in training, RandomFlip.

    Uses INPUT.MIN_SIZE_TRAIN/MAX_SIZE_TRAIN/MIN_SIZE_TRAIN_SAMPLING (training) or
    INPUT.MIN_SIZE_TEST/MAX_SIZE_TEST, and INPUT.RANDOM_FLIP ("horizontal", "vertical", "none").
    """
    if is_train:
        min_size, max_size = cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN
        sample_style = cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    else:
        min_size, max_size, sample_style = (
            cfg.INPUT.MIN_SIZE_TEST,
            cfg.INPUT.MAX_SIZE_TEST,
            "choice",
        )
    augmentation: list[T.Augmentation] = [T.ResizeShortestEdge(min_size, max_size, sample_style)]
    if is_train and cfg.INPUT.RANDOM_FLIP != "none":
        augmentation.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    return augmentation


build_transform_gen = build_augmentation
