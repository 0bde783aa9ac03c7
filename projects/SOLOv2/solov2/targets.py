"""Training targets of SOLO: which grid cells are positive, for which object.

An object of scale sqrt(w·h) within a level's range is assigned to that level (ranges overlap,
so an object may train two levels). Its cells are those within SIGMA × its box half-sizes of
its mass centre, clamped to the 3×3 cells around the centre cell; their category target is the
object's class (a later object wins a shared cell) and each (cell, object) pair trains a mask
against the object's mask sampled at 1/4 scale. As AdelaiDet, objects with at most 5 pixels at
1/4 scale are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from segtron.structures import BitMasks, Instances, PolygonMasks

__all__ = ["LevelTargets", "center_of_mass", "downsample_masks", "get_level_targets"]

MASK_STRIDE = 4


@dataclass
class LevelTargets:
    """The targets of one level for a batch.

    Attributes:
        cate_labels: (N, S, S) int64 class of each cell; ``num_classes`` is background.
        image_index: (P,) image of each positive (cell, object) pair.
        cell_index: (P,) cell ``row * S + col`` of each pair.
        gt_index: (P,) object of each pair, indexing that image's masks.
    """

    cate_labels: torch.Tensor
    image_index: torch.Tensor
    cell_index: torch.Tensor
    gt_index: torch.Tensor


def center_of_mass(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (x, y) mass centres of masks, in pixels.

    Args:
        masks: (N, H, W) bool or 0/1 masks.

    Returns:
        Two (N,) float tensors, x then y (0 for empty masks).
    """
    _, h, w = masks.shape
    # Sums along one axis first: no float copy of the full-resolution masks.
    columns = masks.sum(dim=1, dtype=torch.float32)  # (N, W)
    rows = masks.sum(dim=2, dtype=torch.float32)  # (N, H)
    mass = columns.sum(dim=1).clamp(min=1e-6)
    xs = torch.arange(w, dtype=torch.float32, device=masks.device)
    ys = torch.arange(h, dtype=torch.float32, device=masks.device)
    return (columns * xs).sum(dim=1) / mass, (rows * ys).sum(dim=1) / mass


def gt_bitmasks(instances: Instances) -> torch.Tensor:
    """The ground-truth masks of `instances` as an (N, H, W) bool tensor at its image size.

    Raises:
        ValueError: the instances have no ``gt_masks``.
    """
    if not instances.has("gt_masks"):
        raise ValueError(
            "SOLO trains on instance masks but the ground truth has no gt_masks: set "
            "MODEL.MASK_ON True so that the dataset mapper loads them."
        )
    masks = instances.gt_masks
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, *instances.image_size)
    if isinstance(masks, BitMasks):
        masks = masks.tensor
    return masks.to(torch.bool)


def downsample_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Sample masks at 1/4 scale (pixels 2, 6, 10, ...) into zeros of the mask-feature size.

    Args:
        masks: (N, H, W) masks at the image size.
        size: (height, width) of the mask features (the padded image size / 4).

    Returns:
        (N, height, width) float masks.
    """
    start = MASK_STRIDE // 2
    sampled = masks[:, start::MASK_STRIDE, start::MASK_STRIDE]
    out = masks.new_zeros((masks.shape[0], *size), dtype=torch.float32)
    h, w = min(sampled.shape[1], size[0]), min(sampled.shape[2], size[1])
    out[:, :h, :w] = sampled[:, :h, :w].float()
    return out


def _cells_of_objects(
    boxes: torch.Tensor,
    center_x: torch.Tensor,
    center_y: torch.Tensor,
    grid: int,
    image_size: tuple[int, int],
    sigma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive cells of each object on an S×S grid over the (padded) image.

    Returns:
        ``(object_index, cell_index)`` of every (object, cell) pair, in object order then row
        and column order.
    """
    height, width = image_size
    half_w = 0.5 * (boxes[:, 2] - boxes[:, 0]) * sigma
    half_h = 0.5 * (boxes[:, 3] - boxes[:, 1]) * sigma

    def cell(coord: torch.Tensor, size: int) -> torch.Tensor:
        return torch.floor(coord / size * grid).long()

    cy, cx = cell(center_y, height), cell(center_x, width)
    top = torch.maximum(cell(center_y - half_h, height).clamp(min=0), cy - 1)
    down = torch.minimum(cell(center_y + half_h, height).clamp(max=grid - 1), cy + 1)
    left = torch.maximum(cell(center_x - half_w, width).clamp(min=0), cx - 1)
    right = torch.minimum(cell(center_x + half_w, width).clamp(max=grid - 1), cx + 1)
    offsets = torch.arange(-1, 2, device=boxes.device)
    rows = cy[:, None] + offsets  # (n, 3)
    cols = cx[:, None] + offsets
    row_ok = (rows >= top[:, None]) & (rows <= down[:, None])
    col_ok = (cols >= left[:, None]) & (cols <= right[:, None])
    valid = row_ok[:, :, None] & col_ok[:, None, :]  # (n, 3, 3)
    obj, r, c = valid.nonzero(as_tuple=True)
    return obj, rows[obj, r] * grid + cols[obj, c]


