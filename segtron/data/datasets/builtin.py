"""Registration of the builtin datasets under Detectron2's names.

The datasets live under ``$SEGTRON_DATASETS`` (default ``./datasets``) in the layouts that
``datasets/README.md`` describes; registering reads no file. Using a dataset whose folder or
file is missing raises ``FileNotFoundError`` naming the path, the variable and the README.

Registered names:

- ``synthetic_{train,val}`` and their panoptic / semantic forms, generated into
  ``<datasets root>/synthetic`` on first use, and ``synthetic_large_train`` (and its forms:
  1000 training images, a superset of ``synthetic_train``) in ``<datasets root>/synthetic_large``;
- COCO 2017 instances: ``coco_2017_{train,val,test,test-dev,val_100}``;
- COCO 2017 panoptic: ``coco_2017_{train,val}_panoptic`` (standard, 133 classes),
  ``..._panoptic_separated`` and ``..._panoptic_stuffonly`` (Panoptic FPN) and
  ``..._panoptic_with_sem_seg`` (standard, plus a 133-class semantic label per image);
- ADE20K SceneParsing: ``ade20k_sem_seg_{train,val}``;
- Pascal VOC 2012 semantic: ``voc_2012_sem_seg_{train,val,train_aug}``;
- Cityscapes fine: ``cityscapes_fine_{instance_seg,sem_seg}_{train,val,test}`` and
  ``cityscapes_fine_panoptic_{train,val}`` (standard) and
  ``cityscapes_fine_panoptic_separated_{train,val}`` (the same files with Panoptic FPN's
  separated metadata, for `PanopticSeparatedDatasetMapper`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

from segtron.data.catalog import DatasetCatalog
from segtron.data.datasets.builtin_meta import get_builtin_metadata
from segtron.data.datasets.cityscapes import register_all_cityscapes
from segtron.data.datasets.coco import register_coco_instances, register_sem_seg
from segtron.data.datasets.coco_panoptic import (
    register_coco_panoptic,
    register_coco_panoptic_separated,
)
from segtron.data.datasets.pascal_voc import register_voc_sem_seg
from segtron.data.datasets.synthetic import register_synthetic

__all__ = ["register_all_ade20k", "register_all_coco", "register_all_voc_sem_seg"]

# name -> (image folder, instances JSON), relative to the datasets root.
_COCO_INSTANCES = {
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
    "coco_2017_test": ("coco/test2017", "coco/annotations/image_info_test2017.json"),
    "coco_2017_test-dev": ("coco/test2017", "coco/annotations/image_info_test-dev2017.json"),
    "coco_2017_val_100": ("coco/val2017", "coco/annotations/instances_val2017_100.json"),
}

_PANOPTIC_FPN = "python datasets/prepare_panoptic_fpn.py"
_ADE20K = "python datasets/prepare_ade20k_sem_seg.py"
_VOC = "python datasets/prepare_pascal_voc_sbd.py"

# A required path, and the command that writes it when a prepare script does.
_Requirement = tuple[str, str | None]


def _root() -> str:
    """The datasets root: ``$SEGTRON_DATASETS``, default ``./datasets``."""
    return os.path.expanduser(os.environ.get("SEGTRON_DATASETS", "datasets"))


def _check_then_load(
    name: str, root: str, required: Sequence[_Requirement], load: Callable[[], list[dict]]
) -> list[dict]:
    """Raise a helpful error for the first missing path of ``required``, else ``load()``."""
    for path, command in required:
        if not os.path.exists(path):
            written_by = f" It is written by `{command}`." if command else ""
            raise FileNotFoundError(
                f"Dataset '{name}' needs {path}, which does not exist.{written_by} Builtin "
                f"datasets are read from $SEGTRON_DATASETS (now '{root}'); set SEGTRON_DATASETS "
                "to the folder holding your datasets, laid out as datasets/README.md describes."
            )
    return load()


def _require(name: str, root: str, *required: _Requirement) -> None:
    """Make the registered loader of ``name`` check ``required`` paths before loading."""
    load = DatasetCatalog.pop(name)
    DatasetCatalog.register(name, functools.partial(_check_then_load, name, root, required, load))


def register_all_coco(root: str) -> None:
    """Register COCO 2017 instances and its three panoptic forms under ``root/coco``.

    For each split with panoptic labels (``train``, ``val``) this registers
    ``coco_2017_<split>_panoptic`` (standard; images, ``panoptic_<split>2017`` PNGs and JSON),
    ``..._panoptic_separated`` / ``..._panoptic_stuffonly`` (instances + the Panoptic FPN
    labels of ``panoptic_stuff_<split>2017``) and ``..._panoptic_with_sem_seg`` (standard +
    ``sem_seg_file_name`` from ``panoptic_semseg_<split>2017``).

    Args:
        root: the datasets root.
    """
    for name, (image_dir, json_file) in _COCO_INSTANCES.items():
        image_root, json_path = os.path.join(root, image_dir), os.path.join(root, json_file)
        register_coco_instances(name, get_builtin_metadata("coco"), json_path, image_root)
        _require(name, root, (image_root, None), (json_path, None))

    for split in ("train", "val"):
        image_root = os.path.join(root, "coco", f"{split}2017")
        instances_json = os.path.join(root, "coco", "annotations", f"instances_{split}2017.json")
        panoptic_root = os.path.join(root, "coco", f"panoptic_{split}2017")
        panoptic_json = os.path.join(root, "coco", "annotations", f"panoptic_{split}2017.json")
        stuff_root = os.path.join(root, "coco", f"panoptic_stuff_{split}2017")
        semseg_root = os.path.join(root, "coco", f"panoptic_semseg_{split}2017")
        panoptic = [(image_root, None), (panoptic_root, None), (panoptic_json, None)]
        prefix = f"coco_2017_{split}_panoptic"

        register_coco_panoptic(
            prefix,
            get_builtin_metadata("coco_panoptic_standard"),
            image_root,
            panoptic_root,
            panoptic_json,
            instances_json,
        )
        _require(prefix, root, *panoptic)

        register_coco_panoptic_separated(
            prefix,
            get_builtin_metadata("coco_panoptic_separated"),
            image_root,
            panoptic_root,
            panoptic_json,
            stuff_root,
            instances_json,
        )
        stuff = (stuff_root, _PANOPTIC_FPN)
        _require(prefix + "_separated", root, *panoptic, (instances_json, None), stuff)
        _require(prefix + "_stuffonly", root, (image_root, None), stuff)

        with_sem_seg = prefix + "_with_sem_seg"
        register_coco_panoptic(
            with_sem_seg,
            get_builtin_metadata("coco_panoptic_standard"),
            image_root,
            panoptic_root,
            panoptic_json,
            instances_json,
            sem_seg_root=semseg_root,
        )
        semseg_command = _PANOPTIC_FPN + " --with-sem-seg"
        _require(with_sem_seg, root, *panoptic, (semseg_root, semseg_command))


def register_all_ade20k(root: str) -> None:
    """Register ``ade20k_sem_seg_{train,val}`` from ``root/ADEChallengeData2016``.

    Images come from ``images/{training,validation}`` and labels (150 classes, 255 = ignore)
    from ``annotations_detectron2/{training,validation}``, written by
    ``datasets/prepare_ade20k_sem_seg.py``.

    Args:
        root: the datasets root.
    """
    ade_root = os.path.join(root, "ADEChallengeData2016")
    for split, folder in (("train", "training"), ("val", "validation")):
        name = f"ade20k_sem_seg_{split}"
        image_dir = os.path.join(ade_root, "images", folder)
        gt_dir = os.path.join(ade_root, "annotations_detectron2", folder)
        register_sem_seg(name, image_dir, gt_dir, get_builtin_metadata("ade20k_sem_seg"))
        _require(name, root, (image_dir, None), (gt_dir, _ADE20K))


def register_all_voc_sem_seg(root: str) -> None:
    """Register ``voc_2012_sem_seg_{train,val,train_aug}`` from ``root/VOC2012``.

    ``train`` and ``val`` are VOC 2012's segmentation splits; ``train_aug`` is VOC's train
    split plus the SBD images, without VOC's val images (10,582 images). All read their labels
    (21 classes, 255 = ignore) from ``SegmentationClassAug``, written by
    ``datasets/prepare_pascal_voc_sbd.py``.

    Args:
        root: the datasets root.
    """
    voc_root = os.path.join(root, "VOC2012")
    for split in ("train", "val", "train_aug"):
        name = f"voc_2012_sem_seg_{split}"
        register_voc_sem_seg(name, voc_root, split, get_builtin_metadata("voc_sem_seg"))
        list_file = os.path.join(voc_root, "ImageSets", "Segmentation", f"{split}.txt")
        _require(
            name,
            root,
            (os.path.join(voc_root, "JPEGImages"), None),
            (os.path.join(voc_root, "SegmentationClassAug"), _VOC),
            (list_file, _VOC if split == "train_aug" else None),
        )


register_synthetic(os.path.join(_root(), "synthetic"))
# The same generator, 1000 training images (the first 200 are those of synthetic_train).
register_synthetic(
    os.path.join(_root(), "synthetic_large"), prefix="synthetic_large", num_images={"train": 1000}
)
register_all_coco(_root())
register_all_ade20k(_root())
register_all_voc_sem_seg(_root())
register_all_cityscapes(os.path.join(_root(), "cityscapes"))
