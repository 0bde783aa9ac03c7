"""Tests of DeepLabV3Head and DeepLabV3PlusHead: shapes, Detectron2 names, input sizes."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segtron.checkpoint import DetectionCheckpointer
from segtron.config import get_cfg
from segtron.layers import ASPP, ShapeSpec
from segtron.modeling import build_model, build_sem_seg_head
from segtron.projects.deeplab import (
    DeepLabCE,
    DeepLabV3Head,
    DeepLabV3PlusHead,
    TrainSizeAvgPool2d,
    add_deeplab_config,
    build_aspp,
)

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "Cityscapes-SemanticSegmentation"
V3 = CONFIGS / "deeplab_v3_R_103_os16_mg124_poly_90k_bs16.yaml"
V3_PLUS = CONFIGS / "deeplab_v3_plus_R_103_os16_mg124_poly_90k_bs16.yaml"
NUM_CLASSES = 3
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def load_cfg(config: Path) -> Any:
    cfg = get_cfg()
    add_deeplab_config(cfg)
    cfg.merge_from_file(str(config))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def tiny_cfg(config: Path, output_stride: int = 16, crop: tuple[int, int] | None = None) -> Any:
    """A shipped R-103 config with every width shrunk (same module names), on the CPU."""
    cfg = load_cfg(config)
    r = cfg.MODEL.RESNETS
    r.WIDTH_PER_GROUP, r.RES2_OUT_CHANNELS, r.STEM_OUT_CHANNELS = 2, 8, 8
    head = cfg.MODEL.SEM_SEG_HEAD
    head.NUM_CLASSES, head.ASPP_CHANNELS, head.CONVS_DIM, head.PROJECT_CHANNELS = 3, 8, 8, [4]
    if output_stride == 8:
        r.RES4_DILATION, r.RES5_DILATION = 2, 4
        head.ASPP_DILATIONS = [12, 24, 36]
        if head.NAME == "DeepLabV3Head":
            head.COMMON_STRIDE = 8
    cfg.INPUT.CROP.ENABLED = crop is not None
    if crop is not None:
        cfg.INPUT.CROP.SIZE = list(crop)
    return cfg


def build(cfg: Any, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg)


def make_input(h: int, w: int, seed: int = 0, **extra: Any) -> dict[str, Any]:
    """A random image and label map of h x w (the top rows ignored); `extra` adds keys."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, h, w), generator=generator).float()
    sem_seg = torch.randint(0, NUM_CLASSES, (h, w), generator=generator)
    sem_seg[:3] = 255
    return {"image": image, "sem_seg": sem_seg, **extra}


# --- names of Detectron2's checkpoints -------------------------------------------------------


