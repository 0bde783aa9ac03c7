"""Tests of the DeepLab v1 LargeFOV / v2 ASPP heads, their configs and DeepLabCRFSegmentor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from segtron.config import CfgNode, get_cfg
from segtron.layers import ShapeSpec
from segtron.modeling import build_model
from segtron.projects import get_config
from segtron.projects.deeplab import (
    DeepLabCRFSegmentor,
    DeepLabV1LargeFOVHead,
    DeepLabV2ASPPHead,
    DenseCRF,
    add_deeplab_v1_v2_config,
    add_dense_crf_config,
)
from segtron.projects.deeplab.v1_v2 import upsample_like_caffe

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
V1_V2_CONFIGS = [
    CONFIGS / "PascalVOC-SemanticSegmentation" / "deeplab_v1_largefov_vgg16_crf.yaml",
    CONFIGS / "PascalVOC-SemanticSegmentation" / "deeplab_v2_R_101_aspp.yaml",
    CONFIGS / "Synthetic" / "deeplab_v1_largefov_crf.yaml",
    CONFIGS / "Synthetic" / "deeplab_v2_R_18_aspp.yaml",
]


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    items: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, CfgNode):
            items |= _flatten(value, f"{prefix}{key}.")
        else:
            items[f"{prefix}{key}"] = value
    return items


def _small_v1_cfg() -> CfgNode:
    cfg = get_config(str(V1_V2_CONFIGS[2]), ["MODEL.CRF.ENABLED", "False"])
    cfg.MODEL.VGG.CHANNELS_PER_STAGE = [4, 8, 8, 8, 8]
    cfg.MODEL.DEEPLAB_V1.FC_DIM = 8
    return cfg


def test_config_functions_only_add_keys():
    cfg = get_cfg()
    before = _flatten(cfg)
    add_deeplab_v1_v2_config(cfg)
    add_dense_crf_config(cfg)
    after = _flatten(cfg)
    assert {key: after[key] for key in before} == before
    assert after["MODEL.DEEPLAB_V2.ASPP_DILATIONS"] == [6, 12, 18, 24]
    assert (after["MODEL.DEEPLAB_V1.FC_DIM"], after["MODEL.DEEPLAB_V1.FC_DILATION"]) == (1024, 12)
    crf = {k: after[f"MODEL.CRF.{k}"] for k in ("BI_W", "BI_XY_STD", "BI_RGB_STD", "POS_W")}
    assert crf == {"BI_W": 4.0, "BI_XY_STD": 121.0, "BI_RGB_STD": 5.0, "POS_W": 3.0}
    assert after["MODEL.CRF.ENABLED"] is False
    # A second call (or keys set by a file) keeps the present values.
    cfg.MODEL.CRF.BI_W = 7.0
    add_dense_crf_config(cfg)
    add_deeplab_v1_v2_config(cfg)
    assert cfg.MODEL.CRF.BI_W == 7.0


@pytest.mark.parametrize("path", V1_V2_CONFIGS, ids=lambda p: p.name)
def test_configs_load_and_build(path):
    cfg = get_config(str(path), ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    assert isinstance(model, DeepLabCRFSegmentor)
    assert type(model.sem_seg_head).__name__ == cfg.MODEL.SEM_SEG_HEAD.NAME
    assert (model.crf is not None) == cfg.MODEL.CRF.ENABLED
    if "PascalVOC" in str(path):
        assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 21
        assert cfg.DATASETS.TRAIN == ("voc_2012_sem_seg_train_aug",)
        assert cfg.INPUT.CROP.SIZE == [321, 321]
        assert model.sem_seg_head.common_stride == 8


def test_v1_head_on_dilated_vgg_predicts_at_stride_8():
    model = build_model(_small_v1_cfg()).eval()
    shape = model.backbone.output_shape()["vgg5"]
    assert shape.stride == 8
    head = model.sem_seg_head
    assert isinstance(head, DeepLabV1LargeFOVHead) and head.fc6.dilation == (4, 4)
    image = torch.rand(3, 65, 81) * 255  # Caffe rounding: 8k + 1 -> k + 1
    features = model.backbone(image[None])
    assert features["vgg5"].shape[-2:] == (9, 11)
    assert head.layers(features["vgg5"]).shape == (1, 5, 9, 11)
    with torch.no_grad():
        out = model([{"image": image, "height": 130, "width": 162}])
    assert out[0]["sem_seg"].shape == (5, 130, 162)


def test_v2_head_on_resnet_os8_and_aspp_sum():
    cfg = get_config(str(V1_V2_CONFIGS[1]), ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 8
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 8
    model = build_model(cfg).eval()
    assert model.backbone.output_shape()["res5"].stride == 8
    head = model.sem_seg_head
    assert isinstance(head, DeepLabV2ASPPHead)
    assert [conv.dilation[0] for conv in head.aspp] == [6, 12, 18, 24]
    with torch.no_grad():
        x = model.backbone(torch.rand(1, 3, 64, 72) * 255)["res5"]
        assert x.shape[-2:] == (8, 9)
        scores = head.layers(x)
        torch.testing.assert_close(scores, sum(branch(x) for branch in head.aspp))
        assert scores.shape == (1, 21, 8, 9)
        upsampled, losses = head({"res5": x})
    assert upsampled.shape == (1, 21, 64, 72) and losses == {}


def test_upsampling_centres_feature_i_on_pixel_stride_times_i():
    x = torch.randn(2, 3, 5, 4)
    y = upsample_like_caffe(x, 8)
    assert y.shape == (2, 3, 40, 32)
    torch.testing.assert_close(y[..., ::8, ::8], x)
    torch.testing.assert_close(y[..., -1, -1], x[..., -1, -1])


def test_heads_train_with_ignored_labels():
    shape = ShapeSpec(channels=6, stride=8)
    heads = [
        DeepLabV1LargeFOVHead(shape, in_feature="f", num_classes=3, fc_dim=8, fc_dilation=2),
        DeepLabV2ASPPHead(shape, in_feature="f", num_classes=3, dilations=(1, 2)),
    ]
    features = {"f": torch.randn(2, 6, 4, 5)}
    targets = torch.randint(0, 3, (2, 30, 33))
    targets[:, :10] = 255
    for head in heads:
        head.train()
        _, losses = head(features, targets)
        loss = losses["loss_sem_seg"]
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        with pytest.raises(ValueError, match="cover the labels"):
            head(features, torch.zeros(2, 40, 33, dtype=torch.long))


def test_heads_reject_bad_in_features():
    cfg = _small_v1_cfg()
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["vgg4"]
    with pytest.raises(ValueError, match="IN_FEATURES"):
        build_model(cfg)


def _crf_model(input_format: str) -> DeepLabCRFSegmentor:
    torch.manual_seed(0)
    cfg = _small_v1_cfg()
    cfg.MODEL.META_ARCHITECTURE = "DeepLabCRFSegmentor"
    cfg.MODEL.CRF.ENABLED = True
    cfg.INPUT.FORMAT = input_format
    return build_model(cfg).eval()


def test_crf_meta_arch_refines_inference_outputs():
    model = _crf_model("BGR")
    torch.manual_seed(1)
    image = torch.rand(3, 33, 41) * 255
    inputs = [{"image": image, "height": 40, "width": 50}]
    with torch.no_grad():
        refined = model(inputs)[0]["sem_seg"]
        crf, model.crf = model.crf, None
        plain = model(inputs)[0]["sem_seg"]
    assert isinstance(crf, DenseCRF)
    assert refined.shape == plain.shape == (5, 40, 50)
    torch.testing.assert_close(refined.exp().sum(0), torch.ones(40, 50))
    # The CRF works on the RGB image at the output size.
    rgb = torch.nn.functional.interpolate(image.flip(0)[None], size=(40, 50), mode="bilinear")[0]
    torch.testing.assert_close(refined.exp(), crf(plain, rgb))
    # An RGB model hands the CRF its input image unflipped.
    rgb_model = _crf_model("RGB")
    seen = []
    rgb_model.crf = lambda scores, image: seen.append(image) or torch.softmax(scores, 0)
    with torch.no_grad():
        rgb_model([{"image": image, "height": 33, "width": 41}])
    torch.testing.assert_close(seen[0], image)
    # Training is the SemanticSegmentor's.
    model.train()
    losses = model([{"image": image, "sem_seg": torch.zeros(33, 41, dtype=torch.long)}])
    assert set(losses) == {"loss_sem_seg"}


def test_crf_meta_arch_rejects_unsupported_formats():
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        _crf_model("YUV-BT.601")
