"""Panoptic-DeepLab (segtron.projects.panoptic_deeplab): bottom-up panoptic segmentation.

Importing this package registers the ``PanopticDeepLab`` meta-architecture, the
``PanopticDeepLabSemSegHead`` semantic head and the ``PanopticDeepLabInsEmbedHead`` instance
branch; `add_panoptic_deeplab_config` adds the config keys (DeepLab's included).
"""

from .config import add_panoptic_deeplab_config
from .dataset_mapper import PanopticDeeplabDatasetMapper
from .heads import (
    INS_EMBED_BRANCHES_REGISTRY,
    PanopticDeepLabInsEmbedHead,
    PanopticDeepLabSemSegHead,
    build_ins_embed_branch,
)
from .panoptic_seg import PanopticDeepLab
from .post_processing import get_instance_predictions, get_panoptic_segmentation
from .target_generator import PanopticDeepLabTargetGenerator

__all__ = [
    "INS_EMBED_BRANCHES_REGISTRY",
    "PanopticDeepLab",
    "PanopticDeepLabInsEmbedHead",
    "PanopticDeepLabSemSegHead",
    "PanopticDeepLabTargetGenerator",
    "PanopticDeeplabDatasetMapper",
    "add_panoptic_deeplab_config",
    "build_ins_embed_branch",
    "get_instance_predictions",
    "get_panoptic_segmentation",
]
