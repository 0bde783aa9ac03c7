"""Cityscapes: instance and semantic loading, and registration of every form.

The label table and metadata live in ``cityscapes_labels`` (re-exported here), so loading needs
no ``cityscapesscripts``; it is needed only to prepare the data
(``datasets/prepare_cityscapes.py``) and to evaluate.

Expected layout under the Cityscapes folder (the ``leftImg8bit_trainvaltest.zip`` and
``gtFine_trainvaltest.zip`` downloads)::

    leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_{instanceIds,labelIds}.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_polygons.json
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelTrainIds.png   (prepare_cityscapes.py)
    gtFine/cityscapes_panoptic_{train,val}.json and gtFine/cityscapes_panoptic_{train,val}/

Where we differ from Detectron2 on purpose: images are listed in sorted order; a missing
annotation file or unknown label raises an error naming the file (not an ``assert``); only the
annotation file that is read must exist (Detectron2 also demands ``labelIds.png``); boxes of
instances read from ``instanceIds.png`` end one pixel after the last pixel, so they contain the
whole mask (Detectron2's end on the last pixel); ``iscrowd`` is 0/1 instead of a bool.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import multiprocessing as mp
import os
import sys
from collections.abc import Callable
from itertools import chain

import cv2
import numpy as np
import pycocotools.mask as mask_util
from PIL import Image
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from segtron.data.catalog import DatasetCatalog, MetadataCatalog
from segtron.data.datasets.cityscapes_labels import (
    CITYSCAPES_CATEGORIES,
    CITYSCAPES_LABELS,
    ID_TO_LABEL,
    NAME_TO_LABEL,
    THING_ID_TO_CONTIGUOUS,
    CityscapesLabel,
    get_cityscapes_metadata,
)
from segtron.data.datasets.cityscapes_panoptic import load_cityscapes_panoptic
from segtron.structures import BoxMode
from segtron.utils.file_io import PathManager

__all__ = [
    "CITYSCAPES_CATEGORIES",
    "CITYSCAPES_LABELS",
    "CityscapesLabel",
    "get_cityscapes_metadata",
    "load_cityscapes_instances",
    "load_cityscapes_semantic",
    "register_all_cityscapes",
]

logger = logging.getLogger(__name__)


_IMAGE_SUFFIX = "_leftImg8bit.png"
_INSTANCE_IDS_SUFFIX = "_gtFine_instanceIds.png"
_TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
_POLYGONS_SUFFIX = "_gtFine_polygons.json"
_PARALLEL_MIN_FILES = 64  # below this, a process pool costs more than it saves


def _image_files(image_dir: str) -> list[str]:
    """Sorted ``<city>/*_leftImg8bit.png`` files of ``image_dir``."""
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"The Cityscapes image folder {image_dir} does not exist.")
    files = sorted(glob.glob(os.path.join(glob.escape(image_dir), "*", "*" + _IMAGE_SUFFIX)))
    if not files:
        raise FileNotFoundError(
            f"No image '<city>/*{_IMAGE_SUFFIX}' under {image_dir}; is it a split folder of "
            "leftImg8bit/?"
        )
    return files


def _gt_file(image_file: str, image_dir: str, gt_dir: str, suffix: str) -> str:
    """The annotation file of ``image_file`` in ``gt_dir`` with the given suffix."""
    relative = os.path.relpath(image_file, image_dir)[: -len(_IMAGE_SUFFIX)]
    return os.path.join(gt_dir, relative + suffix)


def _label_of(label_name: str, json_file: str) -> tuple[CityscapesLabel, bool]:
    """The label of a polygon's ``label`` field and whether it is a crowd (``<name>group``)."""
    if label_name in NAME_TO_LABEL:
        return NAME_TO_LABEL[label_name], False
    if label_name.endswith("group") and label_name[: -len("group")] in NAME_TO_LABEL:
        return NAME_TO_LABEL[label_name[: -len("group")]], True
    raise ValueError(
        f"{json_file} has an object labelled '{label_name}', which is not a Cityscapes label "
        "(nor '<label>group'). Is this a Cityscapes gtFine polygons file?"
    )


def _polygon_parts(geometry: BaseGeometry) -> list[Polygon]:
    """The non-empty polygons of a geometry (lines and points left by a difference dropped)."""
    if isinstance(geometry, Polygon):
        return [] if geometry.is_empty else [geometry]
    return [p for g in getattr(geometry, "geoms", []) for p in _polygon_parts(g)]


def _annotations_from_json(json_file: str) -> tuple[int, int, list[dict]]:
    """(height, width, annotations) of a ``*_gtFine_polygons.json`` file.

    Objects are drawn in file order, each overwriting the earlier ones (as cityscapesscripts
    rasterizes them), so each instance keeps only its part not covered by later objects.
    """
    with PathManager.open(json_file, "r") as f:
        try:
            content = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{json_file} is not a valid JSON file ({err}).") from err
    covered = Polygon()  # union of the objects drawn after the current one
    annotations = []
    for obj in reversed(content["objects"]):
        if "deleted" in obj or len(obj["polygon"]) < 3:
            continue
        label, iscrowd = _label_of(obj["label"], json_file)
        if label.id < 0:  # e.g. license plates: never drawn
            continue
        # Vertices are integer pixel coordinates; PIL fills the pixels whose centres fall inside,
        # which a polygon through the pixel centres, grown by half a pixel, approximates.
        coords = np.asarray(obj["polygon"], dtype=np.float64) + 0.5
        polygon = Polygon(coords).buffer(0.5, quad_segs=4)
        if not label.hasInstances or label.ignoreInEval:
            covered = covered.union(polygon)
            continue
        parts = _polygon_parts(polygon.difference(covered))
        covered = covered.union(polygon)
        if not parts:
            continue
        annotations.append(
            {
                "iscrowd": int(iscrowd),
                "category_id": THING_ID_TO_CONTIGUOUS[label.id],
                # pycocotools reads exterior rings only, so holes are not kept.
                "segmentation": [list(chain.from_iterable(p.exterior.coords)) for p in parts],
                "bbox": list(MultiPolygon(parts).bounds),
                "bbox_mode": BoxMode.XYXY_ABS,
            }
        )
    return content["imgHeight"], content["imgWidth"], annotations


def _annotations_from_png(instance_file: str, to_polygons: bool) -> tuple[int, int, list[dict]]:
    """(height, width, annotations) of a ``*_gtFine_instanceIds.png`` file.

    A pixel value v >= 1000 is instance v % 1000 of label v // 1000; a value v < 1000 is label v
    without instance (a crowd, for labels with instances).
    """
    with PathManager.open(instance_file, "rb") as f:
        ids = np.asarray(Image.open(f), dtype=np.int64)
    annotations = []
    for instance_id in np.unique(ids[ids >= 24]).tolist():  # ids < 24 are stuff labels
        label_id = instance_id // 1000 if instance_id >= 1000 else instance_id
        label = ID_TO_LABEL.get(label_id)
        if label is None:
            raise ValueError(
                f"{instance_file} has pixel value {instance_id}, whose label id {label_id} is not "
                "a Cityscapes label. Is this a Cityscapes instanceIds PNG?"
            )
        if not label.hasInstances or label.ignoreInEval:
            continue
        mask = np.asfortranarray(ids == instance_id, dtype=np.uint8)
        rows, cols = np.nonzero(mask)
        x0, y0, x1, y1 = int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())
        if x0 == x1 or y0 == y1:
            continue  # one pixel thin: no valid polygon (Detectron2 drops these too)
        if to_polygons:
            contours = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[-2]
            segmentation = [c.reshape(-1).tolist() for c in contours if len(c) >= 3]
            if not segmentation:
                continue
        else:
            segmentation = mask_util.encode(mask)
        annotations.append(
            {
                "iscrowd": int(instance_id < 1000),
                "category_id": THING_ID_TO_CONTIGUOUS[label.id],
                "segmentation": segmentation,
                "bbox": [x0, y0, x1 + 1, y1 + 1],
                "bbox_mode": BoxMode.XYXY_ABS,
            }
        )
    return ids.shape[0], ids.shape[1], annotations


def _image_dict(files: tuple[str, str], from_json: bool, to_polygons: bool) -> dict:
    """The dataset dict of one (image file, annotation file) pair."""
    image_file, gt_file = files
    if from_json:
        height, width, annotations = _annotations_from_json(gt_file)
    else:
        height, width, annotations = _annotations_from_png(gt_file, to_polygons)
    return {
        "file_name": image_file,
        "image_id": os.path.basename(image_file),
        "height": height,
        "width": width,
        "annotations": annotations,
    }


def _num_workers(num_files: int, requested: int | None) -> int:
    """How many processes to load ``num_files`` files with (1: in this process)."""
    if not sys.platform.startswith("linux") or mp.current_process().daemon:
        return 1  # forking is safe on Linux only, and daemons (loader workers) cannot fork
    if requested is not None:
        return requested
    return 1 if num_files < _PARALLEL_MIN_FILES else min(8, len(os.sched_getaffinity(0)))


def load_cityscapes_instances(
    image_dir: str,
    gt_dir: str,
    from_json: bool = True,
    to_polygons: bool = True,
    *,
    num_workers: int | None = None,
) -> list[dict]:
    """Load the instance annotations of one Cityscapes split into Detectron2 dataset dicts.

    Args:
        image_dir: the images of the split, e.g. ``"cityscapes/leftImg8bit/train"``.
        gt_dir: its annotations, e.g. ``"cityscapes/gtFine/train"``.
        from_json: read the polygons of ``*_gtFine_polygons.json`` (overlaps resolved as
            cityscapesscripts draws them: later objects cover earlier ones); else the
            ``*_gtFine_instanceIds.png`` masks.
        to_polygons: give polygons; else (only with ``from_json=False``) compressed RLE.
        num_workers: processes reading the files (forked; on Linux only, elsewhere 1); None
            picks ``min(8, #CPUs)`` for large splits and 1 (this process) for small ones.

    Returns:
        One dict per image, sorted by file name, with ``file_name``, ``image_id`` (the image's
        file name), ``height``, ``width`` and ``annotations`` (``bbox`` in XYXY_ABS,
        ``category_id`` contiguous over the 8 thing classes, ``iscrowd``, ``segmentation``).

    Raises:
        ValueError: ``from_json`` without ``to_polygons``; a file has an unknown label.
        FileNotFoundError: ``image_dir`` has no image, or an annotation file is missing.
    """
    if from_json and not to_polygons:
        raise ValueError(
            "Cityscapes' JSON annotations are polygons; use to_polygons=True, or from_json=False "
            "to read RLE masks from the instanceIds PNGs."
        )
    suffix = _POLYGONS_SUFFIX if from_json else _INSTANCE_IDS_SUFFIX
    files = []
    for image_file in _image_files(image_dir):
        gt_file = _gt_file(image_file, image_dir, gt_dir, suffix)
        if not PathManager.isfile(gt_file):
            raise FileNotFoundError(
                f"{gt_file} does not exist: each image of {image_dir} needs its '*{suffix}' in "
                f"{gt_dir} (from Cityscapes' gtFine_trainvaltest.zip)."
            )
        files.append((image_file, gt_file))
    load = functools.partial(_image_dict, from_json=from_json, to_polygons=to_polygons)
    workers = _num_workers(len(files), num_workers)
    if workers > 1:
        chunksize = max(1, len(files) // (4 * workers))
        with mp.get_context("fork").Pool(workers) as pool:
            ret = pool.map(load, files, chunksize=chunksize)
    else:
        ret = [load(f) for f in files]
    logger.info("Loaded %d images with instance annotations from %s.", len(ret), image_dir)
    return ret


def load_cityscapes_semantic(image_dir: str, gt_dir: str) -> list[dict]:
    """Pair the images of one Cityscapes split with their ``*_gtFine_labelTrainIds.png``.

    Args:
        image_dir: the images of the split, e.g. ``"cityscapes/leftImg8bit/train"``.
        gt_dir: its annotations, e.g. ``"cityscapes/gtFine/train"``.

    Returns:
        One dict per image, sorted by file name, with ``file_name``, ``sem_seg_file_name`` (train
        ids, 255 = ignore), ``height`` and ``width`` (read from the label PNG's header).

    Raises:
        FileNotFoundError: ``image_dir`` has no image, or a labelTrainIds PNG is missing.
    """
    ret = []
    for image_file in _image_files(image_dir):
        label_file = _gt_file(image_file, image_dir, gt_dir, _TRAIN_IDS_SUFFIX)
        if not PathManager.isfile(label_file):
            raise FileNotFoundError(
                f"{label_file} does not exist. Create the labelTrainIds PNGs with `python "
                'datasets/prepare_cityscapes.py` (it needs cityscapesscripts: `pip install -e ".'
                '[cityscapes]"`).'
            )
        with PathManager.open(label_file, "rb") as f:
            width, height = Image.open(f).size
        record = {"file_name": image_file, "sem_seg_file_name": label_file}
        ret.append(record | {"height": height, "width": width})
    logger.info("Loaded %d images with semantic labels from %s.", len(ret), image_dir)
    return ret


def _checked(
    name: str, folders: list[str], loader: Callable[[], list[dict]]
) -> Callable[[], list[dict]]:
    """``loader`` of dataset ``name``, run after checking that the downloaded folders exist."""

    def load() -> list[dict]:
        for folder in folders:
            if not os.path.isdir(folder):
                env = os.environ.get("SEGTRON_DATASETS")
                current = f"SEGTRON_DATASETS={env}" if env else "SEGTRON_DATASETS is not set"
                raise FileNotFoundError(
                    f"Dataset '{name}' needs {folder}, which does not exist. Put Cityscapes "
                    "(leftImg8bit/ and gtFine/ from leftImg8bit_trainvaltest.zip and "
                    "gtFine_trainvaltest.zip) in $SEGTRON_DATASETS/cityscapes, default "
                    f"./datasets/cityscapes ({current}); see datasets/README.md."
                )
        return loader()

    return load


def register_all_cityscapes(root: str) -> None:
    """Register Detectron2's Cityscapes datasets, reading nothing until one is used.

    Registers ``cityscapes_fine_instance_seg_{train,val,test}`` (instances from the polygons
    JSON), ``cityscapes_fine_sem_seg_{train,val,test}`` (labelTrainIds) and
    ``cityscapes_fine_panoptic_{train,val}``, with the metadata Detectron2 gives them, and
    ``cityscapes_fine_panoptic_separated_{train,val}``: the same panoptic files with Panoptic
    FPN's separated metadata (``get_cityscapes_metadata("panoptic_separated")``), for
    Panoptic FPN / UPSNet trained with ``PanopticSeparatedDatasetMapper``; both are scored with
    PQ (``COCOPanopticEvaluator``).

    Args:
        root: the Cityscapes folder, holding ``leftImg8bit/`` and ``gtFine/``.
    """
    for split in ("train", "val", "test"):
        image_dir = os.path.join(root, "leftImg8bit", split)
        gt_dir = os.path.join(root, "gtFine", split)
        folders = [image_dir, gt_dir]

        name = f"cityscapes_fine_instance_seg_{split}"
        DatasetCatalog.register(
            name,
            _checked(
                name, folders, functools.partial(load_cityscapes_instances, image_dir, gt_dir)
            ),
        )
        MetadataCatalog.get(name).set(
            image_dir=image_dir,
            gt_dir=gt_dir,
            evaluator_type="cityscapes_instance",
            **get_cityscapes_metadata("instance_seg"),
        )

        name = f"cityscapes_fine_sem_seg_{split}"
        DatasetCatalog.register(
            name,
            _checked(name, folders, functools.partial(load_cityscapes_semantic, image_dir, gt_dir)),
        )
        MetadataCatalog.get(name).set(
            image_dir=image_dir,
            gt_dir=gt_dir,
            evaluator_type="cityscapes_sem_seg",
            ignore_label=255,
            **get_cityscapes_metadata("sem_seg"),
        )

        if split == "test":  # the test split has no public panoptic annotations
            continue
        panoptic_root = os.path.join(root, "gtFine", f"cityscapes_panoptic_{split}")
        panoptic_json = panoptic_root + ".json"
        for kind in ("panoptic", "panoptic_separated"):
            meta = get_cityscapes_metadata(kind)
            name = f"cityscapes_fine_{kind}_{split}"
            load = functools.partial(
                load_cityscapes_panoptic, image_dir, panoptic_root, panoptic_json, meta
            )
            DatasetCatalog.register(name, _checked(name, folders, load))
            MetadataCatalog.get(name).set(
                panoptic_root=panoptic_root,
                image_root=image_dir,
                image_dir=image_dir,
                panoptic_json=panoptic_json,
                gt_dir=gt_dir,
                evaluator_type="cityscapes_panoptic_seg",
                ignore_label=255,
                label_divisor=1000,
                **meta,
            )
