"""Pascal VOC semantic segmentation: splits listed in ``ImageSets/Segmentation/<split>.txt``.

A VOC 2012 folder, once ``datasets/prepare_pascal_voc_sbd.py`` has run, holds::

    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png      VOC's labels as palette PNGs (as downloaded)
    SegmentationClassAug/<id>.png   single-channel labels 0..20, 255 = void (written by the script,
                                    from SegmentationClass and from SBD for the extra images)
    ImageSets/Segmentation/{train,val,trainval}.txt, train_aug.txt (written by the script)

Labels are read from ``SegmentationClassAug`` because the data mappers read labels as grayscale,
which would turn the colours of VOC's palette PNGs into luminance values instead of class ids.
Detectron2's Pascal VOC loader is for detection (boxes from the XML files); this module is for
semantic segmentation only.
"""

from __future__ import annotations

import functools
import logging
import os

from PIL import Image

from segtron.data.catalog import DatasetCatalog, MetadataCatalog
from segtron.utils.file_io import PathManager

__all__ = ["load_voc_sem_seg", "read_split_file", "register_voc_sem_seg"]

logger = logging.getLogger(__name__)

_PREPARE_HINT = (
    "Run `python datasets/prepare_pascal_voc_sbd.py` (see datasets/README.md) to write the "
    "single-channel labels and the train_aug list."
)


def read_split_file(list_file: str | os.PathLike) -> list[str]:
    """The image ids of a VOC list file: the first word of each non-empty line.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file lists no image.
    """
    list_file = os.fspath(list_file)
    if not PathManager.isfile(list_file):
        raise FileNotFoundError(
            f"The Pascal VOC split file {list_file} does not exist. {_PREPARE_HINT}"
        )
    with PathManager.open(list_file, "r") as f:
        ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
        raise ValueError(f"The Pascal VOC split file {list_file} lists no image.")
    return ids


def _missing(paths: list[str], what: str, list_file: str) -> None:
    """Raise when some of ``paths`` do not exist, naming a few of them."""
    missing = [p for p in paths if not PathManager.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} {what} of the images listed in {list_file} do not exist "
            f"(e.g. {missing[:3]}). {_PREPARE_HINT}"
        )


def load_voc_sem_seg(
    voc_root: str | os.PathLike,
    split: str,
    label_dir: str = "SegmentationClassAug",
    image_ext: str = "jpg",
    label_ext: str = "png",
) -> list[dict]:
    """Load one split of Pascal VOC semantic segmentation into dataset dicts.

    Args:
        voc_root: the ``VOC2012`` folder.
        split: the list file's name in ``ImageSets/Segmentation`` without ``.txt``: ``train``,
            ``val``, ``trainval`` or ``train_aug``.
        label_dir: the sub-folder of single-channel label PNGs.
        image_ext: extension of the images in ``JPEGImages``.
        label_ext: extension of the label files.

    Returns:
        Dicts with ``file_name``, ``sem_seg_file_name``, ``image_id`` (the VOC id, a string),
        ``height`` and ``width``, in the order of the list file.

    Raises:
        FileNotFoundError: the list file, an image or a label file does not exist.
        ValueError: the list file is empty, or a label file is not single-channel.
    """
    voc_root = os.fspath(voc_root)
    list_file = os.path.join(voc_root, "ImageSets", "Segmentation", f"{split}.txt")
    ids = read_split_file(list_file)
    images = [os.path.join(voc_root, "JPEGImages", f"{i}.{image_ext}") for i in ids]
    labels = [os.path.join(voc_root, label_dir, f"{i}.{label_ext}") for i in ids]
    _missing(labels, "label files", list_file)
    _missing(images, "image files", list_file)
    dataset_dicts = []
    for image_id, image, label in zip(ids, images, labels):
        with PathManager.open(label, "rb") as f:
            label_image = Image.open(f)
            mode, (width, height) = label_image.mode, label_image.size
        if mode not in ("L", "I", "I;16"):
            raise ValueError(
                f"{label} is a '{mode}' image, not a single-channel label image: the class ids "
                f"would be read as colours. {_PREPARE_HINT}"
            )
        dataset_dicts.append(
            {
                "file_name": image,
                "sem_seg_file_name": label,
                "image_id": image_id,
                "height": height,
                "width": width,
            }
        )
    logger.info("Loaded %d images of Pascal VOC split '%s' from %s", len(ids), split, voc_root)
    return dataset_dicts


def register_voc_sem_seg(
    name: str,
    voc_root: str | os.PathLike,
    split: str,
    metadata: dict | None = None,
    *,
    label_dir: str = "SegmentationClassAug",
) -> None:
    """Register one Pascal VOC semantic split as ``name``; nothing is read until it is used.

    The metadata gets ``image_root``, ``sem_seg_root``, ``split``, everything in ``metadata``
    and, unless ``metadata`` sets other values, ``evaluator_type="sem_seg"`` and
    ``ignore_label=255``.

    Args:
        name: the dataset name, e.g. ``"voc_2012_sem_seg_train_aug"``.
        voc_root: the ``VOC2012`` folder.
        split: the list file in ``ImageSets/Segmentation`` (without ``.txt``).
        metadata: extra metadata, e.g. ``stuff_classes`` and ``stuff_colors``.
        label_dir: the sub-folder of single-channel label PNGs.
    """
    voc_root = os.fspath(voc_root)
    DatasetCatalog.register(
        name, functools.partial(load_voc_sem_seg, voc_root, split, label_dir=label_dir)
    )
    defaults = {"evaluator_type": "sem_seg", "ignore_label": 255}
    paths = {
        "image_root": os.path.join(voc_root, "JPEGImages"),
        "sem_seg_root": os.path.join(voc_root, label_dir),
        "split": split,
    }
    MetadataCatalog.get(name).set(**(defaults | (metadata or {}) | paths))
