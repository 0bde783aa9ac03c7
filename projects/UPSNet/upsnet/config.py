"""Config keys of UPSNet: ``add_upsnet_config``.

UPSNet reads the Mask R-CNN keys of the core (``MODEL.ROI_HEADS.NUM_CLASSES`` = number of thing
classes, ``MODEL.MASK_ON`` must be True), the shared semantic-head keys
``MODEL.SEM_SEG_HEAD.*`` (NAME "UPSNetSemanticHead", IN_FEATURES, NUM_CLASSES = number of stuff
classes + 1 as in Panoptic FPN's "separated" labels where 0 is "any thing", IGNORE_VALUE,
CONVS_DIM, NORM, LOSS_WEIGHT) and these keys of its own under ``MODEL.UPSNET``:

- ``SEM_SEG_NUM_CONVS``: depth of the semantic subnet shared over P2-P5 (3 on COCO, 2 on
  Cityscapes in the paper);
- ``SEM_SEG_DEFORMABLE``: deformable 3×3 convolutions in that subnet (False: plain, faster);
- ``SEM_SEG_ROI_LOSS_WEIGHT``: weight of the semantic cross-entropy on ground-truth thing boxes
  (RoI-aligned semantic logits); 0 disables it. The paper's COCO model uses 0.2 × 0.2;
- ``SEM_SEG_ROI_SIZE``: side of the RoI grid of that loss (the mask size, 28);
- ``PANOPTIC_LOSS_WEIGHT``: weight of the panoptic head's cross-entropy;
- ``UNKNOWN_ENABLED``: predict the unknown class (its pixels become VOID at inference);
- ``BOX_KEEP_FRACTION``: in training, ``max(floor(fraction * n), 1)`` of the n ground-truth
  instances are kept at random in the panoptic head and the pixels of the others are the
  unknown class's target (only when ``UNKNOWN_ENABLED``);
- ``INSTANCE_SCORE_THRESH``, ``INSTANCE_NMS_THRESH``, ``MAX_INSTANCES``: selection of the
  detections entering the panoptic head (score, class-agnostic NMS, count);
- ``MASK_OVERLAP_THRESH``: a mask more than this fraction covered by higher-scored kept masks
  of its class is removed;
- ``STUFF_RELABEL_THRESH``: an instance whose pixels are at least this fraction of one stuff
  class in the semantic prediction (and not mostly its own class) becomes that stuff;
- ``STUFF_AREA_LIMIT``: stuff segments smaller than this many pixels become VOID.
"""

from __future__ import annotations

from typing import Any

from segtron.config import CfgNode, add_missing_keys

__all__ = ["add_upsnet_config"]

# Defaults of the paper's COCO model (Xiong et al., CVPR 2019, and its released code).
_DEFAULTS: dict[str, Any] = {
    "SEM_SEG_NUM_CONVS": 3,
    "SEM_SEG_DEFORMABLE": True,
    "SEM_SEG_ROI_LOSS_WEIGHT": 0.0,
    "SEM_SEG_ROI_SIZE": 28,
    "PANOPTIC_LOSS_WEIGHT": 0.1,
    "UNKNOWN_ENABLED": True,
    "BOX_KEEP_FRACTION": 0.7,
    "INSTANCE_SCORE_THRESH": 0.6,
    "INSTANCE_NMS_THRESH": 0.5,
    "MAX_INSTANCES": 100,
    "MASK_OVERLAP_THRESH": 0.3,
    "STUFF_RELABEL_THRESH": 0.5,
    "STUFF_AREA_LIMIT": 4096,
}


def add_upsnet_config(cfg: CfgNode) -> None:
    """Add the ``MODEL.UPSNET`` keys to `cfg` (in place); keys already present are kept.

    Args:
        cfg: a config from `segtron.config.get_cfg`, not frozen.
    """
    add_missing_keys(cfg, {"MODEL.UPSNET": _DEFAULTS})
