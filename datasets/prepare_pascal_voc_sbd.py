#!/usr/bin/env python3
"""Prepare Pascal VOC 2012 semantic segmentation, with SBD's extra labels ("train_aug").

Reads ``VOC2012/`` (``SegmentationClass/*.png``, ``ImageSets/Segmentation/{train,val}.txt``)
and, when it is there, SBD's ``benchmark_RELEASE/dataset/cls/*.mat``, and writes into
``VOC2012/``:

- ``SegmentationClassAug/<id>.png``: single-channel labels 0..20, 255 = void. Images that VOC
  labels get VOC's labels (its palette PNGs turned into plain class ids); the other SBD images
  get SBD's (``GTcls.Segmentation`` of ``cls/<id>.mat``);
- ``ImageSets/Segmentation/train_aug.txt``: VOC's train ids and all SBD ids, minus VOC's val
  ids, sorted (10,582 images with the full datasets). Written only when SBD is found.

Usage::

    python datasets/prepare_pascal_voc_sbd.py [--root DIR] [--voc-root DIR] [--sbd-root DIR]
                                              [--workers N]

``--root`` (default ``$SEGTRON_DATASETS`` or ``./datasets``) sets the default
``--voc-root`` (``<root>/VOC2012``) and ``--sbd-root`` (``<root>/benchmark_RELEASE/dataset``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np
import scipy.io
from PIL import Image
from prepare_common import run_tasks

LABEL_DIR = "SegmentationClassAug"


def convert_voc_label(paths: tuple[str, str]) -> None:
    """Write the class ids of VOC's palette label PNG ``paths[0]`` as a plain PNG ``paths[1]``.

    Raises:
        ValueError: the file is neither a palette nor a grayscale image.
    """
    src, dst = paths
    image = Image.open(src)
    if image.mode not in ("P", "L"):
        raise ValueError(
            f"{src} is a '{image.mode}' image; VOC's SegmentationClass labels are palette PNGs "
            "whose indices are the class ids."
        )
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(dst)


def convert_sbd_label(paths: tuple[str, str]) -> None:
    """Write ``GTcls.Segmentation`` of the SBD file ``paths[0]`` as a label PNG ``paths[1]``.

    Raises:
        ValueError: the file has no 2-D ``GTcls.Segmentation`` array with labels 0..255.
    """
    src, dst = paths
    mat = scipy.io.loadmat(src, squeeze_me=True, struct_as_record=False)
    segmentation = getattr(mat.get("GTcls"), "Segmentation", None)
    if segmentation is None:
        raise ValueError(
            f"{src} has no GTcls.Segmentation: it is not a class label file of SBD's "
            "dataset/cls folder (inst/ holds instance labels)."
        )
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 2 or segmentation.min() < 0 or segmentation.max() > 255:
        raise ValueError(f"GTcls.Segmentation of {src} is not a 2-D array of labels 0..255.")
    Image.fromarray(segmentation.astype(np.uint8)).save(dst)


def _stems(folder: str, ext: str) -> list[str]:
    return sorted(n[: -len(ext)] for n in os.listdir(folder) if n.endswith(ext))


def _read_ids(list_file: str) -> list[str]:
    if not os.path.isfile(list_file):
        raise FileNotFoundError(
            f"{list_file} does not exist; it comes with VOCtrainval_11-May-2012.tar "
            "(see datasets/README.md)."
        )
    with open(list_file) as f:
        return [line.split()[0] for line in f if line.strip()]


def prepare_voc_sbd(
    voc_root: str, sbd_root: str | None = None, workers: int | None = None
) -> dict[str, int]:
    """Write ``SegmentationClassAug`` and, with SBD, ``train_aug.txt`` into ``voc_root``.

    Args:
        voc_root: the ``VOC2012`` folder.
        sbd_root: SBD's ``dataset`` folder (holding ``cls/``), or None to use VOC alone.
        workers: processes to use (default: one per CPU; 1 runs in this process).

    Returns:
        How many labels came from VOC (``"voc"``) and from SBD (``"sbd"``), and the size of
        ``train_aug`` (``"train_aug"``, 0 without SBD).

    Raises:
        FileNotFoundError: ``SegmentationClass``, ``cls`` or a VOC list file does not exist.
    """
    voc_labels = os.path.join(voc_root, "SegmentationClass")
    if not os.path.isdir(voc_labels):
        raise FileNotFoundError(
            f"{voc_labels} does not exist; extract VOCtrainval_11-May-2012.tar and point "
            "--voc-root (or --root) at its VOC2012 folder (see datasets/README.md)."
        )
    out_dir = os.path.join(voc_root, LABEL_DIR)
    os.makedirs(out_dir, exist_ok=True)
    voc_ids = _stems(voc_labels, ".png")
    tasks = [
        (os.path.join(voc_labels, f"{i}.png"), os.path.join(out_dir, f"{i}.png")) for i in voc_ids
    ]
    run_tasks(convert_voc_label, tasks, workers, "VOC labels")
    counts = {"voc": len(voc_ids), "sbd": 0, "train_aug": 0}
    if sbd_root is None:
        return counts

    cls_dir = os.path.join(sbd_root, "cls")
    if not os.path.isdir(cls_dir):
        raise FileNotFoundError(
            f"{cls_dir} does not exist; extract SBD's benchmark.tgz and pass its "
            "benchmark_RELEASE/dataset folder as --sbd-root (see datasets/README.md)."
        )
    sbd_ids = _stems(cls_dir, ".mat")
    labelled = set(voc_ids)
    extra = [i for i in sbd_ids if i not in labelled]
    tasks = [(os.path.join(cls_dir, f"{i}.mat"), os.path.join(out_dir, f"{i}.png")) for i in extra]
    run_tasks(convert_sbd_label, tasks, workers, "SBD labels")

    list_dir = os.path.join(voc_root, "ImageSets", "Segmentation")
    train = _read_ids(os.path.join(list_dir, "train.txt"))
    val = set(_read_ids(os.path.join(list_dir, "val.txt")))
    train_aug = sorted((set(train) | set(sbd_ids)) - val)
    with open(os.path.join(list_dir, "train_aug.txt"), "w") as f:
        f.write("".join(f"{i}\n" for i in train_aug))
    counts.update(sbd=len(extra), train_aug=len(train_aug))
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: prepare ``--voc-root`` with SBD from ``--sbd-root`` when found."""
    parser = argparse.ArgumentParser(
        description="Write VOC2012/SegmentationClassAug (VOC + SBD labels as plain PNGs) and "
        "VOC2012/ImageSets/Segmentation/train_aug.txt."
    )
    parser.add_argument(
        "--root",
        default=os.environ.get("SEGTRON_DATASETS", "datasets"),
        help="the datasets root (default: $SEGTRON_DATASETS or ./datasets)",
    )
    parser.add_argument("--voc-root", help="the VOC2012 folder (default: <root>/VOC2012)")
    parser.add_argument(
        "--sbd-root",
        help="SBD's folder holding cls/ (default: <root>/benchmark_RELEASE/dataset, skipped "
        "when absent)",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: #CPUs)")
    args = parser.parse_args(argv)
    root = os.path.expanduser(args.root)
    voc_root = args.voc_root or os.path.join(root, "VOC2012")
    sbd_root = args.sbd_root
    if sbd_root is None:
        default = os.path.join(root, "benchmark_RELEASE", "dataset")
        if os.path.isdir(default):
            sbd_root = default
        else:
            print(f"SBD not found at {default}: writing VOC's labels only, no train_aug.txt.")
    try:
        counts = prepare_voc_sbd(voc_root, sbd_root, args.workers)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err
    print(
        f"Wrote {counts['voc']} VOC and {counts['sbd']} SBD labels to "
        f"{os.path.join(voc_root, LABEL_DIR)}"
        + (f"; train_aug.txt lists {counts['train_aug']} images." if sbd_root else ".")
    )


if __name__ == "__main__":
    main()
