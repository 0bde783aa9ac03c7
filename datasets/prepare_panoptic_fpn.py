#!/usr/bin/env python3
"""Write the semantic labels of COCO panoptic that Panoptic FPN and friends train on.

For each split (``val2017`` and ``train2017`` by default) this reads
``coco/annotations/panoptic_<split>.json`` and the PNGs of ``coco/panoptic_<split>/`` and writes,
one PNG per image with the panoptic PNG's name:

- ``coco/panoptic_stuff_<split>/``: Panoptic FPN's labels: 0 = any thing, the 53 stuff
  categories 1..53 (in category id order), 255 = void; used by ``coco_2017_*_panoptic_separated``;
- with ``--with-sem-seg``, ``coco/panoptic_semseg_<split>/``: the contiguous id 0..132 of every
  category (in category id order), 255 = void; used by ``coco_2017_*_panoptic_with_sem_seg``.

Crowd segments get their category's label, as in Detectron2. Usage::

    python datasets/prepare_panoptic_fpn.py [--root DIR] [--splits val2017 train2017]
                                            [--with-sem-seg] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image
from prepare_common import run_tasks

from segtron.data.datasets.builtin_meta import COCO_CATEGORIES
from segtron.utils.panoptic import rgb2id

VOID = 255


def stuff_id_map(categories: Sequence[dict]) -> dict[int, int]:
    """Panoptic FPN's label of each category id: 0 for things, 1, 2, ... for stuff in order.

    Raises:
        ValueError: there are more stuff categories than fit below the void label.
    """
    stuff = [c["id"] for c in categories if not c["isthing"]]
    if len(stuff) >= VOID:
        raise ValueError(f"{len(stuff)} stuff categories do not fit in labels 1..{VOID - 1}.")
    return {c["id"]: 0 for c in categories if c["isthing"]} | {
        cat_id: i + 1 for i, cat_id in enumerate(stuff)
    }


def contiguous_id_map(categories: Sequence[dict]) -> dict[int, int]:
    """The contiguous label 0, 1, ... of each category id, in the order of ``categories``.

    Raises:
        ValueError: there are more categories than fit below the void label.
    """
    if len(categories) > VOID:
        raise ValueError(f"{len(categories)} categories do not fit in labels 0..{VOID - 1}.")
    return {c["id"]: i for i, c in enumerate(categories)}


def convert_panoptic_png(
    panoptic_png: str, segments: list[dict], outputs: list[tuple[str, dict[int, int]]]
) -> None:
    """Write one semantic PNG per ``(path, category id -> label)`` of ``outputs``.

    Pixels of no segment (id 0 or an id absent from ``segments``) get the void label 255.
    """
    ids = rgb2id(np.asarray(Image.open(panoptic_png).convert("RGB")))
    labels = [np.full(ids.shape, VOID, dtype=np.uint8) for _ in outputs]
    for segment in segments:
        mask = ids == segment["id"]
        for label, (_, id_map) in zip(labels, outputs):
            label[mask] = id_map[segment["category_id"]]
    for label, (path, _) in zip(labels, outputs):
        Image.fromarray(label).save(path)


def _convert_task(task: tuple[str, list[dict], list[tuple[str, dict[int, int]]]]) -> None:
    convert_panoptic_png(*task)


def _check_inputs(
    panoptic_json: str, panoptic_root: str, annotations: Iterable[dict], known: set[int]
) -> None:
    """Raise when a PNG is missing or a segment's category is unknown."""
    missing, unknown = [], set()
    for ann in annotations:
        if not os.path.isfile(os.path.join(panoptic_root, ann["file_name"])):
            missing.append(ann["file_name"])
        unknown |= {s["category_id"] for s in ann["segments_info"]} - known
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} PNGs named in {panoptic_json} are not in {panoptic_root} (e.g. "
            f"{missing[:3]}); extract the panoptic PNG zip there (see datasets/README.md)."
        )
    if unknown:
        raise KeyError(
            f"{panoptic_json} uses category ids {sorted(unknown)}, which are not COCO panoptic "
            "categories; this script is for COCO panoptic annotations."
        )


def separate_coco_semantic_from_panoptic(
    panoptic_json: str,
    panoptic_root: str,
    sem_seg_root: str,
    categories: Sequence[dict] = COCO_CATEGORIES,
    *,
    all_classes_root: str | None = None,
    workers: int | None = None,
) -> int:
    """Write the semantic labels of one COCO panoptic split.

    Args:
        panoptic_json: the panoptic JSON.
        panoptic_root: the folder of its panoptic PNGs.
        sem_seg_root: where to write Panoptic FPN's labels (things 0, stuff 1.., void 255).
        categories: dicts with ``id`` and ``isthing``; their order sets the labels.
        all_classes_root: when given, also write there one contiguous label per category.
        workers: processes to use (default: one per CPU; 1 runs in this process).

    Returns:
        The number of images converted.

    Raises:
        FileNotFoundError: the JSON or a PNG it names does not exist.
        KeyError: a segment's category is not in ``categories``.
    """
    if not os.path.isfile(panoptic_json):
        raise FileNotFoundError(
            f"{panoptic_json} does not exist; download and extract COCO's panoptic annotations "
            "(see datasets/README.md) or pass --root."
        )
    with open(panoptic_json) as f:
        annotations = json.load(f)["annotations"]
    _check_inputs(panoptic_json, panoptic_root, annotations, {c["id"] for c in categories})
    maps = [(sem_seg_root, stuff_id_map(categories))]
    if all_classes_root is not None:
        maps.append((all_classes_root, contiguous_id_map(categories)))
    for folder, _ in maps:
        os.makedirs(folder, exist_ok=True)
    tasks = [
        (
            os.path.join(panoptic_root, ann["file_name"]),
            ann["segments_info"],
            [(os.path.join(folder, ann["file_name"]), id_map) for folder, id_map in maps],
        )
        for ann in annotations
    ]
    run_tasks(_convert_task, tasks, workers, os.path.basename(sem_seg_root))
    return len(tasks)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: convert the chosen splits under ``<root>/coco``."""
    parser = argparse.ArgumentParser(
        description="Write Panoptic FPN's semantic labels (panoptic_stuff_<split>) and, "
        "optionally, 133-class labels (panoptic_semseg_<split>) from COCO panoptic."
    )
    parser.add_argument(
        "--root",
        default=os.environ.get("SEGTRON_DATASETS", "datasets"),
        help="the datasets root holding coco/ (default: $SEGTRON_DATASETS or ./datasets)",
    )
    parser.add_argument("--splits", nargs="+", default=["val2017", "train2017"])
    parser.add_argument(
        "--with-sem-seg",
        action="store_true",
        help="also write panoptic_semseg_<split> (all 133 classes) for *_panoptic_with_sem_seg",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: #CPUs)")
    args = parser.parse_args(argv)
    coco = os.path.join(os.path.expanduser(args.root), "coco")
    for split in args.splits:
        semseg_root = os.path.join(coco, f"panoptic_semseg_{split}") if args.with_sem_seg else None
        try:
            count = separate_coco_semantic_from_panoptic(
                os.path.join(coco, "annotations", f"panoptic_{split}.json"),
                os.path.join(coco, f"panoptic_{split}"),
                os.path.join(coco, f"panoptic_stuff_{split}"),
                all_classes_root=semseg_root,
                workers=args.workers,
            )
        except (FileNotFoundError, KeyError) as err:
            raise SystemExit(f"error: {err}") from err
        print(f"{split}: wrote the semantic labels of {count} images under {coco}")


if __name__ == "__main__":
    main()
