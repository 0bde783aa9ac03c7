"""ROI heads of two-stage detectors (Mask R-CNN): box and mask heads, the Fast R-CNN predictor.

Mirrors ``detectron2.modeling.roi_heads``: the registries ``ROI_HEADS_REGISTRY``,
``ROI_BOX_HEAD_REGISTRY`` and ``ROI_MASK_HEAD_REGISTRY`` with their ``build_*`` functions.
"""

from .box_head import ROI_BOX_HEAD_REGISTRY, FastRCNNConvFCHead, build_box_head
from .fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference
from .mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    BaseMaskRCNNHead,
    MaskRCNNConvUpsampleHead,
    build_mask_head,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from .roi_heads import (
    ROI_HEADS_REGISTRY,
    Res5ROIHeads,
    ROIHeads,
    StandardROIHeads,
    build_roi_heads,
    select_foreground_proposals,
)

__all__ = [
    "ROI_BOX_HEAD_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "ROI_MASK_HEAD_REGISTRY",
    "BaseMaskRCNNHead",
    "FastRCNNConvFCHead",
    "FastRCNNOutputLayers",
    "MaskRCNNConvUpsampleHead",
    "ROIHeads",
    "Res5ROIHeads",
    "StandardROIHeads",
    "build_box_head",
    "build_mask_head",
    "build_roi_heads",
    "fast_rcnn_inference",
    "mask_rcnn_inference",
    "mask_rcnn_loss",
    "select_foreground_proposals",
]
