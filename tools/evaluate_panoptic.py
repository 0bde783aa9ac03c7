#!/usr/bin/env python
"""Panoptic Quality of COCO-panoptic predictions (see segtron.evaluation.panoptic_quality).

Usage: ``python tools/evaluate_panoptic.py --gt-json G --pred-json P [--gt-folder] [--pred-folder]
[--workers N]``.
"""

import sys

from segtron.evaluation.panoptic_quality import main

if __name__ == "__main__":
    sys.exit(main())
