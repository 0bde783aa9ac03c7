"""Facts about the builtin datasets: categories, colours and their metadata, as Detectron2 has them.

Holds the 133 COCO panoptic categories (80 things, 53 stuff; ids, names and colours of the COCO
panoptic API), the 150 ADE20K SceneParsing classes with the usual palette, and the 21 Pascal VOC
semantic classes with VOC's own palette. ``get_builtin_metadata`` (also under Detectron2's name
``_get_builtin_metadata``) turns them into the metadata of each builtin dataset form.

Cityscapes facts live in ``segtron.data.datasets.cityscapes``.

One difference from Detectron2 on purpose: its ADE20K class 9 is ``"window "`` with a stray
trailing space; here it is ``"window"``.
"""

from __future__ import annotations

__all__ = [
    "ADE20K_SEM_SEG_CATEGORIES",
    "ADE20K_SEM_SEG_COLORS",
    "COCO_CATEGORIES",
    "COCO_THING_CLASSES",
    "COCO_THING_IDS",
    "COCO_STUFF_IDS",
    "VOC_SEM_SEG_CATEGORIES",
    "VOC_SEM_SEG_COLORS",
    "get_builtin_metadata",
]

# (id, name, isthing, colour) of every COCO panoptic category, sorted by id.
_COCO_TABLE: list[tuple[int, str, int, tuple[int, int, int]]] = [
    (1, "person", 1, (220, 20, 60)),
    (2, "bicycle", 1, (119, 11, 32)),
    (3, "car", 1, (0, 0, 142)),
    (4, "motorcycle", 1, (0, 0, 230)),
    (5, "airplane", 1, (106, 0, 228)),
    (6, "bus", 1, (0, 60, 100)),
    (7, "train", 1, (0, 80, 100)),
    (8, "truck", 1, (0, 0, 70)),
    (9, "boat", 1, (0, 0, 192)),
    (10, "traffic light", 1, (250, 170, 30)),
    (11, "fire hydrant", 1, (100, 170, 30)),
    (13, "stop sign", 1, (220, 220, 0)),
    (14, "parking meter", 1, (175, 116, 175)),
    (15, "bench", 1, (250, 0, 30)),
    (16, "bird", 1, (165, 42, 42)),
    (17, "cat", 1, (255, 77, 255)),
    (18, "dog", 1, (0, 226, 252)),
    (19, "horse", 1, (182, 182, 255)),
    (20, "sheep", 1, (0, 82, 0)),
    (21, "cow", 1, (120, 166, 157)),
    (22, "elephant", 1, (110, 76, 0)),
    (23, "bear", 1, (174, 57, 255)),
    (24, "zebra", 1, (199, 100, 0)),
    (25, "giraffe", 1, (72, 0, 118)),
    (27, "backpack", 1, (255, 179, 240)),
    (28, "umbrella", 1, (0, 125, 92)),
    (31, "handbag", 1, (209, 0, 151)),
    (32, "tie", 1, (188, 208, 182)),
    (33, "suitcase", 1, (0, 220, 176)),
    (34, "frisbee", 1, (255, 99, 164)),
    (35, "skis", 1, (92, 0, 73)),
    (36, "snowboard", 1, (133, 129, 255)),
    (37, "sports ball", 1, (78, 180, 255)),
    (38, "kite", 1, (0, 228, 0)),
    (39, "baseball bat", 1, (174, 255, 243)),
    (40, "baseball glove", 1, (45, 89, 255)),
    (41, "skateboard", 1, (134, 134, 103)),
    (42, "surfboard", 1, (145, 148, 174)),
    (43, "tennis racket", 1, (255, 208, 186)),
    (44, "bottle", 1, (197, 226, 255)),
    (46, "wine glass", 1, (171, 134, 1)),
    (47, "cup", 1, (109, 63, 54)),
    (48, "fork", 1, (207, 138, 255)),
    (49, "knife", 1, (151, 0, 95)),
    (50, "spoon", 1, (9, 80, 61)),
    (51, "bowl", 1, (84, 105, 51)),
    (52, "banana", 1, (74, 65, 105)),
    (53, "apple", 1, (166, 196, 102)),
    (54, "sandwich", 1, (208, 195, 210)),
    (55, "orange", 1, (255, 109, 65)),
    (56, "broccoli", 1, (0, 143, 149)),
    (57, "carrot", 1, (179, 0, 194)),
    (58, "hot dog", 1, (209, 99, 106)),
    (59, "pizza", 1, (5, 121, 0)),
    (60, "donut", 1, (227, 255, 205)),
    (61, "cake", 1, (147, 186, 208)),
    (62, "chair", 1, (153, 69, 1)),
    (63, "couch", 1, (3, 95, 161)),
    (64, "potted plant", 1, (163, 255, 0)),
    (65, "bed", 1, (119, 0, 170)),
    (67, "dining table", 1, (0, 182, 199)),
    (70, "toilet", 1, (0, 165, 120)),
    (72, "tv", 1, (183, 130, 88)),
    (73, "laptop", 1, (95, 32, 0)),
    (74, "mouse", 1, (130, 114, 135)),
    (75, "remote", 1, (110, 129, 133)),
    (76, "keyboard", 1, (166, 74, 118)),
    (77, "cell phone", 1, (219, 142, 185)),
    (78, "microwave", 1, (79, 210, 114)),
    (79, "oven", 1, (178, 90, 62)),
    (80, "toaster", 1, (65, 70, 15)),
    (81, "sink", 1, (127, 167, 115)),
    (82, "refrigerator", 1, (59, 105, 106)),
    (84, "book", 1, (142, 108, 45)),
    (85, "clock", 1, (196, 172, 0)),
    (86, "vase", 1, (95, 54, 80)),
    (87, "scissors", 1, (128, 76, 255)),
    (88, "teddy bear", 1, (201, 57, 1)),
    (89, "hair drier", 1, (246, 0, 122)),
    (90, "toothbrush", 1, (191, 162, 208)),
    (92, "banner", 0, (255, 255, 128)),
    (93, "blanket", 0, (147, 211, 203)),
    (95, "bridge", 0, (150, 100, 100)),
    (100, "cardboard", 0, (168, 171, 172)),
    (107, "counter", 0, (146, 112, 198)),
    (109, "curtain", 0, (210, 170, 100)),
    (112, "door-stuff", 0, (92, 136, 89)),
    (118, "floor-wood", 0, (218, 88, 184)),
    (119, "flower", 0, (241, 129, 0)),
    (122, "fruit", 0, (217, 17, 255)),
    (125, "gravel", 0, (124, 74, 181)),
    (128, "house", 0, (70, 70, 70)),
    (130, "light", 0, (255, 228, 255)),
    (133, "mirror-stuff", 0, (154, 208, 0)),
    (138, "net", 0, (193, 0, 92)),
    (141, "pillow", 0, (76, 91, 113)),
    (144, "platform", 0, (255, 180, 195)),
    (145, "playingfield", 0, (106, 154, 176)),
    (147, "railroad", 0, (230, 150, 140)),
    (148, "river", 0, (60, 143, 255)),
    (149, "road", 0, (128, 64, 128)),
    (151, "roof", 0, (92, 82, 55)),
    (154, "sand", 0, (254, 212, 124)),
    (155, "sea", 0, (73, 77, 174)),
    (156, "shelf", 0, (255, 160, 98)),
    (159, "snow", 0, (255, 255, 255)),
    (161, "stairs", 0, (104, 84, 109)),
    (166, "tent", 0, (169, 164, 131)),
    (168, "towel", 0, (225, 199, 255)),
    (171, "wall-brick", 0, (137, 54, 74)),
    (175, "wall-stone", 0, (135, 158, 223)),
    (176, "wall-tile", 0, (7, 246, 231)),
    (177, "wall-wood", 0, (107, 255, 200)),
    (178, "water-other", 0, (58, 41, 149)),
    (180, "window-blind", 0, (183, 121, 142)),
    (181, "window-other", 0, (255, 73, 97)),
    (184, "tree-merged", 0, (107, 142, 35)),
    (185, "fence-merged", 0, (190, 153, 153)),
    (186, "ceiling-merged", 0, (146, 139, 141)),
    (187, "sky-other-merged", 0, (70, 130, 180)),
    (188, "cabinet-merged", 0, (134, 199, 156)),
    (189, "table-merged", 0, (209, 226, 140)),
    (190, "floor-other-merged", 0, (96, 36, 108)),
    (191, "pavement-merged", 0, (96, 96, 96)),
    (192, "mountain-merged", 0, (64, 170, 64)),
    (193, "grass-merged", 0, (152, 251, 152)),
    (194, "dirt-merged", 0, (208, 229, 228)),
    (195, "paper-merged", 0, (206, 186, 171)),
    (196, "food-other-merged", 0, (152, 161, 64)),
    (197, "building-other-merged", 0, (116, 112, 0)),
    (198, "rock-merged", 0, (0, 114, 143)),
    (199, "wall-other-merged", 0, (102, 102, 156)),
    (200, "rug-merged", 0, (250, 141, 255)),
]

