"""Dataset loaders in Detectron2's formats and the builtin dataset registrations.

Importing this package registers the builtin datasets (lazily: nothing is read or generated
until a dataset is used).
"""

from segtron.data.datasets import builtin  # noqa: F401  (registers the builtin datasets)
from segtron.data.datasets.cityscapes import (
    CITYSCAPES_CATEGORIES,
    CITYSCAPES_LABELS,
    CityscapesLabel,
    get_cityscapes_metadata,
    load_cityscapes_instances,
    load_cityscapes_semantic,
    register_all_cityscapes,
)
from segtron.data.datasets.cityscapes_panoptic import load_cityscapes_panoptic
from segtron.data.datasets.coco import (
    convert_to_coco_dict,
    convert_to_coco_json,
    load_coco_json,
    load_sem_seg,
    register_coco_instances,
    register_sem_seg,
)
from segtron.data.datasets.coco_panoptic import (
    load_coco_panoptic_json,
    merge_to_panoptic,
    register_coco_panoptic,
    register_coco_panoptic_separated,
)
from segtron.data.datasets.pascal_voc import load_voc_sem_seg, register_voc_sem_seg
from segtron.data.datasets.synthetic import (
    SYNTHETIC_CATEGORIES,
    generate_synthetic_dataset,
    get_synthetic_metadata,
    register_synthetic,
)

__all__ = [
    "CITYSCAPES_CATEGORIES",
    "CITYSCAPES_LABELS",
    "SYNTHETIC_CATEGORIES",
    "CityscapesLabel",
    "convert_to_coco_dict",
    "convert_to_coco_json",
    "generate_synthetic_dataset",
    "get_cityscapes_metadata",
    "get_synthetic_metadata",
    "load_cityscapes_instances",
    "load_cityscapes_panoptic",
    "load_cityscapes_semantic",
    "load_coco_json",
    "load_coco_panoptic_json",
    "load_sem_seg",
    "load_voc_sem_seg",
    "merge_to_panoptic",
    "register_all_cityscapes",
    "register_coco_instances",
    "register_coco_panoptic",
    "register_coco_panoptic_separated",
    "register_sem_seg",
    "register_synthetic",
    "register_voc_sem_seg",
]
