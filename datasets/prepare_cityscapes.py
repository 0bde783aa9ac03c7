#!/usr/bin/env python
"""Prepare Cityscapes for segtron with the official cityscapesscripts.

Two steps, both cityscapesscripts' own conversions:

1. ``createTrainIdLabelImgs``: every ``gtFine/*/*/*_gtFine_polygons.json`` (and ``gtCoarse/``,
   if present) gets its ``*_labelTrainIds.png`` (train ids, 255 = ignore), used by the
   ``cityscapes_fine_sem_seg_*`` and ``cityscapes_fine_panoptic_*`` datasets;
2. ``createPanopticImgs``: ``gtFine/cityscapes_panoptic_{split}.json`` and the PNG folder
   ``gtFine/cityscapes_panoptic_{split}/`` (COCO panoptic format, Cityscapes label ids), used by
   ``cityscapes_fine_panoptic_*``.

Usage::

    pip install -e ".[cityscapes]"     # installs cityscapesscripts
    python datasets/prepare_cityscapes.py [--root $SEGTRON_DATASETS/cityscapes] [--splits train val]
"""

from __future__ import annotations

import argparse
import importlib
import os
from types import ModuleType

_INSTALL = 'pip install -e ".[cityscapes]"'


def _default_root() -> str:
    """``$SEGTRON_DATASETS/cityscapes``, with ``SEGTRON_DATASETS`` defaulting to ``./datasets``."""
    return os.path.join(
        os.path.expanduser(os.environ.get("SEGTRON_DATASETS", "datasets")), "cityscapes"
    )


def _cityscapes_scripts() -> tuple[ModuleType, ModuleType]:
    """The createTrainIdLabelImgs and createPanopticImgs modules of cityscapesscripts.

    Raises:
        SystemExit: cityscapesscripts is not installed; the message gives the install command.
    """
    try:
        return (
            importlib.import_module("cityscapesscripts.preparation.createTrainIdLabelImgs"),
            importlib.import_module("cityscapesscripts.preparation.createPanopticImgs"),
        )
    except ImportError as err:
        raise SystemExit(
            f"prepare_cityscapes.py needs cityscapesscripts, which cannot be imported ({err}). "
            f"Install it with `{_INSTALL}` in the segtron repository "
            "(or `pip install cityscapesscripts`)."
        ) from err


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root",
        default=_default_root(),
        help="the Cityscapes folder holding leftImg8bit/ and gtFine/ "
        "(default: $SEGTRON_DATASETS/cityscapes, SEGTRON_DATASETS defaulting to ./datasets)",
    )
    parser.add_argument(
        "--splits",
        nargs="+",
        default=["train", "val"],
        help="the gtFine splits to make panoptic annotations for (default: train val)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Create the labelTrainIds PNGs and the panoptic annotations under ``--root``.

    Raises:
        SystemExit: cityscapesscripts is missing, or ``--root`` lacks ``gtFine/<split>``.
    """
    args = parse_args(argv)
    train_ids, panoptic = _cityscapes_scripts()
    root = os.path.abspath(os.path.expanduser(args.root))
    gt_fine = os.path.join(root, "gtFine")
    for split in args.splits:
        if not os.path.isdir(os.path.join(gt_fine, split)):
            raise SystemExit(
                f"{os.path.join(gt_fine, split)} does not exist. Unpack gtFine_trainvaltest.zip "
                "(and leftImg8bit_trainvaltest.zip) into the Cityscapes folder, or pass --root; "
                "see datasets/README.md."
            )

    print(f"Writing *_labelTrainIds.png under {root} (cityscapesscripts createTrainIdLabelImgs).")
    previous = os.environ.get("CITYSCAPES_DATASET")
    os.environ["CITYSCAPES_DATASET"] = root  # where createTrainIdLabelImgs looks
    try:
        train_ids.main()
    finally:
        if previous is None:
            del os.environ["CITYSCAPES_DATASET"]
        else:
            os.environ["CITYSCAPES_DATASET"] = previous

    print(f"\nWriting the panoptic annotations of {', '.join(args.splits)} under {gt_fine}.")
    panoptic.convert2panoptic(cityscapesPath=gt_fine, outputFolder=gt_fine, setNames=args.splits)
    print("\nDone.")


if __name__ == "__main__":
    main()
