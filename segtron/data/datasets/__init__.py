"""Dataset loaders in Detectron2's formats and the builtin dataset registrations.

Importing this package registers the builtin datasets (lazily: nothing is read or generated
until a dataset is used).
"""

from segtron.data.datasets import builtin  # noqa: F401  (registers the builtin datasets)
from segtron.data.datasets.coco import (
    convert_to_coco_dict,
    convert_to_coco_json,
    load_coco_json,
    load_sem_seg,
    register_coco_instances,
)
from segtron.data.datasets.coco_panoptic import (
    load_coco_panoptic_json,
    merge_to_panoptic,
    register_coco_panoptic,
    register_coco_panoptic_separated,
)
from segtron.data.datasets.synthetic import (
    SYNTHETIC_CATEGORIES,
    generate_synthetic_dataset,
    get_synthetic_metadata,
    register_synthetic,
)

__all__ = [
    "SYNTHETIC_CATEGORIES",
    "convert_to_coco_dict",
    "convert_to_coco_json",
    "generate_synthetic_dataset",
    "get_synthetic_metadata",
    "load_coco_json",
    "load_coco_panoptic_json",
    "load_sem_seg",
    "merge_to_panoptic",
    "register_coco_instances",
    "register_coco_panoptic",
    "register_coco_panoptic_separated",
    "register_synthetic",
]
