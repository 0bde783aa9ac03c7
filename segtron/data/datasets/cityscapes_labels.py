"""The Cityscapes label table and Detectron2's metadata of the forms of Cityscapes.

The table holds the facts of ``cityscapesscripts``' ``labels.py`` (name, id, trainId, category,
hasInstances, ignoreInEval, colour), so that loading and metadata need no ``cityscapesscripts``.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "CITYSCAPES_CATEGORIES",
    "CITYSCAPES_LABELS",
    "CityscapesLabel",
    "ID_TO_LABEL",
    "NAME_TO_LABEL",
    "THING_ID_TO_CONTIGUOUS",
    "get_cityscapes_metadata",
]


class CityscapesLabel(NamedTuple):
    """One Cityscapes label, with the field names of ``cityscapesscripts.helpers.labels``."""

    name: str
    id: int
    trainId: int
    category: str
    hasInstances: bool
    ignoreInEval: bool
    color: tuple[int, int, int]


_L = CityscapesLabel
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    _L("unlabeled", 0, 255, "void", False, True, (0, 0, 0)),
    _L("ego vehicle", 1, 255, "void", False, True, (0, 0, 0)),
    _L("rectification border", 2, 255, "void", False, True, (0, 0, 0)),
    _L("out of roi", 3, 255, "void", False, True, (0, 0, 0)),
    _L("static", 4, 255, "void", False, True, (0, 0, 0)),
    _L("dynamic", 5, 255, "void", False, True, (111, 74, 0)),
    _L("ground", 6, 255, "void", False, True, (81, 0, 81)),
    _L("road", 7, 0, "flat", False, False, (128, 64, 128)),
    _L("sidewalk", 8, 1, "flat", False, False, (244, 35, 232)),
    _L("parking", 9, 255, "flat", False, True, (250, 170, 160)),
    _L("rail track", 10, 255, "flat", False, True, (230, 150, 140)),
    _L("building", 11, 2, "construction", False, False, (70, 70, 70)),
    _L("wall", 12, 3, "construction", False, False, (102, 102, 156)),
    _L("fence", 13, 4, "construction", False, False, (190, 153, 153)),
    _L("guard rail", 14, 255, "construction", False, True, (180, 165, 180)),
    _L("bridge", 15, 255, "construction", False, True, (150, 100, 100)),
    _L("tunnel", 16, 255, "construction", False, True, (150, 120, 90)),
    _L("pole", 17, 5, "object", False, False, (153, 153, 153)),
    _L("polegroup", 18, 255, "object", False, True, (153, 153, 153)),
    _L("traffic light", 19, 6, "object", False, False, (250, 170, 30)),
    _L("traffic sign", 20, 7, "object", False, False, (220, 220, 0)),
    _L("vegetation", 21, 8, "nature", False, False, (107, 142, 35)),
    _L("terrain", 22, 9, "nature", False, False, (152, 251, 152)),
    _L("sky", 23, 10, "sky", False, False, (70, 130, 180)),
    _L("person", 24, 11, "human", True, False, (220, 20, 60)),
    _L("rider", 25, 12, "human", True, False, (255, 0, 0)),
    _L("car", 26, 13, "vehicle", True, False, (0, 0, 142)),
    _L("truck", 27, 14, "vehicle", True, False, (0, 0, 70)),
    _L("bus", 28, 15, "vehicle", True, False, (0, 60, 100)),
    _L("caravan", 29, 255, "vehicle", True, True, (0, 0, 90)),
    _L("trailer", 30, 255, "vehicle", True, True, (0, 0, 110)),
    _L("train", 31, 16, "vehicle", True, False, (0, 80, 100)),
    _L("motorcycle", 32, 17, "vehicle", True, False, (0, 0, 230)),
    _L("bicycle", 33, 18, "vehicle", True, False, (119, 11, 32)),
    _L("license plate", -1, -1, "vehicle", False, True, (0, 0, 142)),
)
del _L

NAME_TO_LABEL = {label.name: label for label in CITYSCAPES_LABELS}
ID_TO_LABEL = {label.id: label for label in CITYSCAPES_LABELS}
# The 19 evaluated classes in train-id order, and the 8 of them with instances.
_TRAIN_LABELS = sorted(
    (lb for lb in CITYSCAPES_LABELS if not lb.ignoreInEval), key=lambda x: x.trainId
)
_THING_LABELS = [lb for lb in CITYSCAPES_LABELS if lb.hasInstances and not lb.ignoreInEval]
THING_ID_TO_CONTIGUOUS = {lb.id: i for i, lb in enumerate(_THING_LABELS)}

#: The 19 evaluated classes in Detectron2's ``builtin_meta.CITYSCAPES_CATEGORIES`` format.
CITYSCAPES_CATEGORIES: list[dict] = [
    {
        "color": lb.color,
        "isthing": int(lb.hasInstances),
        "id": lb.id,
        "trainId": lb.trainId,
        "name": lb.name,
    }
    for lb in _TRAIN_LABELS
]

_THINGS_COLOR = (82, 18, 128)  # Detectron2's colour of the merged "things" class


def get_cityscapes_metadata(kind: str) -> dict:
    """Detectron2's metadata of one form of Cityscapes.

    Args:
        kind: ``"instance_seg"`` or ``"sem_seg"``: ``thing_classes`` / ``thing_colors`` (the 8
            instance classes, in the contiguous order of the instance dataset) and
            ``stuff_classes`` / ``stuff_colors`` (the 19 train classes, indexed by train id).
            ``"panoptic"``: as Detectron2's Cityscapes panoptic metadata, the 19 train classes as
            both ``thing_classes`` and ``stuff_classes`` (contiguous ids are train ids for both),
            with ``thing_dataset_id_to_contiguous_id`` (label id -> train id of the 8 things)
            and ``stuff_dataset_id_to_contiguous_id`` (of the 11 stuff classes).
            ``"panoptic_separated"``: Panoptic FPN's convention, as Detectron2's COCO
            ``_panoptic_separated`` metadata: the 8 things (label id -> 0..7) and the
            semantic classes ``["things"]`` + the 11 stuff classes (label id 0 -> 0, the stuff
            label ids -> 1..11).

    Returns:
        A new dict (colours as lists).

    Raises:
        ValueError: unknown ``kind``.
    """
    train_names = [lb.name for lb in _TRAIN_LABELS]
    train_colors = [list(lb.color) for lb in _TRAIN_LABELS]
    if kind in ("instance_seg", "sem_seg"):
        return {
            "thing_classes": [lb.name for lb in _THING_LABELS],
            "thing_colors": [list(lb.color) for lb in _THING_LABELS],
            "stuff_classes": train_names,
            "stuff_colors": train_colors,
        }
    if kind == "panoptic":
        return {
            "thing_classes": train_names,
            "thing_colors": train_colors,
            "stuff_classes": list(train_names),
            "stuff_colors": [list(c) for c in train_colors],
            "thing_dataset_id_to_contiguous_id": {
                lb.id: lb.trainId for lb in _TRAIN_LABELS if lb.hasInstances
            },
            "stuff_dataset_id_to_contiguous_id": {
                lb.id: lb.trainId for lb in _TRAIN_LABELS if not lb.hasInstances
            },
        }
    if kind == "panoptic_separated":
        stuff = [lb for lb in _TRAIN_LABELS if not lb.hasInstances]
        return {
            "thing_classes": [lb.name for lb in _THING_LABELS],
            "thing_colors": [list(lb.color) for lb in _THING_LABELS],
            "stuff_classes": ["things"] + [lb.name for lb in stuff],
            "stuff_colors": [list(_THINGS_COLOR)] + [list(lb.color) for lb in stuff],
            "thing_dataset_id_to_contiguous_id": dict(THING_ID_TO_CONTIGUOUS),
            "stuff_dataset_id_to_contiguous_id": {0: 0}
            | {lb.id: i for i, lb in enumerate(stuff, start=1)},
        }
    raise ValueError(
        f"Unknown kind '{kind}'; use 'instance_seg', 'sem_seg', 'panoptic' or 'panoptic_separated'."
    )
