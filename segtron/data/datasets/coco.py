"""COCO-format datasets: loading instances and semantic labels, converting back to COCO JSON.

The dataset dicts follow Detectron2's standard format: one dict per image with ``file_name``,
``height``, ``width``, ``image_id`` and ``annotations`` (each with ``bbox``, ``bbox_mode``,
``category_id``, ``iscrowd`` and optional ``segmentation`` / ``keypoints``).

Where we differ from Detectron2 on purpose, it is to fail with a message instead of an
``assert``: a file that is not JSON, an annotation whose category is not in ``categories``,
duplicate annotation ids and a label PNG without its image raise errors naming the file; invalid
polygons and empty boxes are dropped with a warning (Detectron2 only drops invalid polygons).
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import shutil
from collections import Counter
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
from iopath.common.file_io import file_lock
from PIL import Image
from pycocotools.coco import COCO

from segtron.data.catalog import DatasetCatalog, MetadataCatalog
from segtron.structures import Boxes, BoxMode, PolygonMasks
from segtron.utils.file_io import PathManager

__all__ = [
    "convert_to_coco_dict",
    "convert_to_coco_json",
    "load_coco_json",
    "load_sem_seg",
    "register_coco_instances",
    "register_sem_seg",
]

logger = logging.getLogger(__name__)

_BASE_ANNOTATION_KEYS = ["iscrowd", "bbox", "category_id"]


def read_json_file(json_file: str | os.PathLike) -> Any:
    """Parse a JSON file; when it is not JSON, the error names the file.

    Raises:
        ValueError: the file does not parse as JSON.
    """
    with PathManager.open(os.fspath(json_file), "r") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{json_file} is not a valid JSON file ({err}). Check that the file is complete "
                "(not truncated by an interrupted download) and is a COCO annotation file."
            ) from err


def _read_coco_api(json_file: str) -> COCO:
    """Parse ``json_file`` into a pycocotools ``COCO`` object."""
    dataset = read_json_file(json_file)
    if not isinstance(dataset, dict) or "images" not in dataset:
        raise ValueError(
            f"{json_file} is not a COCO annotation file: it needs an 'images' list "
            "(and 'annotations' and 'categories')."
        )
    coco_api = COCO()
    coco_api.dataset = dataset
    coco_api.createIndex()
    return coco_api


def _check_unique_annotation_ids(coco_api: COCO, json_file: str) -> None:
    """Raise if two annotations share an id (the COCO 2014 minival files are exempt)."""
    if "minival" in os.fspath(json_file):
        return
    counts = Counter(ann["id"] for ann in coco_api.dataset.get("annotations", []))
    duplicates = [ann_id for ann_id, n in counts.items() if n > 1]
    if duplicates:
        raise ValueError(
            f"Annotation ids in {json_file} are not unique: {len(duplicates)} ids repeat "
            f"(e.g. {duplicates[:5]}). Give every annotation its own 'id'."
        )


def _valid_segmentation(segm: Any) -> Any:
    """The segmentation in Detectron2's form: compressed RLE, or polygons with >= 3 points.

    Returns None when the annotation has polygons but none of them is valid.
    """
    if isinstance(segm, dict):
        if isinstance(segm["counts"], list):
            return mask_util.frPyObjects(segm, *segm["size"])
        return segm
    polygons = [poly for poly in segm if len(poly) % 2 == 0 and len(poly) >= 6]
    return polygons or None


def load_coco_json(
    json_file: str,
    image_root: str,
    dataset_name: str | None = None,
    extra_annotation_keys: list[str] | None = None,
) -> list[dict]:
    """Load a COCO instances (or keypoints) JSON file into Detectron2 dataset dicts.

    Image files are not opened: a missing image is reported when the image is read.

    Args:
        json_file: path of the JSON file in COCO instances format.
        image_root: the folder holding the images named in the JSON file.
        dataset_name: when given, the metadata of this dataset gets ``thing_classes`` (category
            names sorted by id) and ``thing_dataset_id_to_contiguous_id``, and the returned
            category ids are contiguous in ``[0, #categories)``.
        extra_annotation_keys: further per-annotation keys to copy as they are.

    Returns:
        One dict per image, sorted by image id.

    Raises:
        ValueError: the file is not JSON, annotation ids repeat, an annotation uses the
            unsupported ``ignore`` field or has an empty ``bbox``.
        KeyError: an annotation's category id is not in the file's ``categories``.
    """
    coco_api = _read_coco_api(json_file)
    cat_ids = sorted(coco_api.getCatIds())
    id_map = None
    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        meta.thing_classes = [c["name"] for c in coco_api.loadCats(cat_ids)]
        if cat_ids and not (min(cat_ids) == 1 and max(cat_ids) == len(cat_ids)):
            if "coco" not in dataset_name:
                logger.warning(
                    "Category ids in %s are not in [1, #categories]; they are mapped to "
                    "contiguous ids.",
                    json_file,
                )
        id_map = {cat_id: i for i, cat_id in enumerate(cat_ids)}
        meta.thing_dataset_id_to_contiguous_id = id_map
    _check_unique_annotation_ids(coco_api, json_file)

    known_categories = set(cat_ids)
    img_ids = sorted(coco_api.imgs)
    orphans = len(coco_api.dataset.get("annotations", [])) - sum(
        len(coco_api.imgToAnns[i]) for i in img_ids
    )
    if orphans:
        logger.warning("%d annotations in %s refer to no image; skipped.", orphans, json_file)

    ann_keys = _BASE_ANNOTATION_KEYS + (extra_annotation_keys or [])
    bad_polygons = empty_boxes = 0
    dataset_dicts = []
    for img_dict in coco_api.loadImgs(img_ids):
        image_id = img_dict["id"]
        objs = []
        for anno in coco_api.imgToAnns[image_id]:
            if anno.get("ignore", 0) != 0:
                raise ValueError(
                    f"Annotation {anno.get('id')} in {json_file} sets 'ignore', which is not "
                    "supported; use 'iscrowd': 1 for regions to ignore."
                )
            if anno["category_id"] not in known_categories:
                raise KeyError(
                    f"Annotation {anno.get('id')} in {json_file} has category_id="
                    f"{anno['category_id']}, which is not in the file's 'categories' "
                    f"(ids {cat_ids}). Add the category or fix the annotation."
                )
            obj = {key: anno[key] for key in ann_keys if key in anno}
            if "bbox" in obj:
                if len(obj["bbox"]) == 0:
                    raise ValueError(
                        f"Annotation {anno.get('id')} of image {image_id} in {json_file} has an "
                        "empty 'bbox'; this is not valid COCO format."
                    )
                if obj["bbox"][2] <= 0 or obj["bbox"][3] <= 0:
                    empty_boxes += 1
                    continue
            segm = anno.get("segmentation")
            if segm:
                segm = _valid_segmentation(segm)
                if segm is None:
                    bad_polygons += 1
                    continue
                obj["segmentation"] = segm
            keypoints = anno.get("keypoints")
            if keypoints:
                # COCO keypoints are pixel indices; +0.5 puts them in continuous coordinates.
                obj["keypoints"] = [v + 0.5 if i % 3 != 2 else v for i, v in enumerate(keypoints)]
            obj["bbox_mode"] = BoxMode.XYWH_ABS
            if id_map is not None:
                obj["category_id"] = id_map[obj["category_id"]]
            objs.append(obj)
        dataset_dicts.append(
            {
                "file_name": os.path.join(image_root, img_dict["file_name"]),
                "height": img_dict["height"],
                "width": img_dict["width"],
                "image_id": image_id,
                "annotations": objs,
            }
        )
    if bad_polygons:
        logger.warning(
            "Dropped %d annotations of %s without a valid polygon (>= 3 points); the dataset "
            "was probably written with a bug.",
            bad_polygons,
            json_file,
        )
    if empty_boxes:
        logger.warning(
            "Dropped %d annotations of %s whose box has zero or negative width or height.",
            empty_boxes,
            json_file,
        )
    logger.info("Loaded %d images in COCO format from %s", len(dataset_dicts), json_file)
    return dataset_dicts


def _file_stems(folder: str, ext: str) -> dict[str, str]:
    """Map the stem (name without ``ext``) of each file of ``folder`` ending in ``ext``."""
    return {
        name[: -len(ext)].rstrip("."): os.path.join(folder, name)
        for name in PathManager.ls(folder)
        if name.endswith(ext)
    }


def _stem_to_id(stem: str) -> int | str:
    """The image id of a file stem: an int when the stem is a number, else the stem."""
    try:
        return int(stem)
    except ValueError:
        return stem


def load_sem_seg(
    gt_root: str, image_root: str, gt_ext: str = "png", image_ext: str = "jpg"
) -> list[dict]:
    """Pair images with semantic label images by file name (without extension).

    Every label file must have its image; images without a label file are skipped with a
    warning (so labels for a subset of the images work, as in Detectron2).

    Args:
        gt_root: folder of label images (pixel value = class id).
        image_root: folder of the input images.
        gt_ext: extension of the label files.
        image_ext: extension of the image files.

    Returns:
        Dicts with ``file_name``, ``sem_seg_file_name``, ``image_id``, ``height``, ``width``,
        sorted by image id.

    Raises:
        FileNotFoundError: no label file in ``gt_root``, or label files without an image.
    """
    images = _file_stems(image_root, image_ext)
    labels = _file_stems(gt_root, gt_ext)
    if not labels:
        raise FileNotFoundError(f"No '*{gt_ext}' label files found in {gt_root}.")
    unmatched = sorted(set(labels) - set(images))
    if unmatched:
        raise FileNotFoundError(
            f"{len(unmatched)} label files in {gt_root} have no '*{image_ext}' image of the same "
            f"name in {image_root} (e.g. {unmatched[:5]}). Check both folders and extensions."
        )
    if len(images) != len(labels):
        logger.warning(
            "%s has %d images but %s has %d label files; using the %d images that have labels.",
            image_root,
            len(images),
            gt_root,
            len(labels),
            len(labels),
        )
    dataset_dicts = []
    for stem in sorted(labels, key=lambda s: (isinstance(_stem_to_id(s), str), _stem_to_id(s))):
        with PathManager.open(labels[stem], "rb") as f:
            width, height = Image.open(f).size
        dataset_dicts.append(
            {
                "file_name": images[stem],
                "sem_seg_file_name": labels[stem],
                "image_id": _stem_to_id(stem),
                "height": height,
                "width": width,
            }
        )
    logger.info("Loaded %d images with semantic segmentation from %s", len(labels), image_root)
    return dataset_dicts


def register_sem_seg(
    name: str,
    image_root: str | os.PathLike,
    gt_root: str | os.PathLike,
    metadata: dict | None = None,
    *,
    image_ext: str = "jpg",
    gt_ext: str = "png",
) -> None:
    """Register a semantic segmentation dataset read by ``load_sem_seg`` (lazily).

    The metadata gets ``image_root``, ``sem_seg_root``, everything in ``metadata``
    (``stuff_classes``, ``stuff_colors``, ...) and, unless ``metadata`` sets other values,
    ``evaluator_type="sem_seg"`` and ``ignore_label=255``.

    Args:
        name: the dataset name, e.g. ``"my_sem_seg_train"``.
        image_root: folder of the images.
        gt_root: folder of the label images (pixel value = class id).
        metadata: extra metadata.
        image_ext: extension of the image files.
        gt_ext: extension of the label files.
    """
    image_root, gt_root = os.fspath(image_root), os.fspath(gt_root)
    DatasetCatalog.register(
        name,
        functools.partial(load_sem_seg, gt_root, image_root, gt_ext=gt_ext, image_ext=image_ext),
    )
    defaults = {"evaluator_type": "sem_seg", "ignore_label": 255}
    MetadataCatalog.get(name).set(
        **(defaults | (metadata or {}) | {"image_root": image_root, "sem_seg_root": gt_root})
    )


def _coco_annotation(annotation: dict, category_id: int) -> dict:
    """One dataset-dict annotation in COCO JSON form (without ``id`` and ``image_id``)."""
    bbox = annotation["bbox"]
    bbox = bbox.tolist() if isinstance(bbox, np.ndarray) else list(bbox)
    if len(bbox) not in (4, 5):
        raise ValueError(f"A box must have 4 or 5 numbers; got {bbox}.")
    rotated = len(bbox) == 5
    to_mode = BoxMode.XYWHA_ABS if rotated else BoxMode.XYWH_ABS
    bbox = BoxMode.convert(bbox, annotation["bbox_mode"], to_mode)
    coco = {
        "bbox": [round(float(x), 3) for x in bbox],
        "iscrowd": int(annotation.get("iscrowd", 0)),
        "category_id": int(category_id),
    }
    segm = annotation.get("segmentation")
    if isinstance(segm, list):
        area = PolygonMasks([segm]).area()[0].item()
        coco["segmentation"] = segm
    elif isinstance(segm, dict):
        if isinstance(segm["counts"], list):
            segm = mask_util.frPyObjects(segm, *segm["size"])
        area = float(mask_util.area(segm))
        counts = segm["counts"]
        coco["segmentation"] = {
            "size": list(segm["size"]),
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
        }
    elif segm is None:
        if rotated:
            area = float(bbox[2] * bbox[3])
        else:
            xyxy = BoxMode.convert(bbox, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
            area = Boxes([xyxy]).area()[0].item()
    else:
        raise TypeError(f"Unknown segmentation type {type(segm).__name__}: {segm!r:.80}")
    coco["area"] = float(area)
    if "keypoints" in annotation:
        # Back from continuous coordinates to COCO's pixel indices.
        keypoints = [v - 0.5 if i % 3 != 2 else v for i, v in enumerate(annotation["keypoints"])]
        coco["keypoints"] = keypoints
        coco["num_keypoints"] = annotation.get("num_keypoints", sum(v > 0 for v in keypoints[2::3]))
    return coco


def convert_to_coco_dict(dataset_name: str) -> dict:
    """Convert a registered dataset into a COCO instances dict (for the COCO API / evaluation).

    Boxes become XYWH, polygons and RLE are kept, areas are computed from the segmentation (or
    the box), and contiguous category ids go back to dataset ids through the metadata's
    ``thing_dataset_id_to_contiguous_id`` when it exists.

    Args:
        dataset_name: a name registered in ``DatasetCatalog`` with ``thing_classes`` metadata.

    Returns:
        A JSON-serializable dict with ``info``, ``images``, ``categories``, ``licenses`` and,
        when there is any, ``annotations`` (ids from 1).
    """
    dataset_dicts = DatasetCatalog.get(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    id_map = metadata.get("thing_dataset_id_to_contiguous_id")
    reverse = {v: k for k, v in id_map.items()} if id_map else None

    def dataset_id(contiguous_id: int) -> int:
        return reverse[contiguous_id] if reverse is not None else contiguous_id

    categories = [
        {"id": dataset_id(i), "name": name} for i, name in enumerate(metadata.thing_classes)
    ]
    images, annotations = [], []
    for index, image_dict in enumerate(dataset_dicts):
        image = {
            "id": image_dict.get("image_id", index),
            "width": int(image_dict["width"]),
            "height": int(image_dict["height"]),
            "file_name": str(image_dict["file_name"]),
        }
        images.append(image)
        for annotation in image_dict.get("annotations", []):
            coco = _coco_annotation(annotation, dataset_id(annotation["category_id"]))
            coco.update(id=len(annotations) + 1, image_id=image["id"])
            annotations.append(coco)
    logger.info(
        "Converted %s to COCO format: %d images, %d annotations",
        dataset_name,
        len(images),
        len(annotations),
    )
    coco_dict = {
        "info": {
            "date_created": str(datetime.datetime.now()),
            "description": f"COCO JSON of dataset '{dataset_name}', written by segtron.",
        },
        "images": images,
        "categories": categories,
        "licenses": None,
    }
    if annotations:
        coco_dict["annotations"] = annotations
    return coco_dict


def convert_to_coco_json(dataset_name: str, output_file: str, allow_cached: bool = True) -> None:
    """Write ``convert_to_coco_dict(dataset_name)`` to ``output_file``.

    A file lock keeps concurrent processes from writing at once, and the file appears by an
    atomic rename, so a reader never sees half of it.

    Args:
        dataset_name: a registered dataset name.
        output_file: the JSON path to write.
        allow_cached: reuse ``output_file`` when it already exists.
    """
    PathManager.mkdirs(os.path.dirname(output_file) or ".")
    with file_lock(output_file):
        if PathManager.exists(output_file) and allow_cached:
            logger.warning(
                "Using the cached COCO JSON of '%s' at %s; delete it (or pass "
                "allow_cached=False) if the dataset changed.",
                dataset_name,
                output_file,
            )
            return
        coco_dict = convert_to_coco_dict(dataset_name)
        tmp_file = output_file + ".tmp"
        with PathManager.open(tmp_file, "w") as f:
            json.dump(coco_dict, f)
        shutil.move(tmp_file, output_file)
        logger.info("Wrote the COCO JSON of '%s' to %s", dataset_name, output_file)


def register_coco_instances(
    name: str, metadata: dict, json_file: str | os.PathLike, image_root: str | os.PathLike
) -> None:
    """Register a COCO instances dataset; the JSON file is read only when the dataset is used.

    Args:
        name: the dataset name, e.g. ``"my_dataset_train"``.
        metadata: extra metadata (may be empty).
        json_file: path of the COCO instances JSON.
        image_root: folder of the images.
    """
    if not isinstance(name, str):
        raise TypeError(f"The dataset name must be a str; got {name!r}.")
    for arg, value in (("json_file", json_file), ("image_root", image_root)):
        if not isinstance(value, str | os.PathLike):
            raise TypeError(f"{arg} of dataset '{name}' must be a path; got {value!r}.")
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata
    )
