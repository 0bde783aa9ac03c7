"""Pasting fixed-resolution mask predictions into full images (:func:`paste_masks_in_image`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

if TYPE_CHECKING:
    from segtron.structures import Boxes

__all__ = ["paste_masks_in_image"]

BYTES_PER_FLOAT = 4
# Upper bound on the memory of one chunk of pasted masks on GPU.
GPU_MEM_LIMIT = 1024**3


def _do_paste_mask(
    masks: torch.Tensor, boxes: torch.Tensor, img_h: int, img_w: int, skip_empty: bool = True
) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Resample masks into image coordinates with ``grid_sample``.

    Each image pixel centre ``(x + 0.5, y + 0.5)`` is mapped to the box's normalized frame,
    where [-1, 1] spans the mask's outer edges; outside the box the result is 0.

    Args:
        masks: (N, 1, M, M) masks.
        boxes: (N, 4) boxes in (x0, y0, x1, y1) image coordinates.
        img_h: image height.
        img_w: image width.
        skip_empty: only compute the region that tightly holds all boxes (plus a pixel) and
            return it with its slices; much cheaper on CPU for few small boxes.

    Returns:
        The (N, h, w) pasted soft masks and the (row, column) slices of the image they cover;
        empty slices (the whole image) when ``skip_empty`` is False.
    """
    device = masks.device
    if skip_empty:
        x0_int = int(torch.clamp(boxes[:, 0].min().floor() - 1, min=0))
        y0_int = int(torch.clamp(boxes[:, 1].min().floor() - 1, min=0))
        # Boxes wholly outside the image give an empty region instead of a reversed one.
        x1_int = max(int(torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w)), x0_int)
        y1_int = max(int(torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h)), y0_int)
    else:
        x0_int, y0_int, x1_int, y1_int = 0, 0, img_w, img_h
    x0, y0, x1, y1 = boxes.float().split(1, dim=1)
    img_y = torch.arange(y0_int, y1_int, device=device, dtype=torch.float32) + 0.5
    img_x = torch.arange(x0_int, x1_int, device=device, dtype=torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    n, h, w = masks.shape[0], img_y.shape[1], img_x.shape[1]
    grid = torch.stack([img_x[:, None, :].expand(n, h, w), img_y[:, :, None].expand(n, h, w)], 3)
    if not masks.dtype.is_floating_point:
        masks = masks.float()
    pasted = F.grid_sample(masks, grid.to(masks.dtype), align_corners=False)[:, 0]
    if skip_empty:
        return pasted, (slice(y0_int, y1_int), slice(x0_int, x1_int))
    return pasted, ()


def paste_masks_in_image(
    masks: torch.Tensor,
    boxes: Boxes | torch.Tensor,
    image_shape: tuple[int, int],
    threshold: float = 0.5,
) -> torch.Tensor:
    """Paste per-instance square masks into the image, each stretched over its box.

    The masks are sampled bilinearly at image pixel centres (the accurate pasting of
    Detectron2). On CPU each mask is pasted alone, over the region of its box only; on GPU
    masks are pasted over the whole image in chunks of at most ``GPU_MEM_LIMIT`` bytes.

    Args:
        masks: (N, M, M) mask probabilities in [0, 1].
        boxes: ``Boxes`` of length N or an (N, 4) tensor, in (x0, y0, x1, y1) format.
        image_shape: (height, width) of the image.
        threshold: binarization threshold; a negative value keeps soft masks scaled to 0-255.

    Returns:
        (N, height, width) masks: bool when ``threshold >= 0`` (``mask >= threshold``), else
        uint8. For N = 0 the dtype is the same (Detectron2 returns uint8 there).
    """
    if masks.shape[-1] != masks.shape[-2]:
        raise ValueError(f"Only square masks are supported, got {tuple(masks.shape)}")
    box_tensor = boxes if isinstance(boxes, torch.Tensor) else boxes.tensor
    n = len(masks)
    if len(box_tensor) != n:
        raise ValueError(f"Got {n} masks but {len(box_tensor)} boxes")
    img_h, img_w = int(image_shape[0]), int(image_shape[1])
    device = box_tensor.device
    out_dtype = torch.bool if threshold >= 0 else torch.uint8
    img_masks = torch.zeros(n, img_h, img_w, device=device, dtype=out_dtype)
    if n == 0:
        return img_masks
    on_cpu = device.type == "cpu"
    if on_cpu:
        num_chunks = n
    else:
        num_chunks = min(n, math.ceil(n * img_h * img_w * BYTES_PER_FLOAT / GPU_MEM_LIMIT))
    masks = masks.to(device)
    for inds in torch.chunk(torch.arange(n, device=device), num_chunks):
        chunk, spatial = _do_paste_mask(
            masks[inds, None], box_tensor[inds], img_h, img_w, skip_empty=on_cpu
        )
        if threshold >= 0:
            chunk = chunk >= threshold
        else:
            chunk = (chunk * 255).to(torch.uint8)
        img_masks[(inds, *spatial)] = chunk
    return img_masks