COCO_CATEGORIES: list[dict] = [
    {"id": cat_id, "name": name, "isthing": isthing, "color": list(color)}
    for cat_id, name, isthing, color in _COCO_TABLE
]
"""The 133 COCO panoptic categories: dicts with ``id``, ``name``, ``isthing`` and ``color``."""

COCO_THING_IDS: list[int] = [c["id"] for c in COCO_CATEGORIES if c["isthing"]]
COCO_THING_CLASSES: list[str] = [c["name"] for c in COCO_CATEGORIES if c["isthing"]]
COCO_STUFF_IDS: list[int] = [c["id"] for c in COCO_CATEGORIES if not c["isthing"]]

# The colour Detectron2 gives the single "things" class of Panoptic FPN's semantic branch.
_COCO_THINGS_COLOR = [82, 18, 128]

# The 150 classes of the ADE20K SceneParsing benchmark, in label order (label 1 first).
# fmt: off
ADE20K_SEM_SEG_CATEGORIES: list[str] = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road, route", "bed", "window",
    "grass", "cabinet", "sidewalk, pavement", "person", "earth, ground", "door", "table",
    "mountain, mount", "plant", "curtain", "chair", "car", "water", "painting, picture", "sofa",
    "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock, stone", "wardrobe, closet, press", "lamp", "tub", "rail", "cushion",
    "base, pedestal, stand", "box", "column, pillar", "signboard, sign",
    "chest of drawers, chest, bureau, dresser", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator, icebox", "grandstand, covered stand", "path", "stairs", "runway",
    "case, display case, showcase, vitrine", "pool table, billiard table, snooker table",
    "pillow", "screen door, screen", "stairway, staircase", "river", "bridge, span", "bookcase",
    "blind, screen", "coffee table",
    "toilet, can, commode, crapper, pot, potty, stool, throne", "flower", "book", "hill",
    "bench", "countertop", "stove", "palm, palm tree", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel, hut, hutch, shack, shanty", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning, sunshade, sunblind",
    "street lamp", "booth", "tv", "plane", "dirt track", "clothes", "pole",
    "land, ground, soil", "bannister, banister, balustrade, balusters, handrail",
    "escalator, moving staircase, moving stairway", "ottoman, pouf, pouffe, puff, hassock",
    "bottle", "buffet, counter, sideboard", "poster, posting, placard, notice, bill, card",
    "stage", "van", "ship", "fountain",
    "conveyer belt, conveyor belt, conveyer, conveyor, transporter", "canopy",
    "washer, automatic washer, washing machine", "plaything, toy", "pool", "stool",
    "barrel, cask", "basket, handbasket", "falls", "tent", "bag", "minibike, motorbike",
    "cradle", "oven", "ball", "food, solid food", "step, stair", "tank, storage tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket, cover", "sculpture", "hood, exhaust hood", "sconce", "vase", "traffic light",
    "tray", "trash can", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board",
    "shower", "radiator", "glass, drinking glass", "clock", "flag",
]

