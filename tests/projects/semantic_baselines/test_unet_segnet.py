"""Tests of the U-Net (padded and valid) and SegNet backbones with PixelClassifierHead."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from segtron.config import get_cfg
from segtron.modeling import build_model
from segtron.projects.semantic_baselines import (
    PixelClassifierHead,
    SegNet,
    UNet,
    add_semantic_baselines_config,
    unet_valid_output_size,
)
from segtron.projects.semantic_baselines.unet import reflect_pad


def model_cfg(backbone: str, feature: str, **unet: Any) -> Any:
    cfg = get_cfg()
    add_semantic_baselines_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.VGG.CHANNELS_PER_STAGE = [4, 4, 8, 8, 8]
    cfg.MODEL.VGG.NORM = "BN"
    cfg.MODEL.UNET.BASE_CHANNELS = 4
    for key, value in unet.items():
        cfg.MODEL.UNET[key] = value
    cfg.MODEL.SEM_SEG_HEAD.NAME = "PixelClassifierHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = [feature]
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    return cfg


def run(model: torch.nn.Module, size: tuple[int, int]) -> torch.Tensor:
    image = torch.randint(0, 256, (3, *size)).float()
    with torch.no_grad():
        (out,) = model.eval()([{"image": image}])
    return out["sem_seg"]


def test_unet_valid_sizes_match_the_paper() -> None:
    assert unet_valid_output_size(572, 4) == 388
    assert unet_valid_output_size(571, 4) == 0  # a pooling would see an odd size
    assert UNet(base_channels=2, depth=4, padding=False).margin == 572 - 388


@pytest.mark.parametrize("padding", [True, False])
def test_unet_output_covers_odd_inputs(padding: bool) -> None:
    torch.manual_seed(0)
    model = build_model(model_cfg("build_unet_backbone", "unet", DEPTH=2, PADDING=padding))
    assert isinstance(model.backbone, UNet)
    assert model.backbone.size_divisibility == (4 if padding else 0)
    assert run(model, (37, 45)).shape == (3, 37, 45)
    # The paper's layers: 3 levels down, two up-convs halving the channels.
    assert model.backbone.up1.weight.shape == (16, 8, 2, 2)
    assert model.backbone.dec0[0].weight.shape == (4, 8, 3, 3)


def test_unet_padded_rejects_indivisible_input() -> None:
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth = 4"):
        UNet(base_channels=2, depth=2)(torch.zeros(1, 3, 10, 12))


def test_unet_valid_output_is_aligned_with_input() -> None:
    """Each output pixel's receptive field is centred on the same input pixel."""
    torch.manual_seed(0)
    model = UNet(base_channels=4, depth=1, padding=False)
    for row, col in [(20, 23), (21, 24)]:
        x = torch.randn(1, 3, 41, 47, requires_grad=True)
        out = model(x)["unet"]
        assert out.shape[-2:] == (41, 47)
        out[0, :, row, col].sum().backward()
        rows, cols = x.grad[0].abs().sum(0).nonzero().T
        assert abs((rows.min() + rows.max()) / 2 - row) <= 0.5
        assert abs((cols.min() + cols.max()) / 2 - col) <= 0.5
        assert rows.max() - rows.min() >= model.margin  # the full field, not a border effect


def test_reflect_pad_beyond_the_map_size() -> None:
    x = torch.arange(3.0).view(1, 1, 1, 3).expand(1, 1, 2, 3)
    padded = reflect_pad(x, (5, 1, 0, 3))
    assert padded.shape == (1, 1, 5, 9)
    # Mirrored again and again: the row 0 1 2 continues as a period-4 zigzag.
    assert padded[0, 0, 0].tolist() == [1, 0, 1, 2, 1, 0, 1, 2, 1]
    assert (padded[0, 0] == padded[0, 0, 0]).all()


