#!/usr/bin/env python
"""Convert torchvision's ImageNet ``vgg16`` / ``vgg16_bn`` weights for FCN and SegNet.

Renames ``features.N.*`` to segtron's VGG-16 names (``convert_torchvision_vgg16``) and, for
FCN, reshapes the fully connected fc6/fc7 into 7×7 / 1×1 convolutions. The output is a
``{"model": state_dict}`` file that ``MODEL.WEIGHTS`` loads (the head's score layers stay
randomly initialized: a few "missing keys" are expected).

Examples::

    # FCN-8s/16s/32s: backbone + fc6/fc7
    python projects/SemanticBaselines/convert_vgg16_weights.py --head-prefix sem_seg_head. \\
        vgg16-397923af.pth vgg16_fcn.pth
    # SegNet: the encoder only
    python projects/SemanticBaselines/convert_vgg16_weights.py \\
        --backbone-prefix backbone.encoder. vgg16_bn-6c64b313.pth vgg16_bn_segnet.pth
"""

from __future__ import annotations

import argparse
import sys

import torch

from segtron.modeling.backbone import convert_torchvision_vgg16


def main(argv: list[str] | None = None) -> int:
    """Convert the file named on the command line; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="torchvision state dict (.pth)")
    parser.add_argument("output", help="converted checkpoint (.pth)")
    parser.add_argument("--backbone-prefix", default="backbone.", help="default: backbone.")
    parser.add_argument(
        "--head-prefix", default=None, help="keep fc6/fc7 under this prefix (FCN: sem_seg_head.)"
    )
    args = parser.parse_args(argv)
    state = torch.load(args.source, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        converted = convert_torchvision_vgg16(state, args.backbone_prefix, args.head_prefix)
    except KeyError as e:
        print(f"{args.source} is not a torchvision VGG-16 state dict: {e}", file=sys.stderr)
        return 1
    torch.save({"model": converted, "__author__": "torchvision"}, args.output)
    print(f"Wrote {len(converted)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
