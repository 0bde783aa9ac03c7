"""Models: backbones, meta-architectures and heads with their registries, and post-processing.

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
from .meta_arch import (
    META_ARCH_REGISTRY,
    SEM_SEG_HEADS_REGISTRY,
    SemanticSegmentor,
    SemSegFPNHead,
    build_model,
    build_sem_seg_head,
)
from .postprocessing import detector_postprocess, sem_seg_postprocess

__all__ = [
    "BACKBONE_REGISTRY",
    "FPN",
    "META_ARCH_REGISTRY",
    "SEM_SEG_HEADS_REGISTRY",
    "Backbone",
    "BasicStem",
    "BottleneckBlock",
    "ResNet",
    "ResNetBlockBase",
    "SemSegFPNHead",
    "SemanticSegmentor",
    "ShapeSpec",
    "build_backbone",
    "build_model",
    "build_resnet_backbone",
    "build_sem_seg_head",
    "detector_postprocess",
    "make_stage",
    "sem_seg_postprocess",
]
