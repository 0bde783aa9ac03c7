"""Models: backbones, meta-architectures and heads with their registries, and post-processing.

Re-exports :class:`segtron.layers.ShapeSpec`, as ``detectron2.modeling`` does.
"""

from segtron.layers import ShapeSpec

from .anchor_generator import ANCHOR_GENERATOR_REGISTRY, build_anchor_generator
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
    GeneralizedRCNN,
    PanopticFPN,
    ProposalNetwork,
    SemanticSegmentor,
    SemSegFPNHead,
    build_model,
    build_sem_seg_head,
)
from .poolers import ROIPooler
from .postprocessing import detector_postprocess, sem_seg_postprocess
from .proposal_generator import (
    PROPOSAL_GENERATOR_REGISTRY,
    RPN_HEAD_REGISTRY,
    build_proposal_generator,
    build_rpn_head,
)
from .roi_heads import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
    FastRCNNOutputLayers,
    ROIHeads,
    StandardROIHeads,
    build_box_head,
    build_mask_head,
    build_roi_heads,
)
from .test_time_augmentation import DatasetMapperTTA, SemanticSegmentorWithTTA

__all__ = [
    "ANCHOR_GENERATOR_REGISTRY",
    "BACKBONE_REGISTRY",
    "FPN",
    "META_ARCH_REGISTRY",
    "PROPOSAL_GENERATOR_REGISTRY",
    "ROI_BOX_HEAD_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "ROI_MASK_HEAD_REGISTRY",
    "RPN_HEAD_REGISTRY",
    "SEM_SEG_HEADS_REGISTRY",
    "Backbone",
    "BasicStem",
    "BottleneckBlock",
    "DatasetMapperTTA",
    "FastRCNNOutputLayers",
    "GeneralizedRCNN",
    "PanopticFPN",
    "ProposalNetwork",
    "ROIHeads",
    "ROIPooler",
    "ResNet",
    "ResNetBlockBase",
    "SemSegFPNHead",
    "SemanticSegmentor",
    "SemanticSegmentorWithTTA",
    "StandardROIHeads",
    "ShapeSpec",
    "build_anchor_generator",
    "build_backbone",
    "build_box_head",
    "build_mask_head",
    "build_model",
    "build_proposal_generator",
    "build_resnet_backbone",
    "build_roi_heads",
    "build_rpn_head",
    "build_sem_seg_head",
    "detector_postprocess",
    "make_stage",
    "sem_seg_postprocess",
]
