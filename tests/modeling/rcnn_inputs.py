"""Tiny Mask R-CNN / Panoptic FPN configs and synthetic-like inputs shared by the model tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segtron.config import get_cfg
from segtron.structures import BitMasks, Boxes, Instances

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_rcnn_cfg(config: str = "Synthetic/mask_rcnn_R_18_FPN.yaml") -> Any:
    """A shipped Synthetic config, narrowed so that the model runs in milliseconds."""
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / config))
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 100
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 100
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # random weights: keep every detection
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 32
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    return cfg


def shapes_input(size: tuple[int, int] = (64, 80), **extra: Any) -> dict[str, Any]:
    """An image with a bright square and a dark disc on a grey background, with annotations.

    Args:
        size: (height, width) of the image, at least 64×80.
        **extra: more entries of the dict, e.g. the output "height" and "width".
    """
    height, width = size
    image = torch.full((3, height, width), 120.0)
    masks = torch.zeros(2, height, width, dtype=torch.bool)
    masks[0, 8:30, 10:34] = True
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    masks[1] = (yy - 40) ** 2 + (xx - 55) ** 2 <= 12**2
    image[:, masks[0]] = 240.0
    image[:, masks[1]] = 20.0
    instances = Instances((height, width))
    instances.gt_boxes = Boxes(torch.tensor([[10.0, 8.0, 34.0, 30.0], [43.0, 28.0, 68.0, 53.0]]))
    instances.gt_classes = torch.tensor([1, 0])
    instances.gt_masks = BitMasks(masks)
    return {"image": image, "instances": instances, **extra}
