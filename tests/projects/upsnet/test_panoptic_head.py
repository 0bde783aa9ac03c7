"""Tests of UPSNet's parameter-free panoptic head: logits, pasting and training targets."""

from __future__ import annotations

import math

import pytest
import torch

from segtron.projects.upsnet import (
    panoptic_logits,
    panoptic_targets,
    paste_mask_logits,
    sample_kept_instances,
    semantic_targets,
)


def _reference_logits(sem, regions, classes, mask_values, num_stuff, unknown):
    """Per-pixel loops over the definition, with whole-pixel regions (y0, y1, x0, x1)."""
    channels, height, width = sem.shape
    k = len(regions)
    out = torch.zeros(num_stuff + k + int(unknown), height, width)
    for y in range(height):
        for x in range(width):
            out[:num_stuff, y, x] = sem[:num_stuff, y, x]
            cropped = []
            for i, ((y0, y1, x0, x1), cls) in enumerate(zip(regions, classes)):
                inside = y0 <= y < y1 and x0 <= x < x1
                seg = float(sem[num_stuff + cls, y, x]) if inside else 0.0
                cropped.append(seg)
                out[num_stuff + i, y, x] = seg + (mask_values[i] if inside else 0.0)
            if unknown:
                thing_max = float(sem[num_stuff:, y, x].max())
                out[-1, y, x] = thing_max - (max(cropped) if cropped else 0.0)
    return out


@pytest.mark.parametrize("unknown", [True, False])
def test_panoptic_logits_crop_paste_and_unknown(unknown: bool) -> None:
    torch.manual_seed(0)
    num_stuff, num_things, height, width = 2, 3, 6, 8
    sem = torch.randn(num_stuff + num_things, height, width)
    # Fractional boxes: the regions are floor(x0)..ceil(x1), here [1, 4) x [0, 3) and
    # [3, 8) x [2, 6) (the second box leaves the image and is clipped).
    boxes = torch.tensor([[1.2, 0.0, 3.5, 2.4], [3.0, 2.0, 9.7, 6.0]])
    classes = torch.tensor([2, 0])
    mask_values = [1.5, -0.5]
    masks = torch.tensor(mask_values)[:, None, None].expand(2, 4, 4)  # constant mask logits
    pasted = paste_mask_logits(masks, boxes, (height, width))
    logits = panoptic_logits(sem, boxes, classes, pasted, num_stuff, unknown)
    expected = _reference_logits(
        sem, [(0, 3, 1, 4), (2, 6, 3, 8)], classes.tolist(), mask_values, num_stuff, unknown
    )
    assert logits.shape == (num_stuff + 2 + int(unknown), height, width)
    torch.testing.assert_close(logits, expected)


def test_unknown_without_instances_is_max_thing_logit() -> None:
    sem = torch.randn(4, 3, 5)
    logits = panoptic_logits(
        sem,
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, 3, 5),
        num_stuff=1,
        unknown=True,
    )
    assert logits.shape == (2, 3, 5)
    torch.testing.assert_close(logits[0], sem[0])
    torch.testing.assert_close(logits[1], sem[1:].max(dim=0).values)


def test_paste_mask_logits_resizes_into_the_clipped_box() -> None:
    # A 2x2 ramp [1, 2] stretched bilinearly over 4 columns is [1, 1.25, 1.75, 2]; the box
    # starts 2 px left of the image, so only [1.75, 2] shows, at x = 0, 1.
    ramp = torch.tensor([[[1.0, 2.0], [1.0, 2.0]]])
    pasted = paste_mask_logits(ramp, torch.tensor([[-2.0, 1.0, 2.0, 3.0]]), (4, 5))
    expected = torch.zeros(1, 4, 5)
    expected[0, 1:3, 0] = 1.75
    expected[0, 1:3, 1] = 2.0
    torch.testing.assert_close(pasted, expected)
    outside = paste_mask_logits(ramp, torch.tensor([[6.0, 0.0, 9.0, 2.0]]), (4, 5))
    assert not outside.any()


def _scene():
    """Separated labels (0 thing, 1-2 stuff, 255 VOID) of a 4x6 image with three instances and
    a crowd pixel (labelled 0 without a mask)."""
    sem = torch.tensor(
        [
            [1, 1, 1, 2, 2, 255],
            [0, 0, 1, 0, 0, 2],
            [0, 0, 1, 0, 0, 2],
            [2, 2, 2, 2, 0, 0],
        ]
    )
    masks = torch.zeros(3, 4, 6, dtype=torch.bool)
    masks[0, 1:3, 0:2] = True
    masks[1, 1:3, 3:5] = True
    masks[2, 3, 4] = True  # (3, 5) is a crowd pixel: label 0, no mask
    return sem, masks


def test_panoptic_targets_dropped_instances_become_unknown() -> None:
    sem, masks = _scene()
    num_stuff = 2
    keep = torch.tensor([0, 2])  # instance 1 is dropped
    target = panoptic_targets(sem, masks, keep, num_stuff, unknown=True)
    unknown = num_stuff + len(keep)
    assert (target[masks[0]] == num_stuff + 0).all()
    assert (target[masks[2]] == num_stuff + 1).all()
    assert (target[masks[1]] == unknown).all()
    assert target[3, 5] == unknown  # the crowd pixel
    assert target[0, 0] == 0 and target[0, 3] == 1 and target[0, 5] == 255
    # Without the unknown class, the same pixels take no loss.
    target = panoptic_targets(sem, masks, keep, num_stuff, unknown=False)
    assert (target[masks[1]] == 255).all() and target[3, 5] == 255
    assert (target[masks[2]] == num_stuff + 1).all()


def test_semantic_targets_stuff_first_then_things() -> None:
    sem, masks = _scene()
    target = semantic_targets(sem, masks, torch.tensor([2, 0, 1]), num_stuff=2)
    assert (target[masks[0]] == 4).all() and (target[masks[1]] == 2).all()
    assert target[3, 4] == 3 and target[3, 5] == 255  # crowd: no class known
    assert target[0, 0] == 0 and target[3, 0] == 1 and target[0, 5] == 255


@pytest.mark.parametrize("n", [0, 1, 2, 3, 10, 17])
def test_sample_kept_instances_keeps_max_floor_fraction_or_one(n: int) -> None:
    generator = torch.Generator().manual_seed(n)
    keep = sample_kept_instances(n, 0.7, generator)
    expected = 0 if n == 0 else max(math.floor(0.7 * n), 1)
    assert len(keep) == expected
    assert len(set(keep.tolist())) == expected and all(0 <= i < n for i in keep.tolist())
    assert keep.tolist() == sorted(keep.tolist())


def test_sample_kept_instances_is_random() -> None:
    draws = {tuple(sample_kept_instances(10, 0.5).tolist()) for _ in range(20)}
    assert len(draws) > 1
