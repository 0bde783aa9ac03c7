"""Tests of the VGG-16 backbone: shapes and strides (plain and DeepLab's dilated), stages,
building from the config, freezing, and the torchvision weight conversion."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from segtron.config import get_cfg
from segtron.layers import FrozenBatchNorm2d
from segtron.modeling import BACKBONE_REGISTRY, build_backbone
from segtron.modeling.backbone import VGG16, convert_torchvision_vgg16

ALL = ["vgg1", "vgg2", "vgg3", "vgg4", "vgg5"]
NARROW = [4, 8, 8, 16, 16]


def vgg_cfg(**vgg: Any) -> Any:
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_vgg16_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.VGG.CHANNELS_PER_STAGE = NARROW
    for key, value in vgg.items():
        cfg.MODEL.VGG[key] = value
    return cfg


def caffe_pool(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output size of Caffe's max pooling (ceil rounding, last window starting in the input)."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    return out - 1 if (out - 1) * stride >= size + pad else out


def test_registered_and_default_config() -> None:
    assert "build_vgg16_backbone" in BACKBONE_REGISTRY
    cfg = get_cfg()
    assert cfg.MODEL.VGG.OUT_FEATURES == ["vgg5"]
    assert cfg.MODEL.VGG.CHANNELS_PER_STAGE == [64, 128, 256, 512, 512]
    assert cfg.MODEL.VGG.NORM == "" and cfg.MODEL.VGG.DILATED is False


@pytest.mark.parametrize("height, width", [(64, 96), (37, 53)])
def test_plain_shapes_strides(height: int, width: int) -> None:
    model = build_backbone(vgg_cfg(OUT_FEATURES=ALL)).eval()
    assert isinstance(model, VGG16) and model.size_divisibility == 32
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, height, width))
    shapes = model.output_shape()
    assert list(outputs) == ALL
    for i, name in enumerate(ALL):
        stride = 2 ** (i + 1)
        assert shapes[name].stride == stride and shapes[name].channels == NARROW[i]
        # 2x2 stride-2 poolings round down, as torchvision's.
        assert outputs[name].shape == (1, NARROW[i], height // stride, width // stride)


@pytest.mark.parametrize("size", [65, 64])
def test_dilated_deeplab_shapes(size: int) -> None:
    model = build_backbone(vgg_cfg(OUT_FEATURES=ALL, DILATED=True)).eval()
    assert model.size_divisibility == 0
    strides = {name: spec.stride for name, spec in model.output_shape().items()}
    assert strides == {"vgg1": 2, "vgg2": 4, "vgg3": 8, "vgg4": 8, "vgg5": 8}
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, size, size + 8))
    expected = [size, size + 8]
    for i, name in enumerate(ALL):
        stride = 2 if i < 3 else 1
        expected = [caffe_pool(s, 3, stride, 1) for s in expected]
        assert tuple(outputs[name].shape[-2:]) == tuple(expected), name
    if size == 65:  # 8k + 1 inputs map to k + 1 (DeepLab's 321 -> 41)
        assert outputs["vgg5"].shape[-2:] == (9, 10)
    stage5 = model.vgg5
    assert all(c.dilation == (2, 2) and c.padding == (2, 2) for c in stage5.convs)
    assert (stage5.pool.kernel_size, stage5.pool.stride, stage5.pool.padding) == (3, 1, 1)
    assert all(c.dilation == (1, 1) for c in model.vgg4.convs)


def test_stage_structure_and_pool_with_indices() -> None:
    model = VGG16(channels=NARROW, out_features=["vgg3"])
    assert model.stage_names == ("vgg1", "vgg2", "vgg3")  # vgg4/5 are not built
    assert [len(s.convs) for s in model.stages] == [2, 2, 3]
    x = torch.randn(2, 3, 16, 20)
    stage = model.vgg1
    pre = stage.forward_convs(x)
    pooled, indices = stage.pool_with_indices(pre)
    torch.testing.assert_close(pooled, stage(x))
    flat = pre.flatten(2).gather(2, indices.flatten(2)).view_as(pooled)
    torch.testing.assert_close(flat, pooled)


def test_norm_and_freeze() -> None:
    cfg = vgg_cfg(NORM="BN", OUT_FEATURES=["vgg2", "vgg4"])
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    model = build_backbone(cfg)
    assert isinstance(model.vgg1.conv1.norm, FrozenBatchNorm2d)
    assert isinstance(model.vgg3.conv1.norm, nn.BatchNorm2d)
    assert not any(p.requires_grad for p in model.vgg2.parameters())
    assert all(p.requires_grad for p in model.vgg3.parameters())
    out = model(torch.randn(2, 3, 32, 32))
    assert list(out) == ["vgg2", "vgg4"] and out["vgg4"].shape == (2, 16, 2, 2)


@pytest.mark.parametrize(
    "key, value",
    [("OUT_FEATURES", ["vgg6"]), ("OUT_FEATURES", []), ("CHANNELS_PER_STAGE", [8, 8, 8])],
)
def test_bad_config_names_key(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"MODEL.VGG.{key}"):
        build_backbone(vgg_cfg(**{key: value}))


@pytest.mark.parametrize("with_bn", [False, True])
def test_convert_torchvision_names(with_bn: bool) -> None:
    """A torchvision-layout state dict (written out here) maps one to one onto VGG16."""
    layout = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
    layout += [512, 512, 512, "M"]
    tv: dict[str, torch.Tensor] = {}
    index, c_in = 0, 3
    for item in layout:
        if item == "M":
            index += 1
            continue
        tv[f"features.{index}.weight"] = torch.randn(item, c_in, 3, 3)
        tv[f"features.{index}.bias"] = torch.randn(item)
        if with_bn:
            for p in ("weight", "bias", "running_mean", "running_var"):
                tv[f"features.{index + 1}.{p}"] = torch.rand(item) + 0.5
        index += 3 if with_bn else 2
        c_in = item
    tv["classifier.0.weight"] = torch.randn(8, 512 * 7 * 7)
    tv["classifier.0.bias"] = torch.randn(8)
    tv["classifier.3.weight"] = torch.randn(8, 8)
    tv["classifier.3.bias"] = torch.randn(8)

    converted = convert_torchvision_vgg16(tv, backbone_prefix="", fc_prefix="head.")
    fc = {k: converted.pop(k) for k in list(converted) if k.startswith("head.")}
    assert fc["head.fc6.weight"].shape == (8, 512, 7, 7)
    assert fc["head.fc7.weight"].shape == (8, 8, 1, 1)
    model = VGG16(norm="BN" if with_bn else "")
    model.load_state_dict(converted, strict=True)
    torch.testing.assert_close(
        model.vgg3.conv3.weight, tv["features.14.weight" if not with_bn else "features.20.weight"]
    )
    torch.testing.assert_close(model.vgg1.conv2.bias, tv[f"features.{3 if with_bn else 2}.bias"])
