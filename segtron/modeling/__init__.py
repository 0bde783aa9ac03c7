"""Models: backbones (and, as they are added, meta-architectures and heads) with registries.

Re-exports :class:`segtron.layers.ShapeSpec`, as ``detectron2.modeling`` does.
"""

from segtron.layers import ShapeSpec

from .backbone import (
    BACKBONE_REGISTRY,
    FPN,
    Backbone,
    BasicStem,
    BottleneckBlock,
    ResNet,
    ResNetBlockBase,
    build_backbone,
    build_resnet_backbone,
    make_stage,
)

__all__ = [
    "BACKBONE_REGISTRY",
    "FPN",
    "Backbone",
    "BasicStem",
    "BottleneckBlock",
    "ResNet",
    "ResNetBlockBase",
    "ShapeSpec",
    "build_backbone",
    "build_resnet_backbone",
    "make_stage",
]
