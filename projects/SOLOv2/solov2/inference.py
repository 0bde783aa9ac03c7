"""SOLO inference for one image, from category scores and masks to final instances.

Written without Python branches on data (no early returns on empty results) so that
``torch.jit.trace`` records one graph valid for any number of detections: every step works on
zero candidates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .matrix_nms import mask_nms, matrix_nms

__all__ = ["InferenceParams", "cell_strides", "masks_to_boxes", "solo_inference_single"]


@dataclass(frozen=True)
class InferenceParams:
    """Thresholds and limits of SOLO inference (``MODEL.SOLOV2.*``, AdelaiDet's defaults)."""

    score_thr: float = 0.1
    mask_thr: float = 0.5
    update_thr: float = 0.05
    nms_pre: int = 500
    max_per_img: int = 100
    nms_type: str = "matrix"
    nms_kernel: str = "gaussian"
    nms_sigma: float = 2.0


def cell_strides(num_grids: Sequence[int], strides: Sequence[int]) -> torch.Tensor:
    """The stride of the level of every grid cell, all levels' cells concatenated."""
    return torch.cat([torch.full((s * s,), float(t)) for s, t in zip(num_grids, strides)])


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight (x0, y0, x1, y1) boxes of bool masks, x1/y1 one past the last set pixel.

    Args:
        masks: (N, H, W) bool masks.

    Returns:
        (N, 4) float boxes; zeros for an empty mask. The same boxes as
        ``BitMasks.get_bounding_boxes``, in a form that traces for N = 0.
    """
    h, w = masks.shape[-2:]
    cols = masks.any(dim=1)  # (N, W)
    rows = masks.any(dim=2)  # (N, H)
    xs = torch.arange(w, device=masks.device)
    ys = torch.arange(h, device=masks.device)
    x0 = torch.where(cols, xs, w).min(dim=1).values
    x1 = torch.where(cols, xs + 1, 0).max(dim=1).values
    y0 = torch.where(rows, ys, h).min(dim=1).values
    y1 = torch.where(rows, ys + 1, 0).max(dim=1).values
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return boxes * cols.any(dim=1, keepdim=True)


def _resize_masks(
    probs: torch.Tensor,
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    mask_thr: float,
) -> torch.Tensor:
    """Mask probabilities at 1/4 of the padded input → bool masks at the output size.

    As AdelaiDet: upsampled by ceil(h / feature height), cropped to the image, resized to the
    output size (bilinear), thresholded.
    """
    fh, fw = probs.shape[-2:]
    ratio = math.ceil(image_size[0] / fh)
    probs = F.interpolate(probs[:, None], size=(fh * ratio, fw * ratio), mode="bilinear")
    probs = probs[:, :, : image_size[0], : image_size[1]]
    probs = F.interpolate(probs, size=tuple(output_size), mode="bilinear")
    return probs[:, 0] > mask_thr


def solo_inference_single(
    cate_scores: torch.Tensor,
    strides: torch.Tensor,
    mask_fn: Callable[[torch.Tensor], torch.Tensor],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    params: InferenceParams,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn one image's predictions into final instances.

    Candidates are the (cell, class) scores above ``score_thr``; their masks (probabilities >
    ``mask_thr``) must have more pixels than their level's stride; scores are multiplied by the
    maskness (mean probability inside the mask); the best ``nms_pre`` go through Matrix NMS
    (scores decayed, those below ``update_thr`` dropped) or greedy mask NMS; the best
    ``max_per_img`` are kept.

    Args:
        cate_scores: (L, C) category probabilities of every cell of every level, after point
            NMS.
        strides: (L,) the level stride of every cell.
        mask_fn: maps (K,) cell indices to their (K, h, w) mask probabilities at 1/4 of the
            padded input.
        image_size: (height, width) of the image within the padded input.
        output_size: (height, width) of the returned masks.
        params: thresholds and limits.

    Returns:
        ``(masks, scores, classes, boxes)``: (K, H, W) bool masks at `output_size`, (K,)
        scores in decreasing order, (K,) int64 classes and (K, 4) boxes around the masks.

    Raises:
        ValueError: for an unknown ``params.nms_type``.
    """
    if params.nms_type not in ("matrix", "mask"):
        raise ValueError(
            f"MODEL.SOLOV2.NMS_TYPE must be 'matrix' or 'mask'; got {params.nms_type!r}."
        )
    cells, labels = (cate_scores > params.score_thr).nonzero(as_tuple=True)
    scores = cate_scores[cells, labels]
    probs = mask_fn(cells)
    masks = probs > params.mask_thr
    areas = masks.sum(dim=(1, 2)).float()
    keep = areas > strides[cells]
    probs, masks, areas, scores, labels = (
        probs[keep],
        masks[keep],
        areas[keep],
        scores[keep],
        labels[keep],
    )
    scores = scores * (probs * masks).sum(dim=(1, 2)) / areas

    order = torch.argsort(scores, descending=True)[: params.nms_pre]
    probs, masks, areas, scores, labels = (
        probs[order],
        masks[order],
        areas[order],
        scores[order],
        labels[order],
    )
    if params.nms_type == "matrix":
        scores = matrix_nms(labels, masks, areas, scores, params.nms_sigma, params.nms_kernel)
        keep = scores >= params.update_thr
    else:
        keep = mask_nms(labels, masks, areas, scores, params.mask_thr)
    probs, scores, labels = probs[keep], scores[keep], labels[keep]

    order = torch.argsort(scores, descending=True)[: params.max_per_img]
    probs, scores, labels = probs[order], scores[order], labels[order]
    out_masks = _resize_masks(probs, image_size, output_size, params.mask_thr)
    return out_masks, scores, labels, masks_to_boxes(out_masks)
