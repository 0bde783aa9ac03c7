"""Suppression of duplicate SOLO predictions: point NMS, Matrix NMS and greedy mask NMS.

:func:`matrix_nms` is SOLOv2's parallel soft-NMS (Wang et al., 2020): every score is decayed
at once from one IoU matrix, with no loop over candidates, so it runs as a few matrix
operations on CPU or GPU and traces into TorchScript.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["mask_iou_matrix", "mask_nms", "matrix_nms", "point_nms"]


def point_nms(heat: torch.Tensor, kernel: int = 2) -> torch.Tensor:
    """Keep only local maxima of category score maps (2×2 max-pooling, as AdelaiDet).

    Args:
        heat: (N, C, S, S) scores.
        kernel: the pooling window; AdelaiDet uses 2.

    Returns:
        `heat` with every score that is not the maximum of its window (the cell, the one
        above, left and above-left for kernel 2) set to 0.
    """
    pooled = F.max_pool2d(heat, (kernel, kernel), stride=1, padding=kernel // 2)
    pooled = pooled[:, :, : heat.shape[-2], : heat.shape[-1]]
    return heat * (pooled == heat).to(heat.dtype)


def mask_iou_matrix(masks: torch.Tensor, areas: torch.Tensor | None = None) -> torch.Tensor:
    """IoU of every pair of binary masks.

    Args:
        masks: (N, H, W) bool or 0/1 masks.
        areas: (N,) pixel counts of the masks; computed when None.

    Returns:
        (N, N) float IoUs (NaN for two empty masks).
    """
    flat = masks.flatten(1).float()
    if areas is None:
        areas = flat.sum(dim=1)
    inter = flat @ flat.t()
    return inter / (areas[:, None] + areas[None, :] - inter)


def matrix_nms(
    labels: torch.Tensor,
    masks: torch.Tensor,
    areas: torch.Tensor,
    scores: torch.Tensor,
    sigma: float = 2.0,
    kernel: str = "gaussian",
) -> torch.Tensor:
    """Decay the scores of masks that overlap higher-scored masks of the same class.

    The candidates must be sorted by decreasing score. For a pair (i, j) with i before j and
    the same label, with iou_ij their IoU and comp_i the largest IoU of i with any candidate
    before it of its label, the decay is exp(−σ·iou_ij²) / exp(−σ·comp_i²) (gaussian) or
    (1 − iou_ij) / (1 − comp_i) (linear); candidate j takes the smallest decay over all i,
    and never more than 1. Same result as AdelaiDet's ``matrix_nms``; also works for zero
    candidates. The linear kernel's denominator is clamped at 1e-6 where the reference divides
    by zero (two identical masks).

    Args:
        labels: (N,) class of each candidate.
        masks: (N, H, W) bool masks.
        areas: (N,) float pixel counts of the masks.
        scores: (N,) scores, sorted in decreasing order.
        sigma: σ of the gaussian kernel.
        kernel: "gaussian" or "linear".

    Returns:
        (N,) decayed scores.

    Raises:
        ValueError: for an unknown kernel.
    """
    if kernel not in ("gaussian", "linear"):
        raise ValueError(
            f"Matrix NMS kernel (MODEL.SOLOV2.NMS_KERNEL) must be 'gaussian' or 'linear'; got "
            f"{kernel!r}."
        )
    n = labels.shape[0]
    same_class = labels[:, None] == labels[None, :]
    # Row i, column j: pairs with i scored higher (strict upper triangle) and the same class.
    decay_iou = (mask_iou_matrix(masks, areas) * same_class).triu(diagonal=1)
    # A zero first row (a virtual candidate overlapping nothing) makes the column maxima and
    # minima defined for N = 0 and changes nothing else: its decay is 1, never below row 0's.
    decay_iou = torch.cat([decay_iou.new_zeros(1, n), decay_iou], dim=0)
    compensate = decay_iou.max(dim=0).values  # comp_i, for i = column index
    compensate = torch.cat([compensate.new_zeros(1), compensate])[:, None]
    if kernel == "gaussian":
        decay = torch.exp(-sigma * (decay_iou**2 - compensate**2))
    else:
        decay = (1 - decay_iou) / (1 - compensate).clamp(min=1e-6)
    return scores * decay.min(dim=0).values


def mask_nms(
    labels: torch.Tensor, masks: torch.Tensor, areas: torch.Tensor, scores: torch.Tensor, iou_thr
) -> torch.Tensor:
    """Greedy (hard) NMS on masks of the same class, AdelaiDet's ``NMS_TYPE: "mask"``.

    Args:
        labels: (N,) classes.
        masks: (N, H, W) bool masks.
        areas: (N,) float pixel counts.
        scores: (N,) scores, sorted in decreasing order (only the order is used).
        iou_thr: a candidate is dropped when its IoU with a kept, higher-scored candidate of its
            class exceeds this (AdelaiDet passes ``MASK_THR``).

    Returns:
        (N,) bool: which candidates to keep.
    """
    del scores  # the order is the sort order
    iou = mask_iou_matrix(masks, areas).nan_to_num(1.0)
    suppress = (iou > iou_thr) & (labels[:, None] == labels[None, :])
    keep = torch.ones(labels.shape[0], dtype=torch.bool, device=labels.device)
    for i in range(labels.shape[0]):
        if keep[i]:
            keep[i + 1 :] &= ~suppress[i, i + 1 :]
    return keep
