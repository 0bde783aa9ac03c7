"""Tests for segtron.structures.boxes: BoxMode conversions, Boxes and pairwise metrics."""

import numpy as np
import pytest
import torch

from segtron.structures import (
    Boxes,
    BoxMode,
    matched_pairwise_iou,
    pairwise_intersection,
    pairwise_ioa,
    pairwise_iou,
    pairwise_point_box_distance,
)


def _reference_iou(a: list[float], b: list[float]) -> float:
    """IoU of two XYXY boxes by plain arithmetic; 0 when they do not overlap."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter)


class TestBoxModeConvert:
    def test_xywh_to_xyxy_keeps_list_and_tuple_types(self):
        assert BoxMode.convert([1, 2, 3, 4], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) == [1, 2, 4, 6]
        out = BoxMode.convert((1.5, 2.0, 3.0, 4.0), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        assert isinstance(out, tuple)
        assert out == (1.5, 2.0, 4.5, 6.0)

    def test_xyxy_to_xywh_numpy_does_not_modify_input(self):
        boxes = np.array([[10.0, 20.0, 15.0, 21.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
        original = boxes.copy()
        out = BoxMode.convert(boxes, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
        assert isinstance(out, np.ndarray)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, [[10, 20, 5, 1], [0, 0, 0, 0]])
        np.testing.assert_array_equal(boxes, original)

    def test_round_trip_tensor(self):
        xywh = torch.tensor([[3.0, 4.0, 7.0, 9.0], [0.5, 0.25, 0.0, 2.0], [-1.0, -2.0, 1.0, 1.0]])
        xyxy = BoxMode.convert(xywh, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        torch.testing.assert_close(xyxy[0], torch.tensor([3.0, 4.0, 10.0, 13.0]))
        back = BoxMode.convert(xyxy, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
        torch.testing.assert_close(back, xywh)
        assert back is not xywh

    def test_same_mode_returns_input(self):
        box = [1, 2, 3, 4]
        assert BoxMode.convert(box, BoxMode.XYXY_ABS, BoxMode.XYXY_ABS) is box

    def test_empty_tensor(self):
        out = BoxMode.convert(torch.zeros(0, 4), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        assert out.shape == (0, 4)
        out = BoxMode.convert(torch.zeros(0, 5), BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
        assert out.shape == (0, 4)

    def test_xywha_angle_0_and_90(self):
        # A 4-wide, 2-high box centered at (5, 5).
        assert BoxMode.convert([5.0, 5.0, 4.0, 2.0, 0.0], BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS) == [
            3.0,
            4.0,
            7.0,
            6.0,
        ]
        # Rotated by 90 degrees it is 2 wide and 4 high.
        out = BoxMode.convert(
            torch.tensor([[5.0, 5.0, 4.0, 2.0, 90.0], [5.0, 5.0, 4.0, 2.0, -90.0]]),
            BoxMode.XYWHA_ABS,
            BoxMode.XYXY_ABS,
        )
        torch.testing.assert_close(out, torch.tensor([[4.0, 3.0, 6.0, 7.0]] * 2))

    def test_xywha_45_degrees_encloses_the_rotated_square(self):
        out = BoxMode.convert([0.0, 0.0, 2.0, 2.0, 45.0], BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
        half_diagonal = 2**0.5
        np.testing.assert_allclose(out, [-half_diagonal, -half_diagonal] + [half_diagonal] * 2)

    def test_xywh_to_xywha_and_back_to_xyxy(self):
        xywh = np.array([[1.0, 2.0, 4.0, 2.0], [0.0, 0.0, 3.0, 5.0]])
        xywha = BoxMode.convert(xywh, BoxMode.XYWH_ABS, BoxMode.XYWHA_ABS)
        np.testing.assert_allclose(xywha, [[3.0, 3.0, 4.0, 2.0, 0.0], [1.5, 2.5, 3.0, 5.0, 0.0]])
        xyxy = BoxMode.convert(xywha, BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
        np.testing.assert_allclose(xyxy, [[1.0, 2.0, 5.0, 4.0], [0.0, 0.0, 3.0, 5.0]])

    def test_batched_leading_dimensions(self):
        boxes = torch.ones(2, 3, 4)
        out = BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        assert out.shape == (2, 3, 4)
        assert torch.equal(out[..., 2:], torch.full((2, 3, 2), 2.0))

    @pytest.mark.parametrize("mode", [BoxMode.XYXY_REL, BoxMode.XYWH_REL])
    def test_relative_modes_raise(self, mode):
        with pytest.raises(NotImplementedError, match="not supported"):
            BoxMode.convert([0, 0, 1, 1], mode, BoxMode.XYXY_ABS)
        with pytest.raises(NotImplementedError, match="not supported"):
            BoxMode.convert([0, 0, 1, 1], BoxMode.XYXY_ABS, mode)

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="4 or 5"):
            BoxMode.convert([1, 2, 3], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        with pytest.raises(ValueError, match="need 5 numbers"):
            BoxMode.convert(torch.zeros(2, 4), BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
        with pytest.raises(NotImplementedError):
            BoxMode.convert([0, 0, 1, 1], BoxMode.XYXY_ABS, BoxMode.XYWHA_ABS)


class TestBoxes:
    def test_construction(self):
        assert Boxes([]).tensor.shape == (0, 4)
        assert Boxes(np.zeros((0,))).tensor.shape == (0, 4)
        assert Boxes(torch.empty(0)).tensor.dtype == torch.float32
        boxes = Boxes(np.array([[1, 2, 3, 4]], dtype=np.int64))
        assert boxes.tensor.dtype == torch.float32
        assert boxes.tensor.tolist() == [[1.0, 2.0, 3.0, 4.0]]
        with pytest.raises(ValueError, match="Nx4"):
            Boxes(torch.zeros(3, 5))
        with pytest.raises(ValueError, match="Nx4"):
            Boxes([1.0, 2.0, 3.0, 4.0])

    def test_area_centers_len_iter(self):
        boxes = Boxes([[0, 0, 2, 3], [1, 1, 1, 5], [-1, -1, 3, 1]])
        assert boxes.area().tolist() == [6.0, 0.0, 8.0]
        assert boxes.get_centers().tolist() == [[1.0, 1.5], [1.0, 3.0], [1.0, 0.0]]
        assert len(boxes) == 3
        rows = list(boxes)
        assert len(rows) == 3 and rows[2].tolist() == [-1.0, -1.0, 3.0, 1.0]
        assert Boxes([]).area().shape == (0,)
        assert list(Boxes([])) == []

    def test_clip_in_place(self):
        boxes = Boxes([[-5, -3, 20, 40], [2, 3, 4, 5]])
        boxes.clip((10, 15))  # (height, width)
        assert boxes.tensor.tolist() == [[0, 0, 15, 10], [2, 3, 4, 5]]
        empty = Boxes([])
        empty.clip((3, 3))
        assert empty.tensor.shape == (0, 4)
        with pytest.raises(ValueError, match="infinite or NaN"):
            Boxes([[0, 0, float("inf"), 1]]).clip((5, 5))

    def test_nonempty_with_threshold(self):
        boxes = Boxes([[0, 0, 2, 2], [0, 0, 0, 2], [0, 0, 2, -1], [0, 0, 1.5, 3]])
        assert boxes.nonempty().tolist() == [True, False, False, True]
        assert boxes.nonempty(threshold=1.5).tolist() == [True, False, False, False]
        assert Boxes([]).nonempty().shape == (0,)

    def test_scale(self):
        boxes = Boxes([[1, 2, 3, 4]])
        boxes.scale(2.0, 0.5)
        assert boxes.tensor.tolist() == [[2.0, 1.0, 6.0, 2.0]]

    def test_inside_box(self):
        boxes = Boxes([[0, 0, 9, 4], [-1, 0, 5, 4], [0, 0, 10, 4], [-3, -2, 11, 6]])
        assert boxes.inside_box((5, 10)).tolist() == [True, False, False, False]
        assert boxes.inside_box((5, 10), boundary_threshold=2).tolist() == [
            True,
            True,
            True,
            False,
        ]

    def test_getitem(self):
        boxes = Boxes([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]])
        one = boxes[1]
        assert isinstance(one, Boxes) and one.tensor.tolist() == [[1, 1, 2, 2]]
        assert boxes[-1].tensor.tolist() == [[2, 2, 3, 3]]
        assert len(boxes[1:]) == 2
        assert boxes[torch.tensor([True, False, True])].tensor[:, 0].tolist() == [0, 2]
        assert boxes[torch.tensor([2, 0])].tensor[:, 0].tolist() == [2, 0]
        assert len(boxes[torch.zeros(3, dtype=torch.bool)]) == 0

    def test_clone_to_device_repr(self):
        boxes = Boxes([[0, 0, 1, 1]])
        copy = boxes.clone()
        copy.tensor[0, 0] = 7
        assert boxes.tensor[0, 0] == 0
        moved = boxes.to("cpu")
        assert isinstance(moved, Boxes) and moved.device == torch.device("cpu")
        assert repr(boxes).startswith("Boxes(tensor(")

    def test_cat(self):
        a = Boxes([[0, 0, 1, 1]])
        b = Boxes([[1, 1, 2, 2], [2, 2, 3, 3]])
        out = Boxes.cat([a, Boxes([]), b])
        assert out.tensor[:, 0].tolist() == [0, 1, 2]
        out.tensor[0, 0] = 9
        assert a.tensor[0, 0] == 0
        assert Boxes.cat([]).tensor.shape == (0, 4)
        with pytest.raises(TypeError):
            Boxes.cat([a, torch.zeros(1, 4)])


class TestPairwise:
    A = [0.0, 0.0, 2.0, 2.0]
    B = [1.0, 1.0, 3.0, 3.0]
    FAR = [5.0, 5.0, 6.0, 6.0]
    POINT = [1.0, 1.0, 1.0, 1.0]  # zero area, inside A
    TOUCH = [2.0, 0.0, 4.0, 2.0]  # shares an edge with A, overlaps B by 1x1

    def test_iou_hand_values(self):
        boxes1 = Boxes([self.A, self.B, self.POINT])
        boxes2 = Boxes([self.A, self.B, self.FAR, self.POINT, self.TOUCH])
        iou = pairwise_iou(boxes1, boxes2)
        expected = torch.tensor(
            [
                [1.0, 1 / 7, 0.0, 0.0, 0.0],
                [1 / 7, 1.0, 0.0, 0.0, 1 / 7],
                [0.0, 0.0, 0.0, 0.0, 0.0],
            ]
        )
        torch.testing.assert_close(iou, expected)
        assert not torch.isnan(iou).any()

    def test_iou_matches_reference_on_random_boxes(self):
        gen = torch.Generator().manual_seed(0)
        xy = torch.rand(7, 2, generator=gen) * 10
        wh = torch.rand(7, 2, generator=gen) * 5
        raw = torch.cat([xy, xy + wh], dim=1)
        raw[3, 2:] = raw[3, :2]  # a degenerate box
        boxes1, boxes2 = Boxes(raw[:4]), Boxes(raw[2:])
        expected = torch.tensor(
            [[_reference_iou(a, b) for b in raw[2:].tolist()] for a in raw[:4].tolist()]
        )
        torch.testing.assert_close(pairwise_iou(boxes1, boxes2), expected)

    def test_iou_gradient_is_finite_for_degenerate_boxes(self):
        raw = torch.tensor([self.POINT, self.A], requires_grad=True)
        pairwise_iou(Boxes(raw), Boxes(raw)).sum().backward()
        assert torch.isfinite(raw.grad).all()

    def test_empty_sets(self):
        some = Boxes([self.A, self.B, self.FAR])
        empty = Boxes([])
        for func in (pairwise_iou, pairwise_ioa, pairwise_intersection):
            assert func(empty, some).shape == (0, 3)
            assert func(some, empty).shape == (3, 0)
            assert func(empty, empty).shape == (0, 0)
        assert pairwise_point_box_distance(torch.zeros(0, 2), some).shape == (0, 3, 4)
        assert pairwise_point_box_distance(torch.zeros(2, 2), empty).shape == (2, 0, 4)
        assert matched_pairwise_iou(empty, empty).shape == (0,)

    def test_intersection_and_ioa(self):
        boxes1 = Boxes([self.A, self.FAR])
        boxes2 = Boxes([self.B, [0.0, 0.0, 4.0, 1.0], self.POINT])
        assert pairwise_intersection(boxes1, boxes2).tolist() == [[1.0, 2.0, 0.0], [0.0] * 3]
        torch.testing.assert_close(
            pairwise_ioa(boxes1, boxes2), torch.tensor([[0.25, 0.5, 0.0], [0.0, 0.0, 0.0]])
        )

    def test_point_box_distance(self):
        points = torch.tensor([[1.0, 1.0], [3.0, -1.0]])
        boxes = Boxes([[0.0, 0.0, 2.0, 3.0]])
        distances = pairwise_point_box_distance(points, boxes)
        assert distances.shape == (2, 1, 4)
        assert distances[:, 0].tolist() == [[1.0, 1.0, 1.0, 2.0], [3.0, -1.0, -1.0, 4.0]]

    def test_matched_iou(self):
        boxes1 = Boxes([self.A, self.POINT, self.A])
        boxes2 = Boxes([self.B, self.POINT, self.FAR])
        torch.testing.assert_close(
            matched_pairwise_iou(boxes1, boxes2), torch.tensor([1 / 7, 0.0, 0.0])
        )
        with pytest.raises(ValueError, match="same number"):
            matched_pairwise_iou(boxes1, Boxes([self.A]))
