"""Tests of the FPN backbone: levels, strides, fusion, top blocks, builders and errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.nn import functional as F

from segtron.config import get_cfg
from segtron.layers import ShapeSpec
from segtron.modeling import build_backbone
from segtron.modeling.backbone import FPN, LastLevelMaxPool, LastLevelP6P7, ResNet

RES = ["res2", "res3", "res4", "res5"]


def fpn_cfg(name: str = "build_resnet_fpn_backbone", depth: int = 18, **fpn: Any) -> Any:
    """A config for a small ResNet-FPN; keyword arguments override MODEL.FPN values."""
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.RESNETS.DEPTH = depth
    if depth < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = RES
    cfg.MODEL.FPN.IN_FEATURES = RES
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    for key, value in fpn.items():
        cfg.MODEL.FPN[key] = value
    return cfg


@pytest.mark.parametrize(
    "height, width, sizes",
    [
        (64, 96, [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]),
        # Not a multiple of 32: the top-down path resizes to each lateral map's own size.
        (65, 97, [(17, 25), (9, 13), (5, 7), (3, 4), (2, 2)]),
    ],
)
def test_levels_shapes_and_strides(height: int, width: int, sizes: list) -> None:
    model = build_backbone(fpn_cfg()).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, height, width))
    names = ["p2", "p3", "p4", "p5", "p6"]
    assert list(outputs) == names
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        n: (1, 32, *s) for n, s in zip(names, sizes)
    }
    assert model.output_shape() == {
        n: ShapeSpec(channels=32, stride=2 ** (i + 2)) for i, n in enumerate(names)
    }
    assert model.size_divisibility == 32
    assert model.padding_constraints == {"square_size": 0}


def test_submodule_names() -> None:
    model = build_backbone(fpn_cfg())
    names = {k for k in model.state_dict() if not k.startswith("bottom_up.")}
    expected = {
        f"fpn_{kind}{i}.{p}"
        for kind in ("lateral", "output")
        for i in range(2, 6)
        for p in ("weight", "bias")
    }
    assert names == expected
    assert isinstance(model.top_block, LastLevelMaxPool)
    assert isinstance(model.bottom_up, ResNet)
    assert not model.fpn_output3.bias.any()


@pytest.mark.parametrize("fuse_type", ["sum", "avg"])
def test_top_down_fusion_by_hand(fuse_type: str) -> None:
    model = build_backbone(fpn_cfg(FUSE_TYPE=fuse_type)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outputs = model(x)
        c = model.bottom_up(x)
        p5_inner = model.fpn_lateral5(c["res5"])
        p4_inner = model.fpn_lateral4(c["res4"]) + F.interpolate(p5_inner, scale_factor=2.0)
        if fuse_type == "avg":
            p4_inner = p4_inner / 2
    torch.testing.assert_close(outputs["p5"], model.fpn_output5(p5_inner))
    torch.testing.assert_close(outputs["p4"], model.fpn_output4(p4_inner))
    torch.testing.assert_close(outputs["p6"], outputs["p5"][:, :, ::2, ::2])


def test_norm_removes_bias() -> None:
    model = build_backbone(fpn_cfg(NORM="GN"))
    assert model.fpn_lateral2.bias is None and model.fpn_lateral2.norm.num_groups == 32
    assert model(torch.randn(1, 3, 64, 64))["p2"].shape == (1, 32, 16, 16)


def test_retinanet_levels() -> None:
    cfg = fpn_cfg("build_retinanet_resnet_fpn_backbone", IN_FEATURES=["res3", "res4", "res5"])
    model = build_backbone(cfg).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 65, 97))
    assert {k: tuple(v.shape[-2:]) for k, v in outputs.items()} == {
        "p3": (9, 13),
        "p4": (5, 7),
        "p5": (3, 4),
        "p6": (2, 2),
        "p7": (1, 1),
    }
    assert {k: v.stride for k, v in model.output_shape().items()} == {
        "p3": 8,
        "p4": 16,
        "p5": 32,
        "p6": 64,
        "p7": 128,
    }
    assert isinstance(model.top_block, LastLevelP6P7)
    assert model.top_block.p6.weight.shape == (32, 512, 3, 3)
    assert model.top_block.p7.weight.shape == (32, 32, 3, 3)
    assert "top_block.p7.bias" in model.state_dict()


def test_p6p7_from_p5() -> None:
    bottom_up = build_backbone(fpn_cfg(), ShapeSpec(channels=3)).bottom_up
    top = LastLevelP6P7(16, 16, in_feature="p5")
    model = FPN(bottom_up, RES, 16, top_block=top).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outputs = model(x)
        torch.testing.assert_close(outputs["p6"], top.p6(outputs["p5"]))
    assert list(outputs) == ["p2", "p3", "p4", "p5", "p6", "p7"]


def test_dilated_bottom_up_is_rejected() -> None:
    cfg = fpn_cfg(depth=50)
    cfg.MODEL.RESNETS.RES5_DILATION = 2
    with pytest.raises(ValueError, match="twice the previous"):
        build_backbone(cfg)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_features": ["res2", "res4"]}, "twice the previous"),
        ({"in_features": ["res2", "res6"]}, "subset of the bottom-up outputs"),
        ({"in_features": []}, "non-empty"),
        ({"fuse_type": "max"}, "fuse_type"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    bottom_up = build_backbone(fpn_cfg()).bottom_up
    arguments = {"in_features": RES, "out_channels": 8} | kwargs
    with pytest.raises(ValueError, match=match):
        FPN(bottom_up, **arguments)
    with pytest.raises(TypeError, match="Backbone"):
        FPN(torch.nn.Identity(), RES, 8)


def test_square_pad() -> None:
    bottom_up = build_backbone(fpn_cfg()).bottom_up
    assert FPN(bottom_up, RES, 8, square_pad=1024).padding_constraints == {"square_size": 1024}
