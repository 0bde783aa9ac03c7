"""A small synthetic dataset of shapes, written in the real COCO formats.

Each image has two stuff regions, ``sky`` (top) and ``ground`` (bottom, textured), split at a
random sloped horizon, and up to five things, ``circle``, ``square`` and ``triangle``, of random
colour, size and rotation; a later-drawn thing occludes the earlier ones, and every annotation
describes only what is visible. Some images have a crowd region (a cluster of tiny shapes of one
class, ``iscrowd=1``) and a small unlabelled (VOID) patch.

Category ids are not contiguous: things 1, 2, 3 and stuff 10, 11. The contiguous id of a class
is its index in the categories sorted by id, ``[circle, square, triangle, sky, ground]`` (things
first, as in Detectron2's standard COCO panoptic metadata), so the things have the same
contiguous ids in the instance and panoptic datasets.

Files under ``<root>/<split>/``:

- ``images/NNNNNN.jpg``: the images (image ids from 1);
- ``instances_<split>.json``: COCO instances; unoccluded things as polygons (a few as
  compressed RLE), occluded things as compressed RLE of their visible part, crowds as
  uncompressed RLE;
- ``panoptic/NNNNNN.png`` + ``panoptic_<split>.json``: COCO panoptic (id 0 = VOID);
- ``sem_seg/NNNNNN.png``: one label per class (the contiguous ids above), 255 = VOID and crowd;
- ``panoptic_stuff/NNNNNN.png``: Panoptic FPN's labels: 0 = any thing, 1 = sky, 2 = ground,
  255 = VOID.

Everything is deterministic given the seed: each image draws from its own generator seeded by
``(seed, split, index)``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from segtron.data.catalog import DatasetCatalog, MetadataCatalog
from segtron.data.datasets.coco import load_sem_seg, register_coco_instances
from segtron.data.datasets.coco_panoptic import (
    register_coco_panoptic,
    register_coco_panoptic_separated,
)
from segtron.data.datasets.synthetic_render import Shape, render_scene
from segtron.utils.panoptic import id2rgb

__all__ = [
    "SYNTHETIC_CATEGORIES",
    "generate_synthetic_dataset",
    "get_synthetic_metadata",
    "register_synthetic",
]

logger = logging.getLogger(__name__)

SYNTHETIC_CATEGORIES: list[dict] = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "square", "isthing": 1, "color": [0, 130, 200]},
    {"id": 3, "name": "triangle", "isthing": 1, "color": [250, 190, 0]},
    {"id": 10, "name": "sky", "isthing": 0, "color": [135, 206, 235]},
    {"id": 11, "name": "ground", "isthing": 0, "color": [120, 90, 50]},
]
_SKY_ID, _GROUND_ID = 10, 11
_THINGS_COLOR = [82, 18, 128]  # Detectron2's colour of the merged "things" class
_DEFAULT_SIZES = {"train": 200, "val": 50}
_PARAMS_FILE = "synthetic.json"
_FORMAT_VERSION = 1


def get_synthetic_metadata(kind: str) -> dict:
    """The metadata of one form of the synthetic dataset.

    Args:
        kind: ``"instances"``, ``"panoptic_standard"``, ``"panoptic_separated"`` or
            ``"sem_seg"``.

    Returns:
        Class names, colours and dataset-id to contiguous-id maps, as Detectron2 gives them for
        the same form of COCO.
    """
    things = [c for c in SYNTHETIC_CATEGORIES if c["isthing"]]
    stuff = [c for c in SYNTHETIC_CATEGORIES if not c["isthing"]]
    contiguous = {c["id"]: i for i, c in enumerate(SYNTHETIC_CATEGORIES)}
    names = [c["name"] for c in SYNTHETIC_CATEGORIES]
    colors = [c["color"] for c in SYNTHETIC_CATEGORIES]
    instances = {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [c["color"] for c in things],
        "thing_dataset_id_to_contiguous_id": {c["id"]: contiguous[c["id"]] for c in things},
    }
    if kind == "instances":
        return instances
    if kind == "panoptic_standard":
        return {
            "thing_classes": names,
            "thing_colors": colors,
            "stuff_classes": names,
            "stuff_colors": colors,
            "thing_dataset_id_to_contiguous_id": instances["thing_dataset_id_to_contiguous_id"],
            "stuff_dataset_id_to_contiguous_id": {c["id"]: contiguous[c["id"]] for c in stuff},
        }
    if kind == "panoptic_separated":
        stuff_map = {0: 0} | {c["id"]: i + 1 for i, c in enumerate(stuff)}
        return instances | {
            "stuff_classes": ["things"] + [c["name"] for c in stuff],
            "stuff_colors": [_THINGS_COLOR] + [c["color"] for c in stuff],
            "stuff_dataset_id_to_contiguous_id": stuff_map,
        }
    if kind == "sem_seg":
        return {
            "stuff_classes": names,
            "stuff_colors": colors,
            "stuff_dataset_id_to_contiguous_id": contiguous,
        }
    raise ValueError(
        f"Unknown kind '{kind}'; use instances, panoptic_standard, panoptic_separated or sem_seg."
    )


def _bbox(rle: dict) -> list[int]:
    return [int(v) for v in mask_util.toBbox(rle)]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (``counts`` a list of run lengths in column-major order)."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return {"counts": runs, "size": list(mask.shape)}


def _instance_segmentation(shape: Shape, rng: np.random.Generator) -> list | dict:
    """Polygons for an unoccluded shape (sometimes RLE), RLE of the visible part otherwise."""
    if shape.iscrowd:
        return _uncompressed_rle(shape.visible)
    if shape.polygon is not None and not shape.occluded and rng.random() >= 0.2:
        return [shape.polygon]
    rle = mask_util.encode(np.asfortranarray(shape.visible.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": list(rle["size"])}


def _write_image(
    split_dir: str, image_id: int, rng: np.random.Generator, height: int, width: int
) -> tuple[list[dict], list[dict]]:
    """Render one scene, write its four image files; return its instance and panoptic segments."""
    scene = render_scene(rng, height, width, sky_id=_SKY_ID, ground_id=_GROUND_ID)
    stem = f"{image_id:06d}"
    panoptic = np.zeros((height, width), dtype=np.int64)
    sem_seg = np.full((height, width), 255, dtype=np.uint8)
    stuff_seg = np.full((height, width), 255, dtype=np.uint8)
    contiguous = {c["id"]: i for i, c in enumerate(SYNTHETIC_CATEGORIES)}
    separated = get_synthetic_metadata("panoptic_separated")["stuff_dataset_id_to_contiguous_id"]
    instances, segments = [], []
    for segment_id, shape in enumerate(scene.shapes, start=1):
        rle = mask_util.encode(np.asfortranarray(shape.visible.astype(np.uint8)))
        area = int(mask_util.area(rle))
        panoptic[shape.visible] = segment_id
        sem_seg[shape.visible] = 255 if shape.iscrowd else contiguous[shape.category_id]
        stuff_seg[shape.visible] = separated[0 if shape.isthing else shape.category_id]
        info = {"category_id": shape.category_id, "iscrowd": int(shape.iscrowd)}
        info.update(bbox=_bbox(rle), area=area)
        segments.append({"id": segment_id, **info})
        if shape.isthing:
            instances.append({**info, "segmentation": _instance_segmentation(shape, rng)})
    Image.fromarray(scene.image).save(os.path.join(split_dir, "images", stem + ".jpg"), quality=90)
    Image.fromarray(id2rgb(panoptic)).save(os.path.join(split_dir, "panoptic", stem + ".png"))
    Image.fromarray(sem_seg).save(os.path.join(split_dir, "sem_seg", stem + ".png"))
    Image.fromarray(stuff_seg).save(os.path.join(split_dir, "panoptic_stuff", stem + ".png"))
    return instances, segments


def generate_synthetic_dataset(
    root: str | os.PathLike,
    split: str,
    num_images: int,
    seed: int = 0,
    image_size: tuple[int, int] = (128, 160),
) -> str:
    """Write one split of the synthetic dataset under ``<root>/<split>/``.

    Args:
        root: the dataset folder.
        split: the split name, e.g. ``"train"``; it also seeds the generator.
        num_images: how many images to write.
        seed: the random seed; the same arguments always give the same bytes.
        image_size: (height, width) of the images, at least 32 each.

    Returns:
        The split folder.
    """
    height, width = image_size
    if min(height, width) < 32:
        raise ValueError(f"image_size must be at least 32×32; got {image_size}.")
    split_dir = os.path.join(os.fspath(root), split)
    for sub in ("images", "panoptic", "sem_seg", "panoptic_stuff"):
        os.makedirs(os.path.join(split_dir, sub), exist_ok=True)
    images, annotations, panoptic_annotations = [], [], []
    split_key = zlib.crc32(split.encode())
    for index in range(num_images):
        image_id = index + 1
        rng = np.random.default_rng([seed, split_key, index])
        instances, segments = _write_image(split_dir, image_id, rng, height, width)
        file_name = f"{image_id:06d}.jpg"
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for ann in instances:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
        panoptic_annotations.append(
            {"image_id": image_id, "file_name": f"{image_id:06d}.png", "segments_info": segments}
        )
    info = {"description": f"segtron synthetic shapes, split {split}, seed {seed}"}
    things = [c for c in SYNTHETIC_CATEGORIES if c["isthing"]]
    files = {
        f"instances_{split}.json": {"annotations": annotations, "categories": things},
        f"panoptic_{split}.json": {
            "annotations": panoptic_annotations,
            "categories": SYNTHETIC_CATEGORIES,
        },
    }
    for name, content in files.items():
        with open(os.path.join(split_dir, name), "w") as f:
            json.dump({"info": info, "licenses": [], "images": images, **content}, f)
    params = {"version": _FORMAT_VERSION, "num_images": num_images, "seed": seed}
    with open(os.path.join(split_dir, _PARAMS_FILE), "w") as f:
        json.dump(params | {"image_size": [height, width]}, f)
    logger.info("Wrote %d synthetic images to %s", num_images, split_dir)
    return split_dir


def _ensure_split(
    root: str, split: str, num_images: int, seed: int, image_size: tuple[int, int]
) -> None:
    """Generate ``<root>/<split>`` unless it exists; safe when processes race.

    The split is written in a private temporary folder and moved into place by one atomic
    rename; a process that loses the race uses the winner's files.
    """
    split_dir = os.path.join(root, split)
    params_file = os.path.join(split_dir, _PARAMS_FILE)
    if not os.path.isfile(params_file):
        os.makedirs(root, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{split}-", dir=root)
        try:
            generate_synthetic_dataset(tmp, split, num_images, seed, image_size)
            try:
                os.rename(os.path.join(tmp, split), split_dir)
            except OSError:
                if not os.path.isfile(params_file):
                    raise RuntimeError(
                        f"{split_dir} exists but is not a complete synthetic split; delete it "
                        "to have it generated again."
                    ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    with open(params_file) as f:
        found = json.load(f)
    wanted = {"num_images": num_images, "seed": seed, "image_size": list(image_size)}
    if any(found.get(key) != value for key, value in wanted.items()):
        logger.warning(
            "%s was generated with %s, not %s; using it as it is (delete it to regenerate).",
            split_dir,
            {key: found.get(key) for key in wanted},
            wanted,
        )


def _generate_then(ensure: Callable[[], None], load: Callable[[], list[dict]]) -> list[dict]:
    ensure()
    return load()


def _generate_on_first_use(name: str, ensure: Callable[[], None]) -> None:
    """Make the registered loader of ``name`` generate the data it reads first."""
    load = DatasetCatalog[name]
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, functools.partial(_generate_then, ensure, load))


def register_synthetic(
    root: str | os.PathLike | None = None,
    *,
    prefix: str = "synthetic",
    num_images: dict[str, int] | None = None,
    seed: int = 0,
    image_size: tuple[int, int] = (128, 160),
) -> None:
    """Register the synthetic datasets; their files are generated on first use.

    For each split (``train`` with 200 images and ``val`` with 50 by default) this registers
    ``<prefix>_<split>`` (instances, "coco"), ``<prefix>_<split>_panoptic`` (standard panoptic),
    ``<prefix>_<split>_panoptic_separated`` and ``..._panoptic_stuffonly`` (Panoptic FPN) and
    ``<prefix>_<split>_sem_seg`` (all five classes, "sem_seg").

    Args:
        root: the dataset folder; default ``<datasets root>/synthetic``.
        prefix: the first part of the dataset names.
        num_images: images per split.
        seed: the random seed of the data.
        image_size: (height, width) of the images.
    """
    if root is None:
        from segtron.data.datasets.builtin import _root

        root = os.path.join(_root(), "synthetic")
    root = os.fspath(root)
    for split, count in (num_images or _DEFAULT_SIZES).items():
        ensure = functools.partial(_ensure_split, root, split, count, seed, tuple(image_size))
        split_dir = os.path.join(root, split)
        image_root = os.path.join(split_dir, "images")
        instances_json = os.path.join(split_dir, f"instances_{split}.json")
        panoptic_json = os.path.join(split_dir, f"panoptic_{split}.json")
        panoptic_root = os.path.join(split_dir, "panoptic")
        sem_seg_root = os.path.join(split_dir, "sem_seg")
        name = f"{prefix}_{split}"

        register_coco_instances(
            name, get_synthetic_metadata("instances"), instances_json, image_root
        )
        register_coco_panoptic(
            name + "_panoptic",
            get_synthetic_metadata("panoptic_standard"),
            image_root,
            panoptic_root,
            panoptic_json,
            instances_json,
            sem_seg_root=sem_seg_root,
        )
        register_coco_panoptic_separated(
            name + "_panoptic",
            get_synthetic_metadata("panoptic_separated"),
            image_root,
            panoptic_root,
            panoptic_json,
            os.path.join(split_dir, "panoptic_stuff"),
            instances_json,
        )
        DatasetCatalog.register(
            name + "_sem_seg", functools.partial(load_sem_seg, sem_seg_root, image_root)
        )
        MetadataCatalog.get(name + "_sem_seg").set(
            image_root=image_root,
            sem_seg_root=sem_seg_root,
            evaluator_type="sem_seg",
            ignore_label=255,
            **get_synthetic_metadata("sem_seg"),
        )
        for suffix in ("", "_panoptic", "_panoptic_separated", "_panoptic_stuffonly", "_sem_seg"):
            _generate_on_first_use(name + suffix, ensure)
