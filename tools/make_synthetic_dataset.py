#!/usr/bin/env python
"""Write segtron's synthetic shapes dataset (train and val splits) to disk.

Example::

    python tools/make_synthetic_dataset.py --root datasets/synthetic --train 200 --val 50

The registered ``synthetic_*`` datasets generate these files on first use; this tool writes
them explicitly (other sizes, seeds or image sizes, or ahead of a multi-process run).
"""

from __future__ import annotations

import argparse
import os
import shutil

from segtron.data.datasets.builtin import _root
from segtron.data.datasets.synthetic import generate_synthetic_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root",
        default=os.path.join(_root(), "synthetic"),
        help="output folder (default: $SEGTRON_DATASETS/synthetic)",
    )
    parser.add_argument("--train", type=int, default=200, help="number of train images")
    parser.add_argument("--val", type=int, default=50, help="number of val images")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"), help="image size"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace splits that already exist"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Generate both splits, refusing to mix with existing files unless --overwrite."""
    args = parse_args(argv)
    for split, count in (("train", args.train), ("val", args.val)):
        split_dir = os.path.join(args.root, split)
        if os.path.exists(split_dir):
            if not args.overwrite:
                raise SystemExit(f"{split_dir} exists; pass --overwrite to replace it.")
            shutil.rmtree(split_dir)
        generate_synthetic_dataset(args.root, split, count, args.seed, tuple(args.size))
        print(f"Wrote {count} images to {split_dir}")


if __name__ == "__main__":
    main()
