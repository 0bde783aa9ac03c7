"""Tests for segtron.layers.nms and segtron.layers.roi_align."""

import pytest
import torch

from segtron.layers import ROIAlign, batched_nms, nms


def test_batched_nms_suppresses_within_category_only():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 11.0, 11.0],  # IoU 81/119 with box 0
            [0.0, 0.0, 10.0, 10.0],  # same box as 0, other category
            [20.0, 20.0, 25.0, 25.0],
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    idxs = torch.tensor([0, 0, 1, 0])
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 2, 3]
    assert batched_nms(boxes, scores, idxs, 0.7).tolist() == [0, 1, 2, 3]
    assert nms(boxes, scores, 0.5).tolist() == [0, 3]
    half = batched_nms(boxes.half(), scores.half(), idxs, 0.5)
    assert half.tolist() == [0, 2, 3]


def test_batched_nms_empty():
    keep = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64
    with pytest.raises(ValueError):
        batched_nms(torch.zeros(2, 5), torch.zeros(2), torch.zeros(2, dtype=torch.long), 0.5)


def test_roi_align_aligned_samples_pixel_model():
    # Pixel (row r, column c) of the ramp holds c: its centre is at x = c + 0.5. With
    # aligned=True, the value at a continuous x inside the image is therefore x - 0.5.
    ramp = torch.arange(9.0).repeat(7, 1)[None, None]
    image = torch.cat([ramp, 2 * ramp], dim=1)
    pooler = ROIAlign((2, 3), spatial_scale=0.5, sampling_ratio=2)
    rois = torch.tensor([[0.0, 4.0, 2.0, 10.0, 8.0]], dtype=torch.float64)
    out = pooler(image, rois)
    # In image coordinates the box spans x 2..5; bins of width 1 have centres 2.5, 3.5, 4.5.
    expected = torch.tensor([2.0, 3.0, 4.0]).repeat(2, 1)
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(out[0, 1], 2 * expected)
    legacy = ROIAlign((2, 3), 0.5, 2, aligned=False)(image, rois)
    torch.testing.assert_close(legacy[0, 0], expected + 0.5)


def test_roi_align_batch_index_empty_rois_and_repr():
    images = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
    pooler = ROIAlign(2, 1.0, 0)
    rois = torch.tensor([[1.0, 0.0, 0.0, 4.0, 4.0], [0.0, 1.0, 1.0, 3.0, 3.0]])
    out = pooler(images, rois)
    assert out.shape == (2, 1, 2, 2)
    assert out[0].eq(1).all() and out[1].eq(0).all()
    assert pooler(images, torch.zeros(0, 5)).shape == (0, 1, 2, 2)
    assert "output_size=2, spatial_scale=1.0, sampling_ratio=0, aligned=True" in repr(pooler)
    with pytest.raises(ValueError):
        pooler(images, torch.zeros(3, 4))
