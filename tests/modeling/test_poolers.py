"""Tests of ROIPooler, assign_boxes_to_levels and convert_boxes_to_pooler_format."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from segtron.modeling import ROIPooler
from segtron.modeling.poolers import assign_boxes_to_levels, convert_boxes_to_pooler_format
from segtron.structures import Boxes

FPN_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)


def square(x0: float, y0: float, side: float) -> list[float]:
    return [x0, y0, x0 + side, y0 + side]


def test_assign_boxes_to_levels_known_sizes() -> None:
    # side 224 is canonical (level 4); halving/doubling moves one level; out of range clamps.
    sides = [224, 112, 56, 448, 10, 2000, 223, 160]
    boxes = Boxes(torch.tensor([square(0, 0, s) for s in sides], dtype=torch.float32))
    levels = assign_boxes_to_levels([boxes], 2, 5, canonical_box_size=224, canonical_level=4)
    # Level indices count from min_level = 2.
    assert levels.tolist() == [2, 1, 0, 3, 0, 3, 1, 1]
    assert levels.dtype == torch.int64


def test_assign_boxes_to_levels_spans_images_and_non_square_boxes() -> None:
    first = Boxes(torch.tensor([[0.0, 0.0, 448.0, 112.0]]))  # sqrt(area) = 224
    second = Boxes(torch.tensor([[10.0, 10.0, 42.0, 42.0], [0.0, 0.0, 896.0, 896.0]]))
    levels = assign_boxes_to_levels([first, second], 2, 5, 224, 4)
    assert levels.tolist() == [2, 0, 3]


def test_convert_boxes_to_pooler_format() -> None:
    a = Boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    b = Boxes(torch.zeros(0, 4))
    c = Boxes(torch.tensor([[5.0, 6.0, 7.0, 8.0], [0.0, 0.0, 1.0, 1.0]]))
    rois = convert_boxes_to_pooler_format([a, b, c])
    expected = torch.tensor(
        [[0, 1, 2, 3, 4], [2, 5, 6, 7, 8], [2, 0, 0, 1, 1]], dtype=torch.float32
    )
    torch.testing.assert_close(rois, expected)


def constant_levels(num_images: int = 2, channels: int = 3, image_size: int = 256):
    """FPN-like features where level l (P2..P5) is filled with the value l."""
    return [
        torch.full((num_images, channels, int(image_size * s), int(image_size * s)), float(lvl))
        for lvl, s in zip(range(2, 6), FPN_SCALES)
    ]


def test_pooler_output_shape_and_level_values_on_constant_maps() -> None:
    pooler = ROIPooler(7, FPN_SCALES, sampling_ratio=0, pooler_type="ROIAlignV2")
    features = constant_levels(image_size=512)
    boxes_img0 = Boxes(torch.tensor([square(8, 8, 40), square(0, 0, 200)]))
    boxes_img1 = Boxes(torch.tensor([square(20, 30, 120), square(16, 16, 230), square(0, 0, 500)]))
    out = pooler(features, [boxes_img0, boxes_img1])
    assert out.shape == (5, 3, 7, 7)
    # A constant map pools to the constant, which tells the level each box came from:
    # floor(4 + log2(side / 224)) clamped to [2, 5].
    expected_levels = [2, 3, 3, 4, 5]
    for i, level in enumerate(expected_levels):
        torch.testing.assert_close(out[i], torch.full((3, 7, 7), float(level)))


def test_pooler_matches_roi_align_on_assigned_level() -> None:
    torch.manual_seed(0)
    features = [torch.randn(2, 4, int(128 * s), int(128 * s)) for s in FPN_SCALES]
    pooler = ROIPooler((5, 3), FPN_SCALES, sampling_ratio=2, pooler_type="ROIAlignV2")
    boxes = [
        Boxes(torch.tensor([[3.0, 5.0, 40.0, 60.0]])),
        Boxes(torch.tensor([[10.0, 2.0, 120.0, 127.0], [7.5, 9.0, 20.0, 17.0]])),
    ]
    out = pooler(features, boxes)
    assert out.shape == (3, 4, 5, 3)
    levels = assign_boxes_to_levels(boxes, 2, 5, 224, 4)
    rois = convert_boxes_to_pooler_format(boxes)
    for i in range(3):
        lvl = int(levels[i])
        ref = roi_align(features[lvl], rois[i : i + 1], (5, 3), FPN_SCALES[lvl], 2, aligned=True)
        torch.testing.assert_close(out[i : i + 1], ref)


@pytest.mark.parametrize(("pooler_type", "shift"), [("ROIAlignV2", 0.5), ("ROIAlign", 0.0)])
def test_roialign_v2_is_half_pixel_aligned(pooler_type: str, shift: float) -> None:
    # Pixel column j holds the value j, i.e. the value at continuous x (pixel centre j + 0.5)
    # is x - 0.5 when interpolated with half-pixel alignment.
    ramp = torch.arange(16, dtype=torch.float32).expand(1, 1, 16, 16).contiguous()
    pooler = ROIPooler((1, 4), [1.0], sampling_ratio=1, pooler_type=pooler_type)
    out = pooler([ramp], [Boxes(torch.tensor([[2.0, 4.0, 6.0, 8.0]]))])
    # Bins centred at x = 2.5, 3.5, 4.5, 5.5: ROIAlignV2 reads 2, 3, 4, 5; the legacy ROIAlign
    # (no shift) reads 2.5 ... 5.5.
    expected = torch.tensor([2.5, 3.5, 4.5, 5.5]) - shift
    torch.testing.assert_close(out[0, 0, 0], expected)


def test_roipool_type() -> None:
    pooler = ROIPooler(2, [0.5], sampling_ratio=0, pooler_type="ROIPool")
    feature = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    out = pooler([feature], [Boxes(torch.tensor([[0.0, 0.0, 15.0, 15.0]]))])
    assert out.shape == (1, 1, 2, 2)
    # Max pooling: the bottom-right bin holds the largest value.
    assert out[0, 0, 1, 1] == 63


@pytest.mark.parametrize("scales", [[1 / 16], FPN_SCALES])
def test_pooler_handles_empty_box_lists(scales) -> None:
    pooler = ROIPooler(7, scales, sampling_ratio=0, pooler_type="ROIAlignV2")
    features = [torch.randn(2, 3, int(64 * s), int(64 * s)) for s in scales]
    empty = Boxes(torch.zeros(0, 4))
    out = pooler(features, [empty, empty])
    assert out.shape == (0, 3, 7, 7)
    one = Boxes(torch.tensor([[0.0, 0.0, 30.0, 30.0]]))
    out = pooler(features, [empty, one])
    assert out.shape == (1, 3, 7, 7)


def test_pooler_has_no_parameters() -> None:
    pooler = ROIPooler(14, FPN_SCALES, sampling_ratio=0, pooler_type="ROIAlignV2")
    assert list(pooler.parameters()) == []
    assert pooler.state_dict() == {}
    assert (pooler.min_level, pooler.max_level) == (2, 5)


def test_pooler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="pooler type"):
        ROIPooler(7, FPN_SCALES, 0, "ROIAlignV3")
    with pytest.raises(ValueError, match="consecutive"):
        ROIPooler(7, (1 / 4, 1 / 16), 0, "ROIAlignV2")
    with pytest.raises(ValueError, match="powers of 1/2"):
        ROIPooler(7, (1 / 3,), 0, "ROIAlignV2")
    pooler = ROIPooler(7, FPN_SCALES, 0, "ROIAlignV2")
    with pytest.raises(ValueError, match="feature maps"):
        pooler([torch.zeros(1, 1, 8, 8)], [Boxes(torch.zeros(0, 4))])