@torch.no_grad()
def get_level_targets(
    gt_instances: Sequence[Instances],
    gt_masks: Sequence[torch.Tensor],
    small_masks: Sequence[torch.Tensor],
    mask_feat_size: tuple[int, int],
    num_grids: Sequence[int],
    scale_ranges: Sequence[Sequence[float]],
    num_classes: int,
    sigma: float,
) -> list[LevelTargets]:
    """Assign the objects of a batch to grid cells, level by level.

    Args:
        gt_instances: per image, ``gt_boxes`` and ``gt_classes``.
        gt_masks: per image, (n_i, H_i, W_i) bool masks at the image size (mass centres).
        small_masks: the same at 1/4 scale (`downsample_masks`).
        mask_feat_size: (height, width) of the mask features; the grid spans 4× that size.
        num_grids: S of each level.
        scale_ranges: (low, high) object scale sqrt(w·h) of each level, inclusive.
        num_classes: the background label.
        sigma: the centre region's fraction of the box half-sizes.

    Returns:
        One :class:`LevelTargets` per level.
    """
    image_size = (mask_feat_size[0] * MASK_STRIDE, mask_feat_size[1] * MASK_STRIDE)
    device = gt_masks[0].device if len(gt_masks) else torch.device("cpu")
    per_level: list[tuple[list, list, list, list]] = [([], [], [], []) for _ in num_grids]
    for img, (instances, masks, small) in enumerate(zip(gt_instances, gt_masks, small_masks)):
        boxes = instances.gt_boxes.tensor
        scales = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0).sqrt()
        valid = small.flatten(1).sum(dim=1) > 5
        center_x, center_y = center_of_mass(masks)
        for (low, high), grid, out in zip(scale_ranges, num_grids, per_level):
            labels = torch.full((grid * grid,), num_classes, dtype=torch.int64, device=device)
            hit = ((scales >= low) & (scales <= high) & valid).nonzero(as_tuple=True)[0]
            obj, cells = _cells_of_objects(
                boxes[hit], center_x[hit], center_y[hit], grid, image_size, sigma
            )
            gt_index = hit[obj]
            # A cell shared by several objects takes the class of the last one.
            owner = torch.full((grid * grid,), -1, dtype=torch.int64, device=device)
            owner.scatter_reduce_(0, cells, gt_index, reduce="amax")
            positive = owner >= 0
            labels[positive] = instances.gt_classes[owner[positive]].to(torch.int64)
            out[0].append(labels.view(grid, grid))
            out[1].append(torch.full_like(cells, img))
            out[2].append(cells)
            out[3].append(gt_index)
    return [
        LevelTargets(torch.stack(labels), torch.cat(images), torch.cat(cells), torch.cat(gts))
        for labels, images, cells, gts in per_level
    ]
