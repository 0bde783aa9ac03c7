#!/usr/bin/env python
"""Print median frequency balancing weights of a config's training set as a config option.

Reads the semantic labels of ``DATASETS.TRAIN[0]`` and uses ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``
and ``IGNORE_VALUE`` of the config; the printed ``MODEL.PIXEL_CLASSIFIER.CLASS_WEIGHTS`` line
goes into the config or onto the ``tools/train_net.py`` command line.

Example::

    python projects/SemanticBaselines/compute_class_weights.py \\
        --config-file configs/Synthetic/unet.yaml
"""

from __future__ import annotations

import argparse
import sys

from segtron.data import DatasetCatalog
from segtron.projects import get_config
from segtron.projects.semantic_baselines.class_weights import median_frequency_weights


def main(argv: list[str] | None = None) -> int:
    """Compute and print the weights; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, help="a semantic segmentation config")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    cfg = get_config(args.config_file, args.opts)
    head = cfg.MODEL.SEM_SEG_HEAD
    weights = median_frequency_weights(
        DatasetCatalog.get(cfg.DATASETS.TRAIN[0]), head.NUM_CLASSES, head.IGNORE_VALUE
    )
    print("MODEL.PIXEL_CLASSIFIER.CLASS_WEIGHTS", "[" + ",".join(f"{w:.3f}" for w in weights) + "]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
