"""Tests of the FCN heads: bilinear transposed convolutions, FCN-32s/16s/8s on VGG-16 and FCN on
a ResNet under SemanticSegmentor, skip initialization and losses."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.nn import functional as F

from segtron.config import get_cfg
from segtron.layers import ShapeSpec
from segtron.modeling import build_model
from segtron.projects.semantic_baselines import (
    BilinearUpsample,
    FCNHead,
    add_semantic_baselines_config,
    bilinear_kernel,
)

VARIANTS = {
    "32s": ["vgg5"],
    "16s": ["vgg4", "vgg5"],
    "8s": ["vgg3", "vgg4", "vgg5"],
}


def fcn_cfg(in_features: list[str], backbone: str = "vgg") -> Any:
    cfg = get_cfg()
    add_semantic_baselines_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    if backbone == "vgg":
        cfg.MODEL.BACKBONE.NAME = "build_vgg16_backbone"
        cfg.MODEL.VGG.OUT_FEATURES = in_features
        cfg.MODEL.VGG.CHANNELS_PER_STAGE = [4, 4, 8, 8, 8]
    else:
        cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
        cfg.MODEL.RESNETS.DEPTH = 18
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
        cfg.MODEL.RESNETS.NORM = "BN"
        cfg.MODEL.RESNETS.OUT_FEATURES = in_features
    cfg.MODEL.FCN.FC_CHANNELS = 16
    cfg.MODEL.FCN.FC_KERNEL_SIZE = 3
    cfg.MODEL.SEM_SEG_HEAD.NAME = "FCNHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = in_features
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    return cfg


def test_bilinear_kernel_values() -> None:
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(bilinear_kernel(2, 2)[1, 1], taps[:, None] * taps[None, :])
    assert bilinear_kernel(2, 2)[0, 1].abs().sum() == 0  # channels are upsampled separately


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_upsample_init_is_exact_bilinear(factor: int) -> None:
    up = BilinearUpsample(3, factor)
    assert isinstance(up, torch.nn.ConvTranspose2d) and up.weight.requires_grad
    x = torch.randn(2, 3, 5, 7)
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up(x), expected, atol=1e-5, rtol=1e-5)


def test_bilinear_upsample_rejects_odd_factor() -> None:
    with pytest.raises(ValueError, match="even factor"):
        BilinearUpsample(3, 3)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("size", [(37, 53), (64, 32)])
def test_fcn_vgg_output_matches_input_size(variant: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(fcn_cfg(VARIANTS[variant])).eval()
    head = model.sem_seg_head
    assert isinstance(head, FCNHead) and model.backbone.size_divisibility == 32
    assert head.output_stride == {"32s": 32, "16s": 16, "8s": 8}[variant]
    image = torch.randint(0, 256, (3, *size)).float()
    with torch.no_grad():
        (out,) = model([{"image": image}])
        (resized,) = model([{"image": image, "height": 20, "width": 30}])
    assert out["sem_seg"].shape == (3, *size)
    assert resized["sem_seg"].shape == (3, 20, 30)


def test_fcn8s_skips_start_at_zero_and_fuse_by_addition() -> None:
    shapes = {f"vgg{i}": ShapeSpec(channels=8, stride=2**i) for i in (3, 4, 5)}
    head = FCNHead(shapes, num_classes=3, fc_channels=4, fc_kernel_size=3).eval()
    torch.manual_seed(0)
    torch.nn.init.normal_(head.score_fr.weight, std=0.1)
    features = {"vgg3": torch.randn(1, 8, 8, 12), "vgg4": torch.randn(1, 8, 4, 6)}
    features["vgg5"] = torch.randn(1, 8, 2, 3)

    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    with torch.no_grad():
        coarse = up(up(head.score_fr(head.fc7(head.fc6(features["vgg5"])))))
        # Score layers start at zero (FCN): the skips add nothing at first.
        torch.testing.assert_close(head.layers(features), coarse)
        torch.nn.init.normal_(head.score_vgg3.weight, std=0.1)
        torch.testing.assert_close(
            head.layers(features) - coarse, head.score_vgg3(features["vgg3"]), atol=1e-6, rtol=0
        )


def test_fcn_resnet_odd_size_and_training_loss() -> None:
    torch.manual_seed(0)
    model = build_model(fcn_cfg(["res3", "res4", "res5"], backbone="resnet"))
    head = model.sem_seg_head
    assert head.in_features == ["res5", "res4", "res3"] and head.output_stride == 8
    images = [torch.randint(0, 256, (3, 45, 61)).float() for _ in range(2)]
    labels = [torch.randint(0, 3, (45, 61)) for _ in range(2)]
    labels[0][:5] = 255
    losses = model([{"image": i, "sem_seg": s} for i, s in zip(images, labels)])
    assert set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    losses["loss_sem_seg"].backward()
    assert head.score_res3.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": images[0]}])
    assert out["sem_seg"].shape == (3, 45, 61)


def test_fcn_head_without_fc_layers() -> None:
    head = FCNHead({"res5": ShapeSpec(channels=6, stride=32)}, num_classes=2, fc_channels=0).eval()
    assert not hasattr(head, "fc6")
    scores, losses = head({"res5": torch.randn(1, 6, 2, 3)})
    assert scores.shape == (1, 2, 64, 96) and losses == {}


def test_fcn_bad_in_features_are_named() -> None:
    cfg = fcn_cfg(["vgg4", "vgg5"])
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["vgg3", "vgg5"]
    with pytest.raises(ValueError, match="IN_FEATURES"):
        build_model(cfg)