@pytest.mark.parametrize("size", [(37, 53), (64, 32)])
def test_segnet_output_size_and_head(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    cfg = model_cfg("build_segnet_vgg16_backbone", "segnet")
    cfg.MODEL.PIXEL_CLASSIFIER.KERNEL_SIZE = 3
    model = build_model(cfg)
    assert isinstance(model.backbone, SegNet) and isinstance(
        model.sem_seg_head, PixelClassifierHead
    )
    assert model.sem_seg_head.predictor.kernel_size == (3, 3)
    assert run(model, size).shape == (3, *size)
    # Mirrored decoder: conv5_3_D .. conv5_1_D, ..., conv1_2_D (conv1_1_D is the classifier).
    backbone = model.backbone
    assert [name for name, _ in backbone.dec5.named_children()] == ["conv3", "conv2", "conv1"]
    assert [name for name, _ in backbone.dec1.named_children()] == ["conv2"]
    assert backbone.dec4.conv1.weight.shape[:2] == (8, 8) and backbone.dec3.conv1.out_channels == 4


def test_segnet_unpools_to_the_pooled_argmax_positions() -> None:
    torch.manual_seed(0)
    backbone = build_model(model_cfg("build_segnet_vgg16_backbone", "segnet")).backbone.eval()
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str, output: bool):
        def hook(module, inputs, *out):
            captured[name] = out[0] if output else inputs[0]

        return hook

    backbone.encoder.vgg3.conv3.register_forward_hook(keep("pre_pool", True))
    backbone.dec4.conv1.register_forward_hook(keep("decoded", True))
    backbone.dec3.conv3.register_forward_pre_hook(keep("unpooled", False))
    with torch.no_grad():
        backbone(torch.randn(2, 3, 36, 44))
    pre, decoded, unpooled = captured["pre_pool"], captured["decoded"], captured["unpooled"]
    assert pre.shape == unpooled.shape == (2, 8, 9, 11) and decoded.shape == (2, 8, 4, 5)
    # The argmax of each 2x2 window of the encoder map, computed by hand.
    windows = pre[..., :8, :10].reshape(2, 8, 4, 2, 5, 2).permute(0, 1, 2, 4, 3, 5)
    windows = windows.reshape(2, 8, 4, 5, 4)
    argmax = windows.argmax(-1)
    placed = unpooled[..., :8, :10].reshape(2, 8, 4, 2, 5, 2).permute(0, 1, 2, 4, 3, 5)
    placed = placed.reshape(2, 8, 4, 5, 4)
    expected = torch.zeros_like(placed).scatter(-1, argmax[..., None], decoded[..., None])
    distinct = windows.max(-1).values > 0  # all-zero windows (ReLU) have no unique argmax
    assert distinct.float().mean() > 0.3
    torch.testing.assert_close(placed[distinct], expected[distinct])
    assert ((placed != 0).sum(-1) <= 1).all()
    # The row and column that the pooling dropped get nothing back.
    assert (unpooled[..., 8, :] == 0).all() and (unpooled[..., :, 10] == 0).all()


def test_segnet_rejects_dilated_vgg() -> None:
    cfg = model_cfg("build_segnet_vgg16_backbone", "segnet")
    cfg.MODEL.VGG.DILATED = True
    with pytest.raises(ValueError, match="MODEL.VGG.DILATED"):
        build_model(cfg)


def test_pixel_classifier_training_loss_ignores_void() -> None:
    torch.manual_seed(0)
    model = build_model(model_cfg("build_unet_backbone", "unet", DEPTH=1))
    image = torch.randint(0, 256, (3, 10, 14)).float()
    void = torch.full((10, 14), 255)
    labels = void.clone()
    labels[:5] = 1
    loss_half = model([{"image": image, "sem_seg": labels}])["loss_sem_seg"]
    assert torch.isfinite(loss_half) and loss_half > 0
    loss_void = model([{"image": image, "sem_seg": void}])["loss_sem_seg"]
    assert torch.isnan(loss_void) or loss_void == 0  # nothing to learn from VOID


