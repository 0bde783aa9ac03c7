"""Multi-level region-of-interest pooling: :class:`ROIPooler` and its helpers.

A box is pooled from the one pyramid level that suits its size (the FPN paper's heuristic,
:func:`assign_boxes_to_levels`). Names, arguments and defaults follow
``detectron2.modeling.poolers``; the pooler has no parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import RoIPool

from segtron.layers import ROIAlign, cat, nonzero_tuple
from segtron.structures import Boxes

__all__ = ["ROIPooler", "assign_boxes_to_levels", "convert_boxes_to_pooler_format"]

_POOLER_TYPES = ("ROIAlign", "ROIAlignV2", "ROIPool")


def assign_boxes_to_levels(
    box_lists: list[Boxes],
    min_level: int,
    max_level: int,
    canonical_box_size: int,
    canonical_level: int,
) -> torch.Tensor:
    """Pick the pyramid level each box is pooled from.

    A box of side ``s = sqrt(area)`` goes to level
    ``floor(canonical_level + log2(s / canonical_box_size + 1e-8))``, clamped to
    ``[min_level, max_level]`` (eq. 1 of the FPN paper, with Detectron2's epsilon).

    Args:
        box_lists: the boxes of each image, in input-image coordinates.
        min_level: the finest level (e.g. 2 for P2, of stride 4).
        max_level: the coarsest level.
        canonical_box_size: the box side mapped to ``canonical_level`` (224, ImageNet's size).
        canonical_level: the level of a canonical box (4 for FPN).

    Returns:
        (R,) int64 indices into the levels, 0 for ``min_level``, for all boxes of all images in
        order.
    """
    box_sizes = torch.sqrt(cat([boxes.area() for boxes in box_lists]))
    levels = torch.floor(canonical_level + torch.log2(box_sizes / canonical_box_size + 1e-8))
    levels = torch.clamp(levels, min=min_level, max=max_level)
    return levels.to(torch.int64) - min_level


def convert_boxes_to_pooler_format(box_lists: list[Boxes]) -> torch.Tensor:
    """Stack the boxes of a batch into the (R, 5) format of torchvision's pooling ops.

    Args:
        box_lists: the boxes of each image.

    Returns:
        (R, 5) rows of (image index, x0, y0, x1, y1), images in order.
    """
    boxes = torch.cat([b.tensor for b in box_lists], dim=0)
    sizes = torch.tensor([len(b) for b in box_lists], device=boxes.device)
    indices = torch.repeat_interleave(
        torch.arange(len(box_lists), dtype=boxes.dtype, device=boxes.device), sizes
    )
    return torch.cat([indices[:, None], boxes], dim=1)


class ROIPooler(nn.Module):
    """Pool each box from the feature level its size calls for.

    Args:
        output_size: side of the (square) pooled output, or (height, width).
        scales: the scale (1 / stride) of each input level, finest first; consecutive powers
            of 1/2.
        sampling_ratio: ``sampling_ratio`` of ROIAlign (0 for adaptive); unused by ROIPool.
        pooler_type: "ROIAlign" (legacy, no half-pixel shift), "ROIAlignV2" (aligned=True) or
            "ROIPool".
        canonical_box_size: the box side that maps to ``canonical_level``.
        canonical_level: the level a box of ``canonical_box_size`` is pooled from.

    Raises:
        ValueError: for an unknown ``pooler_type`` or scales that are not consecutive powers
            of 1/2.
    """

    def __init__(
        self,
        output_size: int | tuple[int, int],
        scales: list[float] | tuple[float, ...],
        sampling_ratio: int,
        pooler_type: str,
        canonical_box_size: int = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        if len(output_size) != 2:
            raise ValueError(f"output_size must be an int or a pair, got {output_size}")
        self.output_size = tuple(int(s) for s in output_size)
        if pooler_type == "ROIPool":
            poolers = [RoIPool(self.output_size, spatial_scale=scale) for scale in scales]
        elif pooler_type in ("ROIAlign", "ROIAlignV2"):
            aligned = pooler_type == "ROIAlignV2"
            poolers = [
                ROIAlign(self.output_size, scale, sampling_ratio, aligned=aligned)
                for scale in scales
            ]
        else:
            raise ValueError(
                f"Unknown pooler type {pooler_type!r}; expected one of {_POOLER_TYPES}"
            )
        self.level_poolers = nn.ModuleList(poolers)

        min_level = -math.log2(scales[0])
        max_level = -math.log2(scales[-1])
        if not all(math.isclose(level, round(level)) for level in (min_level, max_level)):
            raise ValueError(f"Pooler scales must be powers of 1/2, got {list(scales)}")
        self.min_level = int(round(min_level))
        self.max_level = int(round(max_level))
        if len(scales) != self.max_level - self.min_level + 1:
            raise ValueError(f"Pooler scales must be consecutive powers of 1/2, got {list(scales)}")
        if canonical_box_size <= 0:
            raise ValueError(f"canonical_box_size must be positive, got {canonical_box_size}")
        self.canonical_level = canonical_level
        self.canonical_box_size = canonical_box_size

    def forward(self, x: list[torch.Tensor], box_lists: list[Boxes]) -> torch.Tensor:
        """Pool the boxes of every image.

        Args:
            x: one (N, C, H, W) feature map per level, finest first, matching ``scales``.
            box_lists: N lists of boxes, one per image, in input-image coordinates; they may be
                empty.

        Returns:
            (R, C, output_height, output_width) features, R the total number of boxes, in the
            order of the images and of the boxes within each image.

        Raises:
            ValueError: when the number of levels or images does not match.
        """
        if not isinstance(x, list) or len(x) != len(self.level_poolers):
            raise ValueError(
                f"ROIPooler expects a list of {len(self.level_poolers)} feature maps, got "
                f"{len(x) if isinstance(x, list) else type(x).__name__}"
            )
        if len(box_lists) != x[0].shape[0]:
            raise ValueError(
                f"ROIPooler got boxes for {len(box_lists)} images but features for "
                f"{x[0].shape[0]} images"
            )
        if len(box_lists) == 0:
            return x[0].new_zeros((0, x[0].shape[1], *self.output_size))

        rois = convert_boxes_to_pooler_format(box_lists).to(x[0].device)
        if len(self.level_poolers) == 1:
            return self.level_poolers[0](x[0], rois)

        levels = assign_boxes_to_levels(
            box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
        ).to(x[0].device)
        output = x[0].new_zeros((len(rois), x[0].shape[1], *self.output_size))
        for level, pooler in enumerate(self.level_poolers):
            (inds,) = nonzero_tuple(levels == level)
            if len(inds) == 0:
                continue
            output.index_put_((inds,), pooler(x[level], rois[inds]).to(output.dtype))
        return output
