"""Backbones: the :class:`Backbone` interface, its registry, ResNet and FPN."""

from .backbone import Backbone
from .build import BACKBONE_REGISTRY, build_backbone
from .fpn import (
    FPN,
    LastLevelMaxPool,
    LastLevelP6P7,
    build_resnet_fpn_backbone,
    build_retinanet_resnet_fpn_backbone,
)
from .resnet import (
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    DeepLabStem,
    DeformBottleneckBlock,
    ResNet,
    ResNetBlockBase,
    build_resnet_backbone,
    build_resnet_deeplab_backbone,
    make_stage,
)
from .vgg import VGG16, VGGStage, build_vgg16_backbone, convert_torchvision_vgg16

__all__ = [
    "BACKBONE_REGISTRY",
    "Backbone",
    "BasicBlock",
    "BasicStem",
    "BottleneckBlock",
    "DeepLabStem",
    "DeformBottleneckBlock",
    "FPN",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "ResNet",
    "ResNetBlockBase",
    "VGG16",
    "VGGStage",
    "build_backbone",
    "build_resnet_backbone",
    "build_resnet_deeplab_backbone",
    "build_resnet_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone",
    "build_vgg16_backbone",
    "convert_torchvision_vgg16",
    "make_stage",
]
