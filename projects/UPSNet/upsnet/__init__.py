"""segtron.projects.upsnet: UPSNet (Xiong et al., CVPR 2019), a unified panoptic segmentation
network with a parameter-free panoptic head and an unknown class.

Importing it registers the ``UPSNet`` meta-architecture (``META_ARCH_REGISTRY``) and
``UPSNetSemanticHead`` (``SEM_SEG_HEADS_REGISTRY``); ``add_upsnet_config`` adds the
``MODEL.UPSNET`` keys. See ``projects/UPSNet/README.md``.
"""

from .config import add_upsnet_config
from .panoptic_head import (
    panoptic_logits,
    panoptic_targets,
    paste_mask_logits,
    sample_kept_instances,
    semantic_targets,
)
from .postprocessing import combine_panoptic, remove_overlapping_masks, select_panoptic_instances
from .semantic_head import DeformConvWithOffset, UPSNetSemanticHead
from .upsnet import UPSNet

__all__ = [
    "DeformConvWithOffset",
    "UPSNet",
    "UPSNetSemanticHead",
    "add_upsnet_config",
    "combine_panoptic",
    "panoptic_logits",
    "panoptic_targets",
    "paste_mask_logits",
    "remove_overlapping_masks",
    "sample_kept_instances",
    "select_panoptic_instances",
    "semantic_targets",
]
