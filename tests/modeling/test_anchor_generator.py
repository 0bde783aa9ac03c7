"""Tests of the DefaultAnchorGenerator: cell anchors, grid layout, order, config and checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from segtron.config import get_cfg
from segtron.layers import ShapeSpec
from segtron.modeling import ANCHOR_GENERATOR_REGISTRY, build_anchor_generator
from segtron.modeling.anchor_generator import DefaultAnchorGenerator


def test_first_anchors_by_hand() -> None:
    gen = DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[[1.0]], strides=[4], offset=0.0)
    (anchors,) = gen([torch.zeros(1, 8, 3, 5)])
    assert len(anchors) == 3 * 5
    t = anchors.tensor
    assert t[0].tolist() == [-16.0, -16.0, 16.0, 16.0]
    # Row-major: x moves first by one stride, then y.
    assert t[1].tolist() == [-12.0, -16.0, 20.0, 16.0]
    assert t[5].tolist() == [-16.0, -12.0, 16.0, 20.0]
    assert t[-1].tolist() == [0.0, -8.0, 32.0, 24.0]


def test_offset_shifts_centres() -> None:
    gen = DefaultAnchorGenerator(sizes=[[8]], aspect_ratios=[[1.0]], strides=[16], offset=0.5)
    (anchors,) = gen([torch.zeros(1, 1, 2, 2)])
    assert anchors.get_centers().tolist() == [[8.0, 8.0], [24.0, 8.0], [8.0, 24.0], [24.0, 24.0]]


def test_cell_anchor_order_and_shapes() -> None:
    gen = DefaultAnchorGenerator(
        sizes=[[32, 64]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=[8], offset=0.0
    )
    assert gen.num_anchors == [6] and gen.num_cell_anchors == [6]
    cell = next(iter(gen.cell_anchors))
    widths = cell[:, 2] - cell[:, 0]
    heights = cell[:, 3] - cell[:, 1]
    # Size-major, then ratio; ratio = height / width; area = size^2.
    assert torch.allclose(heights / widths, torch.tensor([0.5, 1.0, 2.0] * 2))
    assert torch.allclose(widths * heights, torch.tensor([32.0**2] * 3 + [64.0**2] * 3))
    assert math.isclose(widths[0].item(), math.sqrt(1024 / 0.5), rel_tol=1e-6)
    # Centred on the origin.
    assert torch.allclose(cell[:, :2] + cell[:, 2:], torch.zeros(6, 2), atol=1e-5)
    # At each location all 6 cell anchors come together, then the next location.
    (anchors,) = gen([torch.zeros(2, 4, 2, 3)])
    assert len(anchors) == 2 * 3 * 6
    assert torch.allclose(anchors.tensor[6:12], cell + torch.tensor([8.0, 0.0, 8.0, 0.0]))


def test_multi_level_from_config() -> None:
    cfg = get_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    shapes = [ShapeSpec(channels=8, stride=s) for s in (4, 8, 16)]
    gen = build_anchor_generator(cfg, shapes)
    assert isinstance(gen, DefaultAnchorGenerator)
    assert "DefaultAnchorGenerator" in ANCHOR_GENERATOR_REGISTRY
    assert gen.strides == [4, 8, 16] and gen.num_anchors == [3, 3, 3]
    features = [torch.zeros(1, 8, 64 // s, 64 // s) for s in (4, 8, 16)]
    anchors = gen(features)
    assert [len(a) for a in anchors] == [16 * 16 * 3, 8 * 8 * 3, 4 * 4 * 3]
    areas = [a.area()[0].item() for a in anchors]
    assert areas == pytest.approx([32.0**2, 64.0**2, 128.0**2])


def test_flat_params_broadcast_and_mismatch() -> None:
    gen = DefaultAnchorGenerator(sizes=[16, 32], aspect_ratios=[1.0], strides=[4, 8], offset=0.0)
    assert gen.num_anchors == [2, 2]
    with pytest.raises(ValueError):
        DefaultAnchorGenerator(sizes=[[16], [32], [64]], aspect_ratios=[[1.0]], strides=[4, 8])
    with pytest.raises(ValueError):
        DefaultAnchorGenerator(sizes=[[16]], aspect_ratios=[[1.0]], strides=[4], offset=1.0)


def test_cell_anchors_are_non_persistent_buffers() -> None:
    gen = DefaultAnchorGenerator(sizes=[[32], [64]], aspect_ratios=[[1.0]], strides=[4, 8])
    assert gen.state_dict() == {}
    assert len(list(gen.buffers())) == 2
    gen = gen.double()
    assert all(buffer.dtype == torch.float64 for buffer in gen.buffers())