def _conv_bn(prefix: str, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    keys = {f"{prefix}.weight": shape}
    keys |= {f"{prefix}.norm.{n}": () if n == "num_batches_tracked" else shape[:1] for n in BN}
    return keys


def _aspp_keys(prefix: str, in_channels: int) -> dict[str, tuple[int, ...]]:
    keys = _conv_bn(f"{prefix}.convs.0", (256, in_channels, 1, 1))
    for i in (1, 2, 3):
        keys |= _conv_bn(f"{prefix}.convs.{i}", (256, in_channels, 3, 3))
    keys[f"{prefix}.convs.4.1.weight"] = (256, in_channels, 1, 1)
    keys[f"{prefix}.convs.4.1.bias"] = (256,)
    return keys | _conv_bn(f"{prefix}.project", (256, 1280, 1, 1))


# The sem_seg_head.* keys of Detectron2's Cityscapes DeepLab checkpoints (19 classes, SyncBN),
# as its projects/DeepLab/deeplab/semantic_seg.py names them.
V3_HEAD_KEYS = _aspp_keys("aspp", 2048) | {
    "predictor.weight": (19, 256, 1, 1),
    "predictor.bias": (19,),
}
V3_PLUS_HEAD_KEYS = (
    _aspp_keys("decoder.res5.project_conv", 2048)
    | _conv_bn("decoder.res2.project_conv", (48, 256, 1, 1))
    | _conv_bn("decoder.res2.fuse_conv.0", (256, 304, 3, 3))
    | _conv_bn("decoder.res2.fuse_conv.1", (256, 256, 3, 3))
    | {"predictor.weight": (19, 256, 1, 1), "predictor.bias": (19,)}
)
R103_SHAPES = {
    "res2": ShapeSpec(channels=256, stride=4),
    "res5": ShapeSpec(channels=2048, stride=16),
}


@pytest.mark.parametrize("config, expected", [(V3, V3_HEAD_KEYS), (V3_PLUS, V3_PLUS_HEAD_KEYS)])
def test_head_parameters_have_detectron2_names_and_shapes(config, expected) -> None:
    head = build_sem_seg_head(load_cfg(config), R103_SHAPES)
    assert {k: tuple(v.shape) for k, v in head.state_dict().items()} == expected


class RecordingCheckpointer(DetectionCheckpointer):
    """Keeps what fvcore reports about the keys of the last loaded model."""

    incompatible: Any = None

    def _load_model(self, checkpoint: dict[str, Any]) -> Any:
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


@pytest.mark.parametrize("config", [V3, V3_PLUS])
def test_detectron2_model_zoo_pkl_loads_exactly(config, tmp_path) -> None:
    cfg = tiny_cfg(config)
    source = build(cfg, seed=0).eval()
    state = source.state_dict()
    stem = [
        "backbone.stem.conv1.weight",
        "backbone.stem.conv2.weight",
        "backbone.stem.conv3.weight",
    ]
    assert set(stem) | {"backbone.res5.2.conv3.norm.running_var"} <= state.keys()
    assert not any(k.startswith("backbone.res5.3.") for k in state)
    weights = {name: tensor.numpy() for name, tensor in state.items()}
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo"}, f)

    target = build(cfg, seed=1).eval()
    checkpointer = RecordingCheckpointer(target)
    checkpointer.load(str(path))
    incompatible = checkpointer.incompatible
    assert incompatible.missing_keys == []
    assert incompatible.unexpected_keys == []
    assert incompatible.incorrect_shapes == []
    inputs = [{"image": make_input(64, 96)["image"]}]
    with torch.no_grad():
        torch.testing.assert_close(target(inputs)[0]["sem_seg"], source(inputs)[0]["sem_seg"])


# --- shapes and input sizes ------------------------------------------------------------------


@pytest.mark.parametrize("config", [V3, V3_PLUS])
@pytest.mark.parametrize("output_stride", [16, 8])
def test_train_and_inference_shapes(config, output_stride) -> None:
    cfg = tiny_cfg(config, output_stride)
    model = build(cfg)
    assert model.backbone.output_shape()["res5"].stride == output_stride
    is_plus = config == V3_PLUS
    assert model.sem_seg_head.common_stride == (4 if is_plus else output_stride)
    losses = model([make_input(64, 96), make_input(50, 70, seed=1)])  # 50x70: no multiple
    assert losses.keys() == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    losses["loss_sem_seg"].backward()
    model.eval()
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, 64, 96))
        scores, _ = model.sem_seg_head(features)
        out = model([make_input(64, 96), make_input(50, 70, height=100, width=140)])
    assert scores.shape == (1, NUM_CLASSES, 64, 96)
    assert out[0]["sem_seg"].shape == (NUM_CLASSES, 64, 96)
    assert out[1]["sem_seg"].shape == (NUM_CLASSES, 100, 140)


def test_training_loss_is_the_mean_over_labels_of_the_cropped_upsampled_scores() -> None:
    head = DeepLabV3Head(
        {"res5": ShapeSpec(channels=4, stride=16)},
        num_classes=NUM_CLASSES,
        aspp_channels=4,
        aspp_dilations=[1, 2, 3],
        aspp_dropout=0.0,
        common_stride=16,
        norm="",
        train_size=None,
        loss_type="cross_entropy",
        ignore_value=255,
    )
    features = {"res5": torch.randn(2, 4, 4, 5)}  # from 50x70 images: ceil(50/16) = 4...
    targets = torch.randint(0, NUM_CLASSES, (2, 50, 70))
    _, losses = head(features, targets)
    scores = F.interpolate(head.layers(features), scale_factor=16, mode="bilinear")
    expected = F.cross_entropy(scores[..., :50, :70], targets)
    torch.testing.assert_close(losses["loss_sem_seg"], expected)
    with pytest.raises(ValueError, match="COMMON_STRIDE"):
        head(features, torch.zeros(2, 80, 70, dtype=torch.long))  # labels beyond the scores


def _aspp_pair(pool_kernel_size: tuple[int, int]) -> tuple[ASPP, ASPP]:
    """Ours (any input size) and the core ASPP with the same fixed kernel and weights."""
    args = {"norm": "BN", "dropout": 0.0, "use_depthwise_separable_conv": False}
    ours = build_aspp(6, 4, [1, 2, 3], pool_kernel_size=pool_kernel_size, **args).eval()
    core = ASPP(6, 4, [1, 2, 3], norm="BN", activation=F.relu, pool_kernel_size=pool_kernel_size)
    core.load_state_dict(ours.state_dict())
    return ours, core.eval()