# The usual ADE20K palette (one colour per class, in the order above).
ADE20K_SEM_SEG_COLORS: list[list[int]] = [
    [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3],
    [120, 120, 80], [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7],
    [224, 5, 255], [235, 255, 7], [150, 5, 61], [120, 120, 70], [8, 255, 51],
    [255, 6, 82], [143, 255, 140], [204, 255, 4], [255, 51, 7], [204, 70, 3],
    [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255], [255, 7, 71],
    [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255],
    [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10],
    [7, 255, 255], [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7],
    [255, 122, 8], [0, 255, 20], [255, 8, 41], [255, 5, 153], [6, 51, 255],
    [235, 12, 255], [160, 150, 20], [0, 163, 255], [140, 140, 140], [250, 10, 15],
    [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0], [153, 255, 0],
    [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255],
    [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112],
    [0, 255, 133], [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0],
    [0, 143, 255], [51, 255, 0], [0, 82, 255], [0, 255, 41], [0, 255, 173],
    [10, 0, 255], [173, 255, 0], [0, 255, 153], [255, 92, 0], [255, 0, 255],
    [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20], [255, 184, 184],
    [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194],
    [0, 255, 82], [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255],
    [0, 122, 255], [0, 255, 163], [255, 153, 0], [0, 255, 10], [255, 112, 0],
    [143, 255, 0], [82, 0, 255], [163, 255, 0], [255, 235, 0], [8, 184, 170],
    [133, 0, 255], [0, 255, 92], [184, 0, 255], [255, 0, 31], [0, 184, 255],
    [0, 214, 255], [255, 0, 112], [92, 255, 0], [0, 224, 255], [112, 224, 255],
    [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],
    [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235],
    [245, 0, 255], [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0],
    [0, 204, 255], [20, 0, 255], [255, 255, 0], [0, 153, 255], [0, 41, 255],
    [0, 255, 204], [41, 0, 255], [41, 255, 0], [173, 0, 255], [0, 245, 255],
    [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255], [184, 255, 0],
    [0, 133, 255], [255, 214, 0], [25, 194, 194], [102, 255, 0], [92, 0, 255],
]