@pytest.mark.parametrize(
    ("backbone", "feature", "aux", "stride", "channels"),
    [
        ("build_unet_backbone", "unet", "bottleneck", 4, 16),  # depth 2, base 4
        ("build_segnet_vgg16_backbone", "segnet", "vgg5", 32, 8),
    ],
)
def test_auxiliary_classifier_supervises_the_coarse_feature(
    backbone: str, feature: str, aux: str, stride: int, channels: int
) -> None:
    torch.manual_seed(0)
    cfg = model_cfg(backbone, feature, DEPTH=2)
    shape = build_model(cfg).backbone.output_shape()[aux]
    assert (shape.stride, shape.channels) == (stride, channels)
    assert not hasattr(build_model(cfg).sem_seg_head, "aux_predictor")  # off by default

    cfg.MODEL.PIXEL_CLASSIFIER.AUX_IN_FEATURE = aux
    model = build_model(cfg)
    head = model.sem_seg_head
    assert head.aux_predictor.in_channels == channels
    image = torch.randint(0, 256, (3, 64, 96)).float()
    labels = torch.randint(0, 3, (64, 96))
    losses = model([{"image": image, "sem_seg": labels}])
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_aux"}
    # The auxiliary loss is 0.4 × the cross-entropy of the upsampled coarse scores.
    features = model.backbone((image[None] - model.pixel_mean) / model.pixel_std)
    coarse = head.aux_predictor(features[aux])
    coarse = torch.nn.functional.interpolate(coarse, size=(64, 96), mode="bilinear")
    expected = 0.4 * torch.nn.functional.cross_entropy(coarse, labels[None])
    torch.testing.assert_close(losses["loss_sem_seg_aux"], expected, rtol=1e-4, atol=1e-5)
    losses["loss_sem_seg_aux"].backward()
    assert head.aux_predictor.weight.grad.abs().sum() > 0
    assert head.predictor.weight.grad is None  # the main classifier takes no auxiliary gradient
    # Inference is unchanged: the auxiliary classifier only trains.
    assert run(model, (64, 96)).shape == (3, 64, 96)


def test_unknown_auxiliary_feature_names_the_key() -> None:
    cfg = model_cfg("build_unet_backbone", "unet", DEPTH=2)
    cfg.MODEL.PIXEL_CLASSIFIER.AUX_IN_FEATURE = "res5"
    with pytest.raises(ValueError, match="AUX_IN_FEATURE = 'res5'.*bottleneck"):
        build_model(cfg)


def test_class_weights_weight_both_losses() -> None:
    torch.manual_seed(0)
    cfg = model_cfg("build_unet_backbone", "unet", DEPTH=2)
    cfg.MODEL.PIXEL_CLASSIFIER.AUX_IN_FEATURE = "bottleneck"
    image = torch.randint(0, 256, (3, 32, 48)).float()
    labels = torch.randint(0, 3, (32, 48))
    labels[:4] = 255  # VOID takes no loss and no weight
    unweighted = build_model(cfg)
    cfg.MODEL.PIXEL_CLASSIFIER.CLASS_WEIGHTS = [1.0, 4.0, 0.25]
    model = build_model(cfg)
    model.load_state_dict(unweighted.state_dict())
    assert model.state_dict().keys() == unweighted.state_dict().keys()  # not in checkpoints

    losses = model([{"image": image, "sem_seg": labels}])
    plain = unweighted([{"image": image, "sem_seg": labels}])
    assert not torch.allclose(losses["loss_sem_seg"], plain["loss_sem_seg"])
    # The weighted mean over the labelled pixels, computed by hand from the same scores.
    head = model.sem_seg_head
    features = model.backbone((image[None] - model.pixel_mean) / model.pixel_std)
    weights = torch.tensor([1.0, 4.0, 0.25])
    for key, scores in (
        ("loss_sem_seg", head.predictor(features["unet"])),
        ("loss_sem_seg_aux", head.aux_predictor(features["bottleneck"])),
    ):
        scores = torch.nn.functional.interpolate(scores, size=(32, 48), mode="bilinear")
        pixel_loss = torch.nn.functional.cross_entropy(
            scores, labels[None], reduction="none", ignore_index=255
        )
        labelled = labels[None] != 255
        pixel_weight = weights[labels[None].clamp(max=2)] * labelled
        expected = (pixel_loss * pixel_weight).sum() / pixel_weight.sum()
        factor = 0.4 if key == "loss_sem_seg_aux" else 1.0
        torch.testing.assert_close(losses[key], factor * expected, rtol=1e-4, atol=1e-6)


def test_class_weights_need_one_per_class() -> None:
    cfg = model_cfg("build_unet_backbone", "unet", DEPTH=2)
    cfg.MODEL.PIXEL_CLASSIFIER.CLASS_WEIGHTS = [1.0, 2.0]
    with pytest.raises(ValueError, match="3 classes but 2 class weights.*CLASS_WEIGHTS"):
        build_model(cfg)