def test_image_pooling_equals_detectron2_where_it_runs_and_extends_it() -> None:
    ours, core = _aspp_pair((4, 6))
    assert isinstance(ours.convs[4][0], TrainSizeAvgPool2d)
    x = torch.randn(2, 6, 8, 12)  # multiples of the kernel: both run, identically
    torch.testing.assert_close(ours(x), core(x))
    # Not a multiple: the core (like Detectron2) refuses; ours slides the same window.
    x = torch.randn(1, 6, 9, 13)
    with pytest.raises(ValueError, match="multiples of the kernel"):
        core(x)
    pooled = ours.convs[4][0](x)
    torch.testing.assert_close(pooled, F.avg_pool2d(x, (4, 6), stride=1))
    assert ours(x).shape == (1, 4, 9, 13)
    # Smaller than the kernel: global pooling along the short sides.
    small = torch.randn(1, 6, 3, 5)
    torch.testing.assert_close(ours.convs[4][0](small), small.mean(dim=(2, 3), keepdim=True))
    global_pool = ASPP(6, 4, [1, 2, 3], norm="BN", activation=F.relu).eval()
    global_pool.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(small), global_pool(small))


def test_crop_training_then_inference_at_any_size() -> None:
    cfg = tiny_cfg(V3_PLUS, crop=(64, 96))
    model = build(cfg)
    assert model.sem_seg_head.decoder["res5"]["project_conv"].convs[4][0].kernel_size == (4, 6)
    model([make_input(64, 96), make_input(64, 96, seed=1)])["loss_sem_seg"].backward()
    model.eval()
    # Larger, not a multiple, smaller than the crop; a batch of mixed sizes is padded.
    sizes = [(96, 128), (72, 100), (40, 40)]
    with torch.no_grad():
        out = model([make_input(h, w, seed=i) for i, (h, w) in enumerate(sizes)])
        alone = model([make_input(40, 40, seed=2)])
    assert [tuple(o["sem_seg"].shape[1:]) for o in out] == sizes
    assert alone[0]["sem_seg"].shape == (NUM_CLASSES, 40, 40)


# --- construction ----------------------------------------------------------------------------


def test_heads_from_config_and_loss_type() -> None:
    cfg = tiny_cfg(V3_PLUS)
    head = build(cfg).sem_seg_head
    assert isinstance(head, DeepLabV3PlusHead) and isinstance(head.loss, DeepLabCE)
    assert head.in_features == ["res2", "res5"] and head.ignore_value == 255
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "cross_entropy"
    assert isinstance(build(cfg).sem_seg_head.loss, nn.CrossEntropyLoss)
    v3 = build(tiny_cfg(V3)).sem_seg_head
    assert isinstance(v3, DeepLabV3Head) and v3.in_features == ["res5"]
    assert v3.aspp.dropout == pytest.approx(0.1)


@pytest.mark.parametrize(
    "config, key, value, match",
    [
        (V3, "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", 4, "COMMON_STRIDE = 4.*set COMMON_STRIDE to 16"),
        (V3_PLUS, "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", 16, "set COMMON_STRIDE to 4"),
        (V3, "INPUT.CROP.SIZE", [100, 96], r"INPUT.CROP.SIZE = \[100, 96\].*stride 16"),
        (V3_PLUS, "MODEL.SEM_SEG_HEAD.NAME", "DeepLabV3Head", "reads one feature"),
        (V3, "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["res4"], r"names \['res4'\]"),
        (V3_PLUS, "MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS", [4, 4], "PROJECT_CHANNELS"),
        (V3_PLUS, "MODEL.SEM_SEG_HEAD.LOSS_TYPE", "l2", "LOSS_TYPE = 'l2'"),
    ],
)
def test_bad_config_is_named(config, key, value, match) -> None:
    cfg = tiny_cfg(config, crop=(64, 96))
    cfg.merge_from_list([key, value])
    with pytest.raises(ValueError, match=match):
        build(cfg)


def test_depthwise_separable_variant() -> None:
    cfg = tiny_cfg(V3_PLUS)
    cfg.MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV = True
    model = build(cfg)
    keys = model.sem_seg_head.state_dict().keys()
    assert "decoder.res2.fuse_conv.depthwise.weight" in keys  # one 5x5 conv replaces two 3x3
    assert "decoder.res2.fuse_conv.pointwise.norm.running_var" in keys
    assert "decoder.res5.project_conv.convs.1.depthwise.weight" in keys
    assert model.sem_seg_head.decoder["res2"]["fuse_conv"].depthwise.kernel_size == (5, 5)
    model.eval()
    with torch.no_grad():
        assert model([make_input(64, 96)])[0]["sem_seg"].shape == (NUM_CLASSES, 64, 96)


def test_decoder_only_head_returns_decoder_features() -> None:
    head = DeepLabV3PlusHead(
        {"res2": ShapeSpec(channels=8, stride=4), "res5": ShapeSpec(channels=16, stride=16)},
        project_channels=[4],
        aspp_dilations=[1, 2, 3],
        aspp_dropout=0.0,
        decoder_channels=[6, 5],
        common_stride=4,
        norm="BN",
        train_size=None,
        num_classes=None,
    )
    assert not hasattr(head, "predictor")
    features = {"res2": torch.randn(2, 8, 12, 16), "res5": torch.randn(2, 16, 3, 4)}
    assert head(features).shape == (2, 6, 12, 16)
