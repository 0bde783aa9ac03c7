"""Tests for segtron.layers.mask_ops.paste_masks_in_image."""

from dataclasses import dataclass

import pytest
import torch

from segtron.layers import paste_masks_in_image
from segtron.layers.mask_ops import _do_paste_mask


@dataclass
class _Boxes:
    tensor: torch.Tensor


def _reference_paste(mask: torch.Tensor, box: list[float], h: int, w: int) -> torch.Tensor:
    """Per-pixel bilinear sampling of ``mask`` stretched over ``box``, zero outside the mask."""
    m = mask.shape[0]
    x0, y0, x1, y1 = box
    out = torch.zeros(h, w)
    for row in range(h):
        for col in range(w):
            u = (col + 0.5 - x0) / (x1 - x0) * m - 0.5
            v = (row + 0.5 - y0) / (y1 - y0) * m - 0.5
            u0, v0 = int(torch.tensor(u).floor()), int(torch.tensor(v).floor())
            total = 0.0
            for dv, wv in ((0, 1 - (v - v0)), (1, v - v0)):
                for du, wu in ((0, 1 - (u - u0)), (1, u - u0)):
                    r, c = v0 + dv, u0 + du
                    if 0 <= r < m and 0 <= c < m:
                        total += wv * wu * float(mask[r, c])
            out[row, col] = total
    return out


def test_paste_full_mask_covers_exactly_the_box():
    masks = torch.ones(1, 4, 4)
    boxes = torch.tensor([[1.0, 2.0, 4.0, 5.0]])
    out = paste_masks_in_image(masks, boxes, (7, 9))
    expected = torch.zeros(7, 9, dtype=torch.bool)
    expected[2:5, 1:4] = True
    assert out.dtype == torch.bool and torch.equal(out[0], expected)


def test_paste_matches_reference_sampling():
    torch.manual_seed(0)
    masks = torch.rand(3, 5, 5)
    boxes = [[0.7, 1.2, 6.3, 4.9], [-2.0, 3.5, 3.0, 9.5], [4.2, -1.0, 9.8, 2.6]]
    h, w = 8, 9
    soft = paste_masks_in_image(masks, _Boxes(torch.tensor(boxes)), (h, w), threshold=-1)
    hard = paste_masks_in_image(masks, torch.tensor(boxes), (h, w), threshold=0.4)
    for i, box in enumerate(boxes):
        ref = _reference_paste(masks[i], box, h, w)
        assert soft.dtype == torch.uint8
        assert (soft[i].int() - (ref * 255).to(torch.uint8).int()).abs().max() <= 1
        assert torch.equal(hard[i], ref >= 0.4)


def test_do_paste_mask_region_equals_full_image():
    torch.manual_seed(1)
    masks = torch.rand(2, 1, 6, 6)
    boxes = torch.tensor([[2.5, 1.0, 5.0, 4.5], [3.0, 2.0, 6.5, 3.5]])
    full, slices = _do_paste_mask(masks, boxes, 9, 11, skip_empty=False)
    assert full.shape == (2, 9, 11) and slices == ()
    region, (rows, cols) = _do_paste_mask(masks, boxes, 9, 11, skip_empty=True)
    assert (rows, cols) == (slice(0, 6), slice(1, 8))
    torch.testing.assert_close(region, full[:, rows, cols])
    assert full[:, :, cols.stop :].abs().max() == 0


def test_paste_empty_and_mismatched_inputs():
    out = paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 7))
    assert out.shape == (0, 5, 7) and out.dtype == torch.bool
    soft = paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 7), threshold=-1)
    assert soft.dtype == torch.uint8
    with pytest.raises(ValueError, match="square"):
        paste_masks_in_image(torch.zeros(1, 4, 5), torch.zeros(1, 4), (5, 7))
    with pytest.raises(ValueError, match="boxes"):
        paste_masks_in_image(torch.zeros(2, 4, 4), torch.zeros(1, 4), (5, 7))


def test_paste_box_outside_image_gives_empty_mask():
    out = paste_masks_in_image(
        torch.ones(1, 3, 3), torch.tensor([[20.0, 20.0, 30.0, 30.0]]), (4, 5)
    )
    assert out.shape == (1, 4, 5) and not out.any()
