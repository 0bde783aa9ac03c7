"""COCO panoptic datasets: the "standard" form and Panoptic FPN's "separated" form.

The standard form gives one dict per image with ``pan_seg_file_name`` (the panoptic PNG) and
``segments_info`` (category ids made contiguous through the metadata's
``thing_dataset_id_to_contiguous_id`` / ``stuff_dataset_id_to_contiguous_id``, plus ``isthing``).
The separated form merges instance annotations from a COCO instances JSON with a semantic label
PNG (``sem_seg_file_name``), as Panoptic FPN trains.

Unlike Detectron2, the image file comes from the JSON's ``images`` entry (so images need not be
``.jpg``) and the dicts also carry ``height`` and ``width``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

from segtron.data.catalog import DatasetCatalog, Metadata, MetadataCatalog
from segtron.data.datasets.coco import load_coco_json, load_sem_seg, read_json_file
from segtron.utils.file_io import PathManager

__all__ = [
    "load_coco_panoptic_json",
    "merge_to_panoptic",
    "register_coco_panoptic",
    "register_coco_panoptic_separated",
]


def contiguous_segment(
    segment: dict,
    meta: Mapping[str, Any],
    json_file: str,
    categories: set[int] | None = None,
    advice: str = "the metadata does not describe this dataset.",
) -> dict:
    """A copy of a ``segments_info`` entry with a contiguous ``category_id`` and ``isthing``.

    Args:
        segment: the entry, with the dataset's ``category_id``.
        meta: metadata with ``thing_dataset_id_to_contiguous_id`` and
            ``stuff_dataset_id_to_contiguous_id``.
        json_file: the file it comes from (for error messages).
        categories: the ids of the file's ``categories``, checked first when given.
        advice: the end of the error message for an id the metadata does not map.
    """
    category_id = segment["category_id"]
    if categories is not None and category_id not in categories:
        raise KeyError(
            f"Segment {segment.get('id')} in {json_file} has category_id={category_id}, which "
            f"is not in the file's 'categories' (ids {sorted(categories)})."
        )
    thing_map = meta["thing_dataset_id_to_contiguous_id"]
    stuff_map = meta["stuff_dataset_id_to_contiguous_id"]
    segment = dict(segment)
    if category_id in thing_map:
        segment.update(category_id=thing_map[category_id], isthing=True)
    elif category_id in stuff_map:
        segment.update(category_id=stuff_map[category_id], isthing=False)
    else:
        raise KeyError(
            f"Segment {segment.get('id')} in {json_file} has category_id={category_id}, which "
            "is in neither thing_dataset_id_to_contiguous_id nor "
            f"stuff_dataset_id_to_contiguous_id of the metadata; {advice}"
        )
    return segment


def load_coco_panoptic_json(
    json_file: str, image_dir: str, gt_dir: str, meta: Mapping[str, Any] | Metadata
) -> list[dict]:
    """Load a COCO panoptic JSON file into Detectron2 dataset dicts.

    Args:
        json_file: the panoptic JSON (``annotations``, ``images``, ``categories``).
        image_dir: the folder of the images.
        gt_dir: the folder of the panoptic PNGs.
        meta: metadata (dict or ``Metadata``) with ``thing_dataset_id_to_contiguous_id`` and
            ``stuff_dataset_id_to_contiguous_id``.

    Returns:
        One dict per annotation entry with ``file_name``, ``image_id``, ``height``, ``width``,
        ``pan_seg_file_name`` and ``segments_info``.

    Raises:
        ValueError: the file is not JSON, or an annotation's image is not in ``images``.
        KeyError: a segment's category is not in ``categories`` or not in the metadata.
        FileNotFoundError: no annotation, or the first image or PNG does not exist.
    """
    if isinstance(meta, Metadata):
        meta = meta.as_dict()
    json_info = read_json_file(json_file)
    images = {img["id"]: img for img in json_info.get("images", [])}
    categories = {cat["id"] for cat in json_info.get("categories", [])}
    ret = []
    for ann in json_info.get("annotations", []):
        image_id = ann["image_id"]
        if image_id not in images:
            raise ValueError(
                f"The annotation {ann.get('file_name')} in {json_file} refers to image_id="
                f"{image_id}, which has no entry in the file's 'images'. Add the image entry "
                "or remove the annotation."
            )
        image = images[image_id]
        ret.append(
            {
                "file_name": os.path.join(image_dir, image["file_name"]),
                "image_id": image_id,
                "height": image["height"],
                "width": image["width"],
                "pan_seg_file_name": os.path.join(gt_dir, ann["file_name"]),
                "segments_info": [
                    contiguous_segment(s, meta, json_file, categories)
                    for s in ann["segments_info"]
                ],
            }
        )
    if not ret:
        raise FileNotFoundError(f"{json_file} has no panoptic annotation.")
    for key, folder in (("file_name", image_dir), ("pan_seg_file_name", gt_dir)):
        if not PathManager.isfile(ret[0][key]):
            raise FileNotFoundError(
                f"{ret[0][key]} (named in {json_file}) does not exist; is {folder} the right "
                "folder?"
            )
    return ret


def register_coco_panoptic(
    name: str,
    metadata: dict,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    instances_json: str | None = None,
    sem_seg_root: str | None = None,
) -> None:
    """Register the standard form of a COCO panoptic dataset as ``name`` (read lazily).

    Args:
        name: the dataset name, e.g. ``"coco_2017_train_panoptic"``.
        metadata: metadata with the thing/stuff id maps, classes and colours.
        image_root: folder of the images.
        panoptic_root: folder of the panoptic PNGs.
        panoptic_json: the panoptic JSON.
        instances_json: the matching COCO instances JSON, if any (kept as ``json_file``).
        sem_seg_root: a folder of semantic label PNGs in the standard form's contiguous ids,
            named as the panoptic PNGs (segtron's extension of Detectron2's signature): each
            dict then has a ``sem_seg_file_name``, and mIoU is evaluated too.
    """

    def load() -> list[dict]:
        dataset_dicts = load_coco_panoptic_json(panoptic_json, image_root, panoptic_root, metadata)
        if sem_seg_root is not None:
            for record in dataset_dicts:
                png_name = os.path.basename(record["pan_seg_file_name"])
                record["sem_seg_file_name"] = os.path.join(sem_seg_root, png_name)
        return dataset_dicts

    DatasetCatalog.register(name, load)
    if sem_seg_root is not None:
        metadata = metadata | {"sem_seg_root": sem_seg_root}
    MetadataCatalog.get(name).set(
        panoptic_root=panoptic_root,
        image_root=image_root,
        panoptic_json=panoptic_json,
        json_file=instances_json,
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        **metadata,
    )


def register_coco_panoptic_separated(
    name: str,
    metadata: dict,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str,
    instances_json: str,
) -> None:
    """Register Panoptic FPN's separated form: ``name + "_separated"`` and ``"_stuffonly"``.

    ``name + "_separated"`` has the instance annotations of ``instances_json`` merged with the
    semantic labels of ``sem_seg_root`` (all things as one class 0, stuff classes from 1);
    ``name + "_stuffonly"`` has the semantic labels alone.

    Args:
        name: the base name, e.g. ``"coco_2017_train_panoptic"``.
        metadata: thing and stuff metadata in the separated convention.
        image_root: folder of the images.
        panoptic_root: folder of the panoptic PNGs (used by the evaluator).
        panoptic_json: the panoptic JSON (used by the evaluator).
        sem_seg_root: folder of the semantic label PNGs.
        instances_json: the COCO instances JSON.
    """
    panoptic_name = name + "_separated"
    DatasetCatalog.register(
        panoptic_name,
        lambda: merge_to_panoptic(
            load_coco_json(instances_json, image_root, panoptic_name),
            load_sem_seg(sem_seg_root, image_root),
        ),
    )
    MetadataCatalog.get(panoptic_name).set(
        panoptic_root=panoptic_root,
        image_root=image_root,
        panoptic_json=panoptic_json,
        sem_seg_root=sem_seg_root,
        json_file=instances_json,
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        **metadata,
    )
    semantic_name = name + "_stuffonly"
    DatasetCatalog.register(semantic_name, lambda: load_sem_seg(sem_seg_root, image_root))
    MetadataCatalog.get(semantic_name).set(
        sem_seg_root=sem_seg_root,
        image_root=image_root,
        evaluator_type="sem_seg",
        ignore_label=255,
        **metadata,
    )


def merge_to_panoptic(detection_dicts: list[dict], sem_seg_dicts: list[dict]) -> list[dict]:
    """Merge instance dicts with semantic dicts of the same ``file_name``.

    Args:
        detection_dicts: dicts with instance annotations.
        sem_seg_dicts: dicts with ``sem_seg_file_name``.

    Returns:
        One dict per detection dict, updated with its semantic dict's keys.

    Raises:
        KeyError: an image of ``detection_dicts`` has no semantic dict.
    """
    by_file = {d["file_name"]: d for d in sem_seg_dicts}
    results = []
    for det in detection_dicts:
        if det["file_name"] not in by_file:
            raise KeyError(
                f"{det['file_name']} has instance annotations but no semantic label file "
                f"({len(by_file)} images have one)."
            )
        merged = copy.copy(det)
        merged.update(by_file[det["file_name"]])
        results.append(merged)
    return results
