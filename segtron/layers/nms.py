"""Non-maximum suppression: torchvision's ``nms`` and a float32 ``batched_nms``."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms as _tv_batched_nms
from torchvision.ops import nms

__all__ = ["batched_nms", "nms"]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Per-category NMS: boxes with different ``idxs`` never suppress each other.

    ``torchvision.ops.batched_nms`` run in float32, since float16 lacks the range for the
    per-category coordinate offsets it may use.

    Args:
        boxes: (N, 4) boxes in (x0, y0, x1, y1) format.
        scores: (N,) scores.
        idxs: (N,) category of each box.
        iou_threshold: boxes overlapping a kept box of the same category with IoU above this are
            discarded.

    Returns:
        int64 indices of the kept boxes, by decreasing score (empty for N = 0).
    """
    if boxes.shape[-1] != 4:
        raise ValueError(f"batched_nms expects (N, 4) boxes, got {tuple(boxes.shape)}")
    return _tv_batched_nms(boxes.float(), scores.float(), idxs, iou_threshold)
