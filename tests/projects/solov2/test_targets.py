"""Tests of SOLO's target assignment on hand-built images."""

from __future__ import annotations

import torch

from segtron.projects.solov2.targets import (
    center_of_mass,
    downsample_masks,
    get_level_targets,
)
from segtron.structures import BitMasks, Boxes, Instances

GRIDS = [20, 16, 12, 8, 6]
RANGES = [(1, 24), (16, 40), (28, 56), (40, 80), (64, 2048)]
IMAGE = (128, 160)
FEAT = (32, 40)


def _instances(rects: list[tuple[int, int, int, int]], classes: list[int]) -> Instances:
    """Rectangles (x0, y0, x1, y1), x1/y1 exclusive, as boxes and masks."""
    inst = Instances(IMAGE)
    masks = torch.zeros(len(rects), *IMAGE, dtype=torch.bool)
    for k, (x0, y0, x1, y1) in enumerate(rects):
        masks[k, y0:y1, x0:x1] = True
    inst.gt_boxes = Boxes(torch.tensor(rects, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    inst.gt_masks = BitMasks(masks)
    return inst


def _targets(instances: list[Instances], sigma: float = 0.2):
    full = [x.gt_masks.tensor for x in instances]
    small = [downsample_masks(m, FEAT) for m in full]
    return get_level_targets(instances, full, small, FEAT, GRIDS, RANGES, 3, sigma), small


def _cells(target, image: int = 0) -> list[tuple[int, int, int]]:
    """(row, col, object) of each positive pair of an image."""
    pick = target.image_index == image
    grid = target.cate_labels.shape[-1]
    return [
        (c // grid, c % grid, g)
        for c, g in zip(target.cell_index[pick].tolist(), target.gt_index[pick].tolist())
    ]


def test_center_of_mass_and_downsampling() -> None:
    masks = torch.zeros(2, 12, 16, dtype=torch.bool)
    masks[0, 2:6, 4:12] = True
    masks[1, 0, 0] = True
    masks[1, 4, 8] = True
    cx, cy = center_of_mass(masks)
    assert cx.tolist() == [7.5, 4.0] and cy.tolist() == [3.5, 2.0]
    small = downsample_masks(masks, (4, 5))
    assert small.shape == (2, 4, 5)
    # Samples at pixels 2, 6, 10: rows 2 (of 2..5) and cols 6, 10 (of 4..11).
    assert small[0].nonzero().tolist() == [[0, 1], [0, 2]]
    assert small[1].sum() == 0  # pixels (0, 0) and (4, 8) are not sampled


def test_levels_by_scale_and_centre_cells() -> None:
    # A: 16x16 (scale 16): levels 0 (1-24) and 1 (16-40). Mass centre (23.5, 47.5).
    # B: 60x60 (scale 60): level 3 (40-80) only. Mass centre (109.5, 49.5).
    inst = _instances([(16, 40, 32, 56), (80, 20, 140, 80)], [1, 2])
    targets, _ = _targets([inst])
    # Level 0, 8x6.4 px cells: centre cell (7, 2); centre region x 21.9-25.1 -> cols 2-3,
    # y 45.9-49.1 -> row 7.
    assert _cells(targets[0]) == [(7, 2, 0), (7, 3, 0)]
    # Level 1, 10x8 px cells: centre (5, 2); region rows 5-6, col 2.
    assert _cells(targets[1]) == [(5, 2, 0), (6, 2, 0)]
    assert _cells(targets[2]) == [] and _cells(targets[4]) == []
    # Level 3, 20x16 px cells: centre (3, 5); region y 43.5-55.5 -> rows 2-3, x -> col 5.
    assert _cells(targets[3]) == [(2, 5, 1), (3, 5, 1)]
    labels = targets[3].cate_labels[0]
    assert labels[2, 5] == 2 and labels[3, 5] == 2
    assert (labels != 3).sum() == 2
    assert (targets[0].cate_labels[0] == 1).sum() == 2
    assert (targets[2].cate_labels == 3).all()


def test_centre_region_clamped_to_3x3_and_last_object_wins() -> None:
    # sigma 1: the region is the whole box, clamped to the 3x3 cells around the centre.
    big = _instances([(40, 30, 100, 90), (70, 60, 100, 90)], [0, 2])
    targets, _ = _targets([big], sigma=1.0)
    cells = _cells(targets[3])
    obj0 = [(r, c) for r, c, g in cells if g == 0]
    rows, cols = {r for r, _ in obj0}, {c for _, c in obj0}
    assert len(obj0) == 9 and max(rows) - min(rows) == 2 and max(cols) - min(cols) == 2
    # Object 1 (30x30, scale 30) is on levels 1 and 2 only.
    assert all(g == 0 for _, _, g in cells)
    assert {g for _, _, g in _cells(targets[1])} == {1}


def test_shared_cell_takes_the_later_object() -> None:
    inst = _instances([(60, 40, 80, 60), (62, 42, 82, 62)], [0, 1])
    targets, _ = _targets([inst])
    shared = set((r, c) for r, c, g in _cells(targets[0]) if g == 0) & set(
        (r, c) for r, c, g in _cells(targets[0]) if g == 1
    )
    assert shared
    for r, c in shared:
        assert targets[0].cate_labels[0, r, c] == 1


def test_small_and_empty_images() -> None:
    tiny = _instances([(10, 10, 14, 14)], [0])  # 1x1 at 1/4 scale: left out, as AdelaiDet
    empty = _instances([], [])
    targets, small = _targets([tiny, empty])
    assert small[1].shape == (0, *FEAT)
    for t in targets:
        assert t.cell_index.numel() == 0 and (t.cate_labels == 3).all()
        assert t.cate_labels.shape[0] == 2
