"""UPSNet's parameter-free panoptic head: panoptic logits and their training targets.

Channels of the panoptic logits of one image, for S stuff classes and k instances:

- ``0 .. S-1``: the stuff channels of the semantic logits;
- ``S .. S+k-1``: per instance, the semantic logit of its class inside its box (zero outside)
  plus its mask logits resized into the box (zero outside);
- ``S+k`` (with the unknown class): the maximum over the thing channels of the semantic
  logits minus the maximum over instances of their box-cropped semantic term.

Boxes are taken to whole pixels (floor of the top-left, ceiling of the bottom-right corner), so
the cropped semantic term and the pasted mask cover the same pixels.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

__all__ = [
    "box_region",
    "panoptic_logits",
    "panoptic_targets",
    "paste_mask_logits",
    "sample_kept_instances",
    "semantic_targets",
]


def box_region(box: torch.Tensor | list[float], height: int, width: int) -> tuple[int, ...]:
    """The whole-pixel extent of a box, unclipped and clipped to the image.

    Args:
        box: (x0, y0, x1, y1) in pixels.
        height: image height.
        width: image width.

    Returns:
        ``(bx0, by0, bx1, by1, x0, y0, x1, y1)``: the box's pixel extent (at least one pixel
        wide and high, end exclusive) and its part inside the image (possibly empty).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    bx0, by0 = math.floor(x0), math.floor(y0)
    bx1, by1 = max(math.ceil(x1), bx0 + 1), max(math.ceil(y1), by0 + 1)
    cx0, cy0 = min(max(bx0, 0), width), min(max(by0, 0), height)
    cx1, cy1 = max(min(bx1, width), cx0), max(min(by1, height), cy0)
    return bx0, by0, bx1, by1, cx0, cy0, cx1, cy1


def paste_mask_logits(
    mask_logits: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int]
) -> torch.Tensor:
    """Resize each square mask logit map bilinearly to its box and paste it into the image.

    Args:
        mask_logits: (k, M, M) logits.
        boxes: (k, 4) boxes (x0, y0, x1, y1) in pixels of the image.
        image_size: (height, width).

    Returns:
        (k, height, width) logits, zero outside each box.
    """
    height, width = image_size
    out = mask_logits.new_zeros((len(mask_logits), height, width))
    for i, (logits, box) in enumerate(zip(mask_logits, boxes.tolist())):
        bx0, by0, bx1, by1, x0, y0, x1, y1 = box_region(box, height, width)
        if x1 <= x0 or y1 <= y0:
            continue
        resized = F.interpolate(
            logits[None, None], size=(by1 - by0, bx1 - bx0), mode="bilinear", align_corners=False
        )[0, 0]
        out[i, y0:y1, x0:x1] = resized[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
    return out


def panoptic_logits(
    sem_logits: torch.Tensor,
    boxes: torch.Tensor,
    classes: torch.Tensor,
    pasted_mask_logits: torch.Tensor,
    num_stuff: int,
    unknown: bool,
) -> torch.Tensor:
    """The panoptic logits of one image (see the module docstring for the channels).

    Args:
        sem_logits: (S + T, H, W) semantic logits, stuff channels first.
        boxes: (k, 4) instance boxes in pixels of ``sem_logits``.
        classes: (k,) thing classes in [0, T).
        pasted_mask_logits: (k, H, W) mask logits, from :func:`paste_mask_logits`.
        num_stuff: S.
        unknown: append the unknown channel.

    Returns:
        (S + k (+ 1), H, W) logits.
    """
    height, width = sem_logits.shape[-2:]
    inst_sem = sem_logits.new_zeros((len(boxes), height, width))
    for i, (box, cls) in enumerate(zip(boxes.tolist(), classes.tolist())):
        _, _, _, _, x0, y0, x1, y1 = box_region(box, height, width)
        inst_sem[i, y0:y1, x0:x1] = sem_logits[num_stuff + cls, y0:y1, x0:x1]
    channels = [sem_logits[:num_stuff], inst_sem + pasted_mask_logits]
    if unknown:
        thing_max = sem_logits[num_stuff:].max(dim=0).values
        inst_max = inst_sem.max(dim=0).values if len(boxes) else torch.zeros_like(thing_max)
        channels.append((thing_max - inst_max)[None])
    return torch.cat(channels, dim=0)


def semantic_targets(
    sem_seg: torch.Tensor,
    masks: torch.Tensor,
    classes: torch.Tensor,
    num_stuff: int,
    ignore_value: int = 255,
) -> torch.Tensor:
    """Labels of all semantic classes from "separated" labels and instance masks.

    Args:
        sem_seg: (H, W) labels: 0 any thing, 1..S stuff, ``ignore_value`` VOID.
        masks: (n, H, W) bool instance masks.
        classes: (n,) thing classes in [0, T).
        num_stuff: S.
        ignore_value: the VOID label, kept.

    Returns:
        (H, W) labels: stuff ``s - 1``, things ``S + class`` where an instance mask covers
        the pixel (later masks win), ``ignore_value`` elsewhere (VOID, crowds).
    """
    target = torch.full_like(sem_seg, ignore_value)
    stuff = (sem_seg >= 1) & (sem_seg <= num_stuff)
    target[stuff] = sem_seg[stuff] - 1
    for mask, cls in zip(masks, classes.tolist()):
        target[mask] = num_stuff + cls
    return target


def panoptic_targets(
    sem_seg: torch.Tensor,
    masks: torch.Tensor,
    keep: torch.Tensor,
    num_stuff: int,
    unknown: bool,
    ignore_value: int = 255,
) -> torch.Tensor:
    """The panoptic head's labels when the instances ``keep`` are its instance channels.

    Args:
        sem_seg: (H, W) labels: 0 any thing, 1..S stuff, ``ignore_value`` VOID.
        masks: (n, H, W) bool masks of all ground-truth instances.
        keep: (k,) indices of the kept instances, in channel order.
        num_stuff: S.
        unknown: whether the logits have the unknown channel.

    Returns:
        (H, W) labels: stuff ``s - 1``; ``S + j`` for the pixels of kept instance j (later
        ones win); the other thing pixels (dropped instances, crowds) are ``S + k`` (the
        unknown class) with ``unknown``, else ``ignore_value``; VOID stays ``ignore_value``.
    """
    target = torch.full_like(sem_seg, ignore_value)
    stuff = (sem_seg >= 1) & (sem_seg <= num_stuff)
    target[stuff] = sem_seg[stuff] - 1
    if unknown:
        target[sem_seg == 0] = num_stuff + len(keep)
    for j, index in enumerate(keep.tolist()):
        target[masks[index]] = num_stuff + j
    return target


def sample_kept_instances(
    num_instances: int, fraction: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``max(floor(fraction * n), 1)`` of n instances chosen at random (none when n = 0).

    Args:
        num_instances: n.
        fraction: the keep fraction, in (0, 1].
        generator: random generator (default: torch's global one).

    Returns:
        Sorted int64 indices.
    """
    if num_instances == 0:
        return torch.zeros(0, dtype=torch.long)
    count = max(int(math.floor(fraction * num_instances)), 1)
    return torch.randperm(num_instances, generator=generator)[:count].sort().values
