#!/usr/bin/env python3
"""Write ADE20K SceneParsing labels in the form ``ade20k_sem_seg_{train,val}`` reads.

ADE20K's ``annotations/{training,validation}/*.png`` use 0 for "other" (not evaluated) and
1..150 for the classes. This writes ``annotations_detectron2/{training,validation}/*.png``
with every label shifted down by one: classes become 0..149 and "other" becomes 255 (ignored).
Usage::

    python datasets/prepare_ade20k_sem_seg.py [--root DIR] [--workers N]

where ``DIR`` (default ``$SEGTRON_DATASETS`` or ``./datasets``) holds ``ADEChallengeData2016/``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image
from prepare_common import run_tasks

SPLITS = ("training", "validation")


def convert_label(paths: tuple[str, str]) -> None:
    """Read the ADE20K label PNG ``paths[0]`` and write its shifted labels to ``paths[1]``.

    Raises:
        ValueError: the file is not a single-channel 8-bit image.
    """
    src, dst = paths
    label = np.asarray(Image.open(src))
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(
            f"{src} is not a single-channel 8-bit label image (shape {label.shape}, "
            f"{label.dtype}); is it from ADEChallengeData2016/annotations?"
        )
    shifted = label.astype(np.int16) - 1
    shifted[shifted < 0] = 255
    Image.fromarray(shifted.astype(np.uint8)).save(dst)


def convert_ade20k(ade_root: str, workers: int | None = None) -> dict[str, int]:
    """Convert both splits of ``ADEChallengeData2016``.

    Args:
        ade_root: the ``ADEChallengeData2016`` folder.
        workers: processes to use (default: one per CPU; 1 runs in this process).

    Returns:
        The number of label files written per split.

    Raises:
        FileNotFoundError: a split's ``annotations`` folder does not exist or holds no PNG.
    """
    counts = {}
    for split in SPLITS:
        src_dir = os.path.join(ade_root, "annotations", split)
        dst_dir = os.path.join(ade_root, "annotations_detectron2", split)
        names = []
        if os.path.isdir(src_dir):
            names = sorted(n for n in os.listdir(src_dir) if n.endswith(".png"))
        if not names:
            raise FileNotFoundError(
                f"No label PNG in {src_dir}; extract ADEChallengeData2016.zip into the datasets "
                "root (see datasets/README.md) or pass --root."
            )
        os.makedirs(dst_dir, exist_ok=True)
        tasks = [(os.path.join(src_dir, n), os.path.join(dst_dir, n)) for n in names]
        run_tasks(convert_label, tasks, workers, split)
        counts[split] = len(tasks)
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: convert ``<root>/ADEChallengeData2016``."""
    parser = argparse.ArgumentParser(
        description="Write ADEChallengeData2016/annotations_detectron2 (labels - 1, 0 -> 255)."
    )
    parser.add_argument(
        "--root",
        default=os.environ.get("SEGTRON_DATASETS", "datasets"),
        help="the datasets root holding ADEChallengeData2016/ "
        "(default: $SEGTRON_DATASETS or ./datasets)",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: #CPUs)")
    args = parser.parse_args(argv)
    ade_root = os.path.join(os.path.expanduser(args.root), "ADEChallengeData2016")
    try:
        counts = convert_ade20k(ade_root, args.workers)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err
    for split, count in counts.items():
        print(f"{split}: wrote {count} label files to {ade_root}/annotations_detectron2/{split}")


if __name__ == "__main__":
    main()