# Pascal VOC's 21 semantic classes: label 0 is the background, 255 marks object borders (void).
VOC_SEM_SEG_CATEGORIES: list[str] = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]

# The colours of VOC's palette PNGs for labels 0..20 (bits of the label spread over R, G, B).
VOC_SEM_SEG_COLORS: list[list[int]] = [
    [0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128],
    [0, 128, 128], [128, 128, 128], [64, 0, 0], [192, 0, 0], [64, 128, 0], [192, 128, 0],
    [64, 0, 128], [192, 0, 128], [64, 128, 128], [192, 128, 128], [0, 64, 0], [128, 64, 0],
    [0, 192, 0], [128, 192, 0], [0, 64, 128],
]
# fmt: on


def _coco_instances_meta() -> dict:
    """The 80 thing classes of COCO instances, their colours and id map (ids -> 0..79)."""
    return {
        "thing_classes": list(COCO_THING_CLASSES),
        "thing_colors": [list(c["color"]) for c in COCO_CATEGORIES if c["isthing"]],
        "thing_dataset_id_to_contiguous_id": {cat_id: i for i, cat_id in enumerate(COCO_THING_IDS)},
    }


def _coco_panoptic_separated_meta() -> dict:
    """Panoptic FPN's form: COCO instances plus 54 semantic classes ("things" + 53 stuff).

    Stuff ids map to 1..53 and the extra id 0 (any thing) to 0. Stuff names drop the
    ``-other`` and ``-merged`` suffixes, as Detectron2's do.
    """
    stuff = [c for c in COCO_CATEGORIES if not c["isthing"]]
    stuff_map = {0: 0} | {c["id"]: i + 1 for i, c in enumerate(stuff)}
    stuff_names = [c["name"].replace("-other", "").replace("-merged", "") for c in stuff]
    return _coco_instances_meta() | {
        "stuff_classes": ["things"] + stuff_names,
        "stuff_colors": [_COCO_THINGS_COLOR] + [list(c["color"]) for c in stuff],
        "stuff_dataset_id_to_contiguous_id": stuff_map,
    }


def _coco_panoptic_standard_meta() -> dict:
    """The standard panoptic form: one contiguous id per category, 0..132, in id order.

    As in Detectron2, ``thing_classes`` and ``stuff_classes`` both list all 133 names (and the
    colours likewise), so that a contiguous id indexes either list.
    """
    names = [c["name"] for c in COCO_CATEGORIES]
    colors = [list(c["color"]) for c in COCO_CATEGORIES]
    return {
        "thing_classes": names,
        "thing_colors": colors,
        "stuff_classes": list(names),
        "stuff_colors": [list(c) for c in colors],
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(COCO_CATEGORIES) if c["isthing"]
        },
        "stuff_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(COCO_CATEGORIES) if not c["isthing"]
        },
    }


def get_builtin_metadata(dataset_name: str) -> dict:
    """The class names, colours and id maps of a builtin dataset form.

    Args:
        dataset_name: ``"coco"`` (80 thing classes), ``"coco_panoptic_separated"`` (Panoptic
            FPN: 80 things + 54 semantic classes), ``"coco_panoptic_standard"`` (133 classes),
            ``"ade20k_sem_seg"`` (150 classes) or ``"voc_sem_seg"`` (21 classes).

    Returns:
        A new dict (safe to modify) with ``thing_*`` and/or ``stuff_*`` keys.

    Raises:
        KeyError: the name is not one of the above.
    """
    if dataset_name == "coco":
        return _coco_instances_meta()
    if dataset_name == "coco_panoptic_separated":
        return _coco_panoptic_separated_meta()
    if dataset_name == "coco_panoptic_standard":
        return _coco_panoptic_standard_meta()
    if dataset_name == "ade20k_sem_seg":
        return {
            "stuff_classes": list(ADE20K_SEM_SEG_CATEGORIES),
            "stuff_colors": [list(c) for c in ADE20K_SEM_SEG_COLORS],
        }
    if dataset_name == "voc_sem_seg":
        return {
            "stuff_classes": list(VOC_SEM_SEG_CATEGORIES),
            "stuff_colors": [list(c) for c in VOC_SEM_SEG_COLORS],
        }
    raise KeyError(
        f"No builtin metadata for '{dataset_name}'; known: coco, coco_panoptic_separated, "
        "coco_panoptic_standard, ade20k_sem_seg, voc_sem_seg."
    )


# Detectron2's name for the same function.
_get_builtin_metadata = get_builtin_metadata
