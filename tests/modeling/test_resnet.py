"""Tests of the ResNet backbone: shapes, strides, freezing, dilation, stems, blocks, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from segtron.config import get_cfg
from segtron.layers import DeformConv, FrozenBatchNorm2d, ModulatedDeformConv, ShapeSpec
from segtron.modeling import BACKBONE_REGISTRY, build_backbone
from segtron.modeling.backbone import (
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    DeepLabStem,
    DeformBottleneckBlock,
    ResNet,
    build_resnet_backbone,
    build_resnet_deeplab_backbone,
)

ALL_FEATURES = ["stem", "res2", "res3", "res4", "res5"]


def resnet_cfg(depth: int = 50, name: str = "build_resnet_backbone", **resnets: Any) -> Any:
    """A default config building a ResNet of ``depth`` with the given MODEL.RESNETS values."""
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.OUT_FEATURES = ALL_FEATURES
    if depth < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    for key, value in resnets.items():
        cfg.MODEL.RESNETS[key] = value
    return cfg


def halve(size: int, times: int) -> int:
    """Spatial size after ``times`` stride-2 layers with "same" padding: ceil(size / 2) each."""
    for _ in range(times):
        size = (size + 1) // 2
    return size


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("height, width", [(64, 96), (65, 97)])
def test_output_shapes_and_strides(depth: int, height: int, width: int) -> None:
    model = build_backbone(resnet_cfg(depth)).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, height, width))
    widths = [64, 128, 256, 512] if depth == 18 else [256, 512, 1024, 2048]
    expected = {"stem": (64, 4)} | {f"res{i + 2}": (c, 4 * 2**i) for i, c in enumerate(widths)}
    assert list(outputs) == ALL_FEATURES
    shapes = model.output_shape()
    for name, (channels, stride) in expected.items():
        times = stride.bit_length() - 1
        assert outputs[name].shape == (1, channels, halve(height, times), halve(width, times))
        assert shapes[name] == ShapeSpec(channels=channels, stride=stride)
    assert model.size_divisibility == 0
    assert model.padding_constraints == {}


def test_block_types_and_channels() -> None:
    model = build_backbone(resnet_cfg(18))
    assert all(isinstance(b, BasicBlock) for s in model.stages for b in s)
    assert [len(s) for s in model.stages] == [2, 2, 2, 2]
    assert model.res2[0].shortcut is None and model.res3[0].shortcut is not None
    model = build_backbone(resnet_cfg(101, NUM_GROUPS=32, WIDTH_PER_GROUP=8))
    assert [len(s) for s in model.stages] == [3, 4, 23, 3]
    assert model.res2[0].conv2.groups == 32 and model.res2[0].conv2.out_channels == 256
    assert model.res5[0].conv2.out_channels == 2048


def test_stride_in_1x1() -> None:
    on = build_backbone(resnet_cfg(50, STRIDE_IN_1X1=True)).res3[0]
    off = build_backbone(resnet_cfg(50, STRIDE_IN_1X1=False)).res3[0]
    assert (on.conv1.stride, on.conv2.stride) == ((2, 2), (1, 1))
    assert (off.conv1.stride, off.conv2.stride) == ((1, 1), (2, 2))


def test_out_features_truncate_unused_stages() -> None:
    model = build_backbone(resnet_cfg(18, OUT_FEATURES=["res3"]))
    assert model.stage_names == ("res2", "res3")
    assert not any(name.startswith(("res4", "res5")) for name, _ in model.named_parameters())
    assert list(model(torch.randn(1, 3, 64, 64))) == ["res3"]


def test_freeze_at_two_freezes_exactly_stem_and_res2() -> None:
    cfg = resnet_cfg(50, NORM="BN")
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    model = build_backbone(cfg)
    for name, param in model.named_parameters():
        assert param.requires_grad == (not name.startswith(("stem.", "res2."))), name
    for name, module in model.named_modules():
        if isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            frozen = name.startswith(("stem.", "res2."))
            assert isinstance(module, FrozenBatchNorm2d) == frozen, name
    model.train()
    model(torch.randn(1, 3, 64, 64))["res5"].sum().backward()
    assert model.stem.conv1.weight.grad is None and model.res2[0].conv1.weight.grad is None
    assert model.res3[0].conv1.weight.grad is not None


def test_freeze_at_zero_keeps_everything_trainable() -> None:
    model = build_backbone(resnet_cfg(18, NORM="BN"))
    assert all(p.requires_grad for p in model.parameters())


def res5_dilations(model: ResNet) -> list[int]:
    return [block.conv2.dilation[0] for block in model.res5]


def test_dc5_keeps_res5_at_stride_16() -> None:
    model = build_backbone(resnet_cfg(50, RES5_DILATION=2)).eval()
    outputs = model(torch.randn(1, 3, 65, 97))
    assert model.output_shape()["res5"].stride == 16
    assert outputs["res5"].shape[-2:] == outputs["res4"].shape[-2:] == (5, 7)
    assert model.res5[0].stride == 1 and model.res5[0].conv2.padding == (2, 2)
    assert res5_dilations(model) == [2, 2, 2]


def test_os8_keeps_res4_and_res5_at_stride_8() -> None:
    model = build_backbone(resnet_cfg(50, RES4_DILATION=2, RES5_DILATION=4)).eval()
    outputs = model(torch.randn(1, 3, 65, 97))
    strides = {k: v.stride for k, v in model.output_shape().items()}
    assert strides == {"stem": 4, "res2": 4, "res3": 8, "res4": 8, "res5": 8}
    assert outputs["res3"].shape[-2:] == outputs["res4"].shape[-2:] == outputs["res5"].shape[-2:]
    assert outputs["res5"].shape[-2:] == (9, 13)
    assert {b.conv2.dilation for b in model.res4} == {(2, 2)}
    assert res5_dilations(model) == [4, 4, 4]


def test_resnet18_at_output_stride_8_dilates_the_first_conv_of_res4_and_res5() -> None:
    model = build_backbone(resnet_cfg(18, RES4_DILATION=2, RES5_DILATION=4)).eval()
    outputs = model(torch.randn(1, 3, 65, 97))
    assert {k: v.stride for k, v in model.output_shape().items()}["res5"] == 8
    assert outputs["res5"].shape[-2:] == outputs["res3"].shape[-2:] == (9, 13)
    assert [b.conv1.dilation[0] for b in (*model.res4, *model.res5)] == [2, 2, 4, 4]
    assert {b.conv2.dilation for b in (*model.res4, *model.res5)} == {(1, 1)}
    assert model.res4[0].stride == model.res5[0].stride == 1


@pytest.mark.parametrize("name", ["build_resnet_backbone", "build_resnet_deeplab_backbone"])
def test_multi_grid_dilations(name: str) -> None:
    cfg = resnet_cfg(50, name, RES5_DILATION=2, RES5_MULTI_GRID=[1, 2, 4])
    model = build_backbone(cfg)
    assert res5_dilations(model) == [2, 4, 8]
    assert [b.conv2.padding[0] for b in model.res5] == [2, 4, 8]
    assert model.output_shape()["res5"].stride == 16


def test_deeplab_stem_names_and_shapes() -> None:
    cfg = resnet_cfg(50, STEM_TYPE="deeplab", STEM_OUT_CHANNELS=128, OUT_FEATURES=["res2"])
    model = build_backbone(cfg).eval()
    assert isinstance(model.stem, DeepLabStem)
    stem_shapes = {k: tuple(v.shape) for k, v in model.stem.state_dict().items()}
    expected = {"conv1.weight": (64, 3, 3, 3), "conv2.weight": (64, 64, 3, 3)}
    expected["conv3.weight"] = (128, 64, 3, 3)
    for conv, channels in (("conv1", 64), ("conv2", 64), ("conv3", 128)):
        for buffer in ("weight", "bias", "running_mean", "running_var"):
            expected[f"{conv}.norm.{buffer}"] = (channels,)
    assert stem_shapes == expected
    assert model.res2[0].conv1.in_channels == 128
    assert model(torch.randn(1, 3, 65, 97))["res2"].shape == (1, 256, 17, 25)


def test_basic_stem_layout() -> None:
    stem = BasicStem(in_channels=4, out_channels=32, norm="BN")
    assert stem.conv1.kernel_size == (7, 7) and stem.conv1.stride == (2, 2)
    assert isinstance(stem.conv1.norm, nn.BatchNorm2d) and stem.conv1.bias is None
    assert stem(torch.randn(2, 4, 33, 31)).shape == (2, 32, 9, 8)


@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize("modulated", [False, True])
def test_deform_block_with_zero_offsets_equals_plain_block(
    stride: int, dilation: int, modulated: bool
) -> None:
    kwargs = {"bottleneck_channels": 8, "stride": stride, "dilation": dilation, "norm": "BN"}
    plain = BottleneckBlock(16, 32, **kwargs).eval()
    deform = DeformBottleneckBlock(16, 32, deform_modulated=modulated, **kwargs).eval()
    assert isinstance(deform.conv2, ModulatedDeformConv if modulated else DeformConv)
    assert deform.conv2_offset.out_channels == (27 if modulated else 18)
    assert not deform.conv2_offset.weight.any() and not deform.conv2_offset.bias.any()
    result = deform.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["conv2_offset.bias", "conv2_offset.weight"]
    assert not result.unexpected_keys
    if modulated:
        # Masks come from the last third of the channels: saturate them to 1, offsets stay 0.
        with torch.no_grad():
            deform.conv2_offset.bias[18:] = 30.0
    x = torch.randn(2, 16, 13, 11)
    with torch.no_grad():
        torch.testing.assert_close(deform(x), plain(x), rtol=1e-4, atol=1e-4)


def test_deform_block_uses_offsets() -> None:
    block = DeformBottleneckBlock(16, 16, bottleneck_channels=8, norm="").eval()
    x = torch.randn(1, 16, 9, 9)
    before = block(x)
    with torch.no_grad():
        block.conv2_offset.bias.fill_(0.5)
    assert not torch.allclose(block(x), before)


def test_deformable_stages_from_config() -> None:
    cfg = resnet_cfg(
        50,
        DEFORM_ON_PER_STAGE=[False, True, False, True],
        DEFORM_MODULATED=True,
        DEFORM_NUM_GROUPS=2,
    )
    model = build_backbone(cfg).eval()
    kinds = [type(stage[0]) for stage in model.stages]
    assert kinds == [BottleneckBlock, DeformBottleneckBlock, BottleneckBlock, DeformBottleneckBlock]
    assert model.res3[0].conv2_offset.out_channels == 54
    assert model.res3[0].conv2.deformable_groups == 2
    with torch.no_grad():
        assert model(torch.randn(1, 3, 65, 97))["res5"].shape == (1, 2048, 3, 4)


def test_group_norm() -> None:
    model = build_backbone(resnet_cfg(50, NORM="GN", OUT_FEATURES=["res3"]))
    assert isinstance(model.stem.conv1.norm, nn.GroupNorm)
    assert model.res3[0].conv3.norm.num_groups == 32
    out = model(torch.randn(1, 3, 64, 96))["res3"]
    assert out.shape == (1, 512, 8, 12)
    out.mean().backward()
    assert model.stem.conv1.norm.weight.grad is not None


@pytest.mark.parametrize(
    "depth, overrides, key",
    [
        (42, {}, "DEPTH"),
        (50, {"STEM_TYPE": "fancy"}, "STEM_TYPE"),
        (50, {"RES4_DILATION": 2, "RES5_DILATION": 1}, "RES5_DILATION"),
        (50, {"RES4_DILATION": 4, "RES5_DILATION": 4}, "RES4_DILATION"),
        (50, {"RES5_DILATION": 3}, "RES5_DILATION"),
        (50, {"RES5_MULTI_GRID": [1, 2]}, "RES5_MULTI_GRID"),
        (50, {"OUT_FEATURES": ["res6"]}, "OUT_FEATURES"),
        (50, {"DEFORM_ON_PER_STAGE": [True]}, "DEFORM_ON_PER_STAGE"),
        (18, {"RES2_OUT_CHANNELS": 256}, "RES2_OUT_CHANNELS"),
        (34, {"RES5_MULTI_GRID": [1, 2, 4]}, "RES5_MULTI_GRID"),
        (18, {"NUM_GROUPS": 32}, "NUM_GROUPS"),
        (18, {"DEFORM_ON_PER_STAGE": [False, True, True, True]}, "DEFORM_ON_PER_STAGE"),
    ],
)
def test_bad_config_values_name_the_key(depth: int, overrides: dict, key: str) -> None:
    cfg = resnet_cfg(depth, **overrides)
    with pytest.raises(ValueError, match=rf"cfg\.MODEL\.RESNETS\.{key} ="):
        build_backbone(cfg)


def test_registry_lookup() -> None:
    assert BACKBONE_REGISTRY.get("build_resnet_backbone") is build_resnet_backbone
    assert BACKBONE_REGISTRY.get("build_resnet_deeplab_backbone") is build_resnet_deeplab_backbone
    for name in ("build_resnet_fpn_backbone", "build_retinanet_resnet_fpn_backbone"):
        assert name in BACKBONE_REGISTRY
    cfg = resnet_cfg(18, name="no_such_backbone")
    with pytest.raises(KeyError, match="build_resnet_fpn_backbone"):
        build_backbone(cfg)


def test_input_channels_follow_pixel_mean() -> None:
    cfg = resnet_cfg(18, OUT_FEATURES=["stem"])
    cfg.MODEL.PIXEL_MEAN = [0.0] * 4
    cfg.MODEL.PIXEL_STD = [1.0] * 4
    model = build_backbone(cfg)
    assert model.stem.conv1.in_channels == 4 and not model.stages
    assert build_backbone(cfg, ShapeSpec(channels=1)).stem.conv1.in_channels == 1


def test_make_stage_per_block_arguments() -> None:
    blocks = ResNet.make_stage(
        BottleneckBlock,
        3,
        in_channels=16,
        out_channels=32,
        bottleneck_channels=8,
        stride_per_block=[2, 1, 1],
        dilation_per_block=[1, 2, 3],
    )
    assert [b.stride for b in blocks] == [2, 1, 1]
    assert [b.conv2.dilation[0] for b in blocks] == [1, 2, 3]
    assert [b.in_channels for b in blocks] == [16, 32, 32]
    with pytest.raises(ValueError, match="stride_per_block"):
        ResNet.make_stage(BasicBlock, 2, in_channels=4, out_channels=4, stride_per_block=[1])
    with pytest.raises(ValueError, match="both"):
        ResNet.make_stage(
            BasicBlock, 1, in_channels=4, out_channels=4, stride=1, stride_per_block=[1]
        )


def test_resnet_by_hand_with_classifier() -> None:
    stages = ResNet.make_default_stages(18, norm="BN")
    assert [len(s) for s in stages] == [2, 2, 2, 2]
    model = ResNet(BasicStem(norm="BN"), stages, num_classes=10, out_features=["res5", "linear"])
    outputs = model(torch.randn(2, 3, 64, 64))
    assert outputs["res5"].shape == (2, 512, 2, 2) and outputs["linear"].shape == (2, 10)
    assert ResNet(BasicStem(), ResNet.make_default_stages(18))._out_features == ["res5"]
    with pytest.raises(ValueError, match="out_features"):
        ResNet(BasicStem(), ResNet.make_default_stages(18), out_features=["res7"])
    with pytest.raises(ValueError, match="N, C, H, W"):
        model(torch.randn(3, 64, 64))
