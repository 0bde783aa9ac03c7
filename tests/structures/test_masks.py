"""Tests for segtron.structures.masks: rasterization, BitMasks and PolygonMasks."""

import numpy as np
import pytest
import torch

from segtron.structures import (
    BitMasks,
    PolygonMasks,
    polygon_area,
    polygons_to_bitmask,
    rasterize_polygons_within_box,
)

# x in [2, 6], y in [1, 4]: covers pixel columns 2..5 and rows 1..3.
RECT = [2.0, 1.0, 6.0, 1.0, 6.0, 4.0, 2.0, 4.0]
# Right triangle with legs of 8 along the axes: area 32.
TRIANGLE = [0.0, 0.0, 8.0, 0.0, 0.0, 8.0]


def _rect_mask(height: int, width: int, rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[rows, cols] = True
    return mask


class TestRasterization:
    def test_rectangle(self):
        mask = polygons_to_bitmask([np.array(RECT)], 6, 7)
        assert mask.dtype == bool and mask.shape == (6, 7)
        np.testing.assert_array_equal(mask, _rect_mask(6, 7, slice(1, 4), slice(2, 6)))

    def test_triangle_pixel_centers(self):
        mask = polygons_to_bitmask([TRIANGLE], 10, 10)
        # Pixel (r, c) has its center at (c + 0.5, r + 0.5), strictly inside x + y < 8 iff
        # r + c <= 6; the centers with r + c == 7 lie on the hypotenuse and stay out.
        rows, cols = np.indices((10, 10))
        np.testing.assert_array_equal(mask, rows + cols <= 6)
        assert mask.sum() == 28

    def test_union_of_polygons_and_empty(self):
        second = [4.0, 1.0, 7.0, 1.0, 7.0, 2.0, 4.0, 2.0]
        mask = polygons_to_bitmask([RECT, second], 6, 7)
        expected = _rect_mask(6, 7, slice(1, 4), slice(2, 6)) | _rect_mask(
            6, 7, slice(1, 2), slice(4, 7)
        )
        np.testing.assert_array_equal(mask, expected)
        empty = polygons_to_bitmask([], 3, 5)
        assert empty.shape == (3, 5) and not empty.any()

    def test_four_coordinates_are_not_read_as_a_box(self):
        with pytest.raises(ValueError, match="at least 3 points"):
            polygons_to_bitmask([[0.0, 0.0, 4.0, 4.0]], 5, 5)

    def test_polygon_area(self):
        assert polygon_area(np.array([0, 1, 1, 0]), np.array([0, 0, 1, 1])) == 1.0
        x, y = np.array(TRIANGLE[0::2]), np.array(TRIANGLE[1::2])
        assert polygon_area(x, y) == 32.0
        assert polygon_area(x[::-1], y[::-1]) == 32.0

    def test_rasterize_within_box(self):
        box = np.array([2.0, 1.0, 6.0, 4.0])
        full = rasterize_polygons_within_box([np.array(RECT)], box, 8)
        assert full.dtype == torch.bool and full.shape == (8, 8) and full.all()
        left_half = [np.array([2.0, 1.0, 4.0, 1.0, 4.0, 4.0, 2.0, 4.0])]
        half = rasterize_polygons_within_box(left_half, box, 8)
        assert half[:, :4].all() and not half[:, 4:].any()
        assert not rasterize_polygons_within_box([], box, 4).any()


class TestBitMasks:
    def test_construction_and_indexing(self):
        array = np.zeros((3, 4, 5), dtype=np.uint8)
        array[1, 2, 3] = 5
        masks = BitMasks(array)
        assert masks.tensor.dtype == torch.bool and masks.image_size == (4, 5)
        assert len(masks) == 3 and repr(masks) == "BitMasks(num_instances=3)"
        assert masks.nonempty().tolist() == [False, True, False]
        assert masks[1].tensor.shape == (1, 4, 5) and masks[1].tensor[0, 2, 3]
        assert len(masks[1:]) == 2
        assert len(masks[torch.tensor([True, False, True])]) == 2
        assert len(masks[torch.tensor([2])]) == 1
        assert [m.shape for m in masks] == [(4, 5)] * 3
        assert masks.to("cpu").device == torch.device("cpu")
        with pytest.raises(ValueError, match="N×H×W"):
            BitMasks(torch.zeros(4, 5))

    def test_empty(self):
        masks = BitMasks(torch.zeros(0, 6, 7))
        assert len(masks) == 0
        assert masks.nonempty().shape == (0,)
        assert masks.get_bounding_boxes().tensor.shape == (0, 4)
        assert masks.crop_and_resize(torch.zeros(0, 4), 5).shape == (0, 5, 5)
        assert list(masks) == []

    def test_bounding_boxes(self):
        tensor = torch.zeros(3, 5, 7, dtype=torch.bool)
        tensor[0, 1:4, 2:6] = True
        tensor[1, 4, 6] = True
        tensor[1, 0, 0] = True
        boxes = BitMasks(tensor).get_bounding_boxes()
        assert boxes.tensor.tolist() == [[2, 1, 6, 4], [0, 0, 7, 5], [0, 0, 0, 0]]
        single = torch.zeros(1, 5, 7, dtype=torch.bool)
        single[0, 4, 6] = True
        assert BitMasks(single).get_bounding_boxes().tensor.tolist() == [[6, 4, 7, 5]]

    def test_crop_and_resize_filled_box(self):
        tensor = torch.zeros(2, 11, 13, dtype=torch.bool)
        tensor[0, 2:8, 3:11] = True
        tensor[1, 0:4, 0:8] = True
        boxes = torch.tensor([[3.0, 2.0, 11.0, 8.0], [0.0, 0.0, 8.0, 8.0]])
        out = BitMasks(tensor).crop_and_resize(boxes, 4)
        assert out.dtype == torch.bool and out.shape == (2, 4, 4)
        assert out[0].all()
        # The second mask fills the top half of its box.
        expected = torch.zeros(4, 4, dtype=torch.bool)
        expected[:2] = True
        assert torch.equal(out[1], expected)
        with pytest.raises(ValueError, match="1 boxes for 2 masks"):
            BitMasks(tensor).crop_and_resize(boxes[:1], 4)

    def test_from_polygon_masks_and_cat(self):
        polygons = PolygonMasks([[RECT], [TRIANGLE], []])
        masks = BitMasks.from_polygon_masks(polygons, 10, 10)
        assert masks.tensor.shape == (3, 10, 10)
        assert masks.tensor.sum(dim=(1, 2)).tolist() == [12, 28, 0]
        same = BitMasks.from_polygon_masks(polygons.polygons, 10, 10)
        assert torch.equal(same.tensor, masks.tensor)
        empty = BitMasks.from_polygon_masks(PolygonMasks([]), 4, 6)
        assert empty.tensor.shape == (0, 4, 6)
        none = BitMasks.from_polygon_masks([], 10, 10)
        joined = BitMasks.cat([masks, none, masks[0]])
        assert len(joined) == 4 and torch.equal(joined.tensor[3], masks.tensor[0])
        with pytest.raises(ValueError):
            BitMasks.cat([])


class TestPolygonMasks:
    def test_bad_polygons(self):
        with pytest.raises(ValueError, match="Instance 1, polygon 0 has 2 points"):
            PolygonMasks([[RECT], [[0.0, 0.0, 1.0, 1.0]]])
        with pytest.raises(ValueError, match="odd number of coordinates"):
            PolygonMasks([[[0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 2.0]]])
        with pytest.raises(ValueError, match="not a flat list"):
            PolygonMasks([[np.zeros((4, 2))]])
        with pytest.raises(ValueError, match="expected a list"):
            PolygonMasks(np.zeros((1, 1, 6)))
        with pytest.raises(ValueError, match="instance 0 should be a list"):
            PolygonMasks([np.array(RECT)])

    def test_polygons_are_float64_arrays(self):
        masks = PolygonMasks([[RECT, torch.tensor(TRIANGLE)], []])
        assert all(p.dtype == np.float64 for p in masks.polygons[0])
        assert len(masks) == 2 and repr(masks) == "PolygonMasks(num_instances=2)"
        assert masks.nonempty().tolist() == [True, False]
        assert masks.to("cpu") is masks and masks.device == torch.device("cpu")

    def test_bounding_boxes_and_area(self):
        masks = PolygonMasks([[RECT, [10.0, 0.5, 11.0, 0.5, 11.0, 9.0]], [TRIANGLE], []])
        assert masks.get_bounding_boxes().tensor.tolist() == [
            [2.0, 0.5, 11.0, 9.0],
            [0.0, 0.0, 8.0, 8.0],
            [0.0, 0.0, 0.0, 0.0],
        ]
        # 4 * 3 for the rectangle plus 1 * 8.5 / 2 for the thin triangle.
        assert masks.area().tolist() == [12.0 + 4.25, 32.0, 0.0]

    def test_indexing(self):
        masks = PolygonMasks([[[i, 0.0, i + 1.0, 0.0, i, 1.0]] for i in range(4)])

        def firsts(selected):
            return [instance[0][0] for instance in selected]

        assert firsts(masks[2]) == [2.0]
        assert firsts(masks[1:3]) == [1.0, 2.0]
        assert firsts(masks[[3, 0]]) == [3.0, 0.0]
        assert firsts(masks[torch.tensor([True, False, False, True])]) == [0.0, 3.0]
        assert firsts(masks[torch.tensor([2, 1])]) == [2.0, 1.0]
        assert len(masks[torch.zeros(4, dtype=torch.bool)]) == 0
        with pytest.raises(ValueError, match="dtype"):
            masks[torch.tensor([0.0])]

    def test_crop_and_resize(self):
        masks = PolygonMasks([[RECT], [TRIANGLE]])
        boxes = torch.tensor([[2.0, 1.0, 6.0, 4.0], [0.0, 0.0, 8.0, 8.0]])
        out = masks.crop_and_resize(boxes, 10)
        assert out.dtype == torch.bool and out.shape == (2, 10, 10)
        assert out[0].all()
        # Scaled by 10 / 8 the triangle becomes x + y < 10 in a 10x10 mask.
        rows, cols = torch.meshgrid(torch.arange(10), torch.arange(10), indexing="ij")
        assert torch.equal(out[1], rows + cols <= 8)
        assert PolygonMasks([]).crop_and_resize(torch.zeros(0, 4), 6).shape == (0, 6, 6)
        with pytest.raises(ValueError, match="1 boxes for 2 masks"):
            masks.crop_and_resize(boxes[:1], 10)

    def test_empty_and_cat(self):
        empty = PolygonMasks([])
        assert len(empty) == 0
        assert empty.get_bounding_boxes().tensor.shape == (0, 4)
        assert empty.area().shape == (0,) and empty.nonempty().shape == (0,)
        joined = PolygonMasks.cat([PolygonMasks([[RECT]]), empty, PolygonMasks([[TRIANGLE], []])])
        assert len(joined) == 3
        assert joined.nonempty().tolist() == [True, True, False]
        assert list(joined)[1][0].tolist() == TRIANGLE
        with pytest.raises(ValueError):
            PolygonMasks.cat([])
