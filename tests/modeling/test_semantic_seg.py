"""Tests of SemanticSegmentor, SemSegFPNHead and the post-processing functions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from segtron.config import get_cfg
from segtron.layers import ShapeSpec
from segtron.modeling import (
    SEM_SEG_HEADS_REGISTRY,
    SemanticSegmentor,
    SemSegFPNHead,
    build_model,
    build_sem_seg_head,
    detector_postprocess,
    sem_seg_postprocess,
)
from segtron.structures import BitMasks, Boxes, Instances

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NUM_CLASSES = 3
FEATURES = ["p2", "p3", "p4", "p5"]


def small_cfg() -> Any:
    """A config for a tiny ResNet-18-FPN SemanticSegmentor on the CPU."""
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 16
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    return cfg


@pytest.fixture(scope="module")
def model() -> SemanticSegmentor:
    torch.manual_seed(0)
    return build_model(small_cfg())


def make_input(height: int, width: int, **extra: Any) -> dict[str, Any]:
    """A random 0-255 image with random labels (including some ignored pixels)."""
    image = torch.randint(0, 256, (3, height, width)).float()
    sem_seg = torch.randint(0, NUM_CLASSES, (height, width))
    sem_seg[:2] = 255
    return {"image": image, "sem_seg": sem_seg, **extra}


def test_training_returns_finite_loss_and_backpropagates(model: SemanticSegmentor) -> None:
    model.train()
    model.zero_grad()
    losses = model([make_input(64, 64), make_input(64, 64)])
    assert set(losses) == {"loss_sem_seg"}
    loss = losses["loss_sem_seg"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for name in ("sem_seg_head.predictor.weight", "backbone.bottom_up.stem.conv1.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0


def test_loss_weight_scales_the_loss() -> None:
    cfg = small_cfg()
    inputs = [make_input(64, 64)]
    values = []
    for weight in (1.0, 2.5):
        cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = weight
        torch.manual_seed(0)
        values.append(build_model(cfg).train()(inputs)["loss_sem_seg"])
    assert torch.allclose(values[1], values[0] * 2.5)


def test_training_without_labels_is_an_error(model: SemanticSegmentor) -> None:
    model.train()
    with pytest.raises(ValueError, match="sem_seg"):
        model([{"image": torch.zeros(3, 64, 64)}])


def test_inference_output_is_resized_to_height_and_width(model: SemanticSegmentor) -> None:
    model.eval()
    with torch.no_grad():
        outputs = model([{"image": torch.rand(3, 64, 64) * 255, "height": 100, "width": 90}])
    assert len(outputs) == 1 and set(outputs[0]) == {"sem_seg"}
    assert outputs[0]["sem_seg"].shape == (NUM_CLASSES, 100, 90)


def test_odd_sizes_are_padded_and_cropped_back(model: SemanticSegmentor) -> None:
    model.eval()
    inputs = [
        {"image": torch.rand(3, 61, 63) * 255},
        {"image": torch.rand(3, 50, 33) * 255},
    ]
    with torch.no_grad():
        batched = model(inputs)
        alone = model(inputs[1:])
    assert batched[0]["sem_seg"].shape == (NUM_CLASSES, 61, 63)
    assert batched[1]["sem_seg"].shape == (NUM_CLASSES, 50, 33)
    # Both batches are padded to 64x64, so batching with a larger image changes nothing.
    assert torch.allclose(batched[1]["sem_seg"], alone[0]["sem_seg"], rtol=1e-4, atol=1e-4)


def test_targets_are_padded_with_ignore_value(
    model: SemanticSegmentor, monkeypatch: pytest.MonkeyPatch
) -> None:
    model.train()
    seen: dict[str, torch.Tensor] = {}
    head_forward = model.sem_seg_head.forward

    def spy(features: dict[str, torch.Tensor], targets: torch.Tensor | None = None) -> Any:
        seen["targets"] = targets
        return head_forward(features, targets)

    monkeypatch.setattr(model.sem_seg_head, "forward", spy)
    first, second = make_input(61, 75), make_input(50, 33)
    losses = model([first, second])
    assert torch.isfinite(losses["loss_sem_seg"])
    targets = seen["targets"]
    assert targets.shape == (2, 64, 96)
    assert torch.equal(targets[0, :61, :75], first["sem_seg"])
    assert torch.equal(targets[1, :50, :33], second["sem_seg"])
    assert (targets[0, 61:] == 255).all() and (targets[0, :, 75:] == 255).all()
    assert (targets[1, 50:] == 255).all() and (targets[1, :, 33:] == 255).all()


def test_inputs_are_normalized_with_pixel_mean_and_std(model: SemanticSegmentor) -> None:
    model.eval()
    assert model.pixel_mean.flatten().tolist() == pytest.approx(get_cfg().MODEL.PIXEL_MEAN)
    image = torch.rand(3, 64, 64) * 255
    with torch.no_grad():
        result = model([{"image": image}])[0]["sem_seg"]
        normalized = (image - model.pixel_mean) / model.pixel_std
        scores, _ = model.sem_seg_head(model.backbone(normalized[None]))
    assert torch.allclose(result, scores[0], atol=1e-5)


def test_state_dict_keys_match_detectron2(model: SemanticSegmentor) -> None:
    keys = set(model.state_dict())
    for key in (
        "backbone.bottom_up.stem.conv1.weight",
        "backbone.fpn_lateral2.weight",
        "backbone.fpn_output5.weight",
        "sem_seg_head.p2.0.weight",
        "sem_seg_head.p2.0.norm.weight",
        "sem_seg_head.p4.2.weight",
        "sem_seg_head.p5.4.norm.bias",
        "sem_seg_head.predictor.weight",
        "sem_seg_head.predictor.bias",
    ):
        assert key in keys
    # Detectron2 keeps the scale heads in a plain list, registered under the feature names;
    # the pixel statistics are not saved.
    assert not any("scale_heads" in key for key in keys)
    assert "pixel_mean" not in keys and "pixel_std" not in keys
    head_keys = {key for key in keys if key.startswith("sem_seg_head.")}
    expected = {"sem_seg_head.predictor.weight", "sem_seg_head.predictor.bias"}
    for feature, num_convs in zip(FEATURES, (1, 1, 2, 3)):
        step = 1 if feature == "p2" else 2  # a 2x upsampling follows each conv but at stride 4
        for k in range(num_convs):
            prefix = f"sem_seg_head.{feature}.{k * step}"
            expected |= {f"{prefix}.weight", f"{prefix}.norm.weight", f"{prefix}.norm.bias"}
    assert head_keys == expected


def test_head_built_by_hand_predicts_at_input_resolution() -> None:
    shapes = {f"p{i}": ShapeSpec(channels=8, stride=2**i) for i in (5, 3, 2, 4)}
    head = SemSegFPNHead(shapes, num_classes=4, conv_dims=16, common_stride=4, norm="")
    assert head.in_features == FEATURES  # sorted by stride
    assert head.ignore_value == -1 and head.loss_weight == 1.0
    assert head.scale_heads[0] is head.p2 and head.scale_heads[3] is head.p5
    assert head.p2[0].bias is not None and head.p2[0].norm is None
    features = {f"p{i}": torch.rand(2, 8, 64 // 2**i, 96 // 2**i) for i in (2, 3, 4, 5)}
    head.eval()
    scores, losses = head(features)
    assert scores.shape == (2, 4, 64, 96) and losses == {}


def test_head_loss_is_cross_entropy_at_input_resolution() -> None:
    shapes = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}
    head = SemSegFPNHead(
        shapes, num_classes=3, conv_dims=8, common_stride=4, loss_weight=0.5, ignore_value=9
    )
    features = {"p2": torch.rand(1, 8, 8, 8), "p3": torch.rand(1, 8, 4, 4)}
    targets = torch.randint(0, 3, (1, 32, 32))
    targets[0, :5] = 9
    head.train()
    predictions, losses = head(features, targets)
    assert predictions is None
    logits = F.interpolate(head.layers(features), scale_factor=4, mode="bilinear")
    valid = targets != 9
    log_probs = logits.log_softmax(1).permute(0, 2, 3, 1)[valid]
    expected = -log_probs.gather(1, targets[valid][:, None]).mean() * 0.5
    assert torch.allclose(losses["loss_sem_seg"], expected, atol=1e-5)


def test_build_sem_seg_head_from_cfg_selects_in_features() -> None:
    cfg = small_cfg()
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p3", "p4"]
    shapes = {f"p{i}": ShapeSpec(channels=16, stride=2**i) for i in range(2, 7)}
    head = build_sem_seg_head(cfg, shapes)
    assert isinstance(head, SemSegFPNHead)
    assert SEM_SEG_HEADS_REGISTRY.get("SemSegFPNHead") is SemSegFPNHead
    assert head.in_features == ["p3", "p4"] and head.ignore_value == 255
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "res9"]
    with pytest.raises(ValueError, match="res9"):
        build_sem_seg_head(cfg, shapes)


def test_synthetic_config_loads_and_builds() -> None:
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "Synthetic" / "semantic_R_18_FPN.yaml"))
    assert cfg.MODEL.DEVICE == "cpu" and cfg.MODEL.WEIGHTS == ""
    assert cfg.DATASETS.TRAIN == ("synthetic_train_sem_seg",)
    assert cfg.DATASETS.TEST == ("synthetic_val_sem_seg",)
    model = build_model(cfg)
    assert isinstance(model, SemanticSegmentor)
    assert model.sem_seg_head.predictor.out_channels == 5
    assert model.sem_seg_head.ignore_value == 255
    model.eval()
    with torch.no_grad():
        output = model([{"image": torch.rand(3, 64, 80) * 255}])[0]["sem_seg"]
    assert output.shape == (5, 64, 80)


# ---------------------------------------------------------------------------------------------
# Post-processing
# ---------------------------------------------------------------------------------------------


def test_detector_postprocess_scales_clips_and_filters_boxes() -> None:
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0], [40.0, 10.0, 60.0, 30.0], [70, 5, 90, 9]])
    keypoints = torch.tensor([[[10.0, 20.0, 1.0]], [[50.0, 30.0, 0.5]], [[80.0, 6.0, 1.0]]])
    results = Instances(
        (50, 60),
        pred_boxes=Boxes(boxes),
        scores=torch.tensor([0.9, 0.8, 0.7]),
        pred_keypoints=keypoints,
    )
    out = detector_postprocess(results, 100, 30)
    assert out.image_size == (100, 30)
    # x scaled by 0.5, y by 2; the third box lies wholly right of the output and is dropped.
    expected = torch.tensor([[5.0, 40.0, 15.0, 80.0], [20.0, 20.0, 30.0, 60.0]])
    assert torch.allclose(out.pred_boxes.tensor, expected)
    assert torch.equal(out.scores, torch.tensor([0.9, 0.8]))
    expected_keypoints = torch.tensor([[[5.0, 40.0, 1.0]], [[25.0, 60.0, 0.5]]])
    assert torch.allclose(out.pred_keypoints, expected_keypoints)


def test_detector_postprocess_uses_proposal_boxes_and_needs_boxes() -> None:
    results = Instances((10, 10), proposal_boxes=Boxes(torch.tensor([[1.0, 1.0, 5.0, 5.0]])))
    out = detector_postprocess(results, 20, 20)
    assert torch.allclose(out.proposal_boxes.tensor, torch.tensor([[2.0, 2.0, 10.0, 10.0]]))
    with pytest.raises(ValueError, match="boxes"):
        detector_postprocess(Instances((10, 10), scores=torch.ones(1)), 20, 20)
    with pytest.raises(ValueError, match="need boxes"):
        detector_postprocess(Instances((10, 10), pred_masks=torch.ones(1, 1, 28, 28)), 20, 20)


def test_detector_postprocess_pastes_roi_masks_into_output_size() -> None:
    boxes = torch.tensor([[4.0, 8.0, 20.0, 16.0], [0.0, 0.0, 32.0, 32.0]])
    masks = torch.zeros(2, 1, 28, 28)
    masks[0] = 1.0
    masks[1, :, :14] = 1.0  # top half of the second box
    results = Instances((32, 32), pred_boxes=Boxes(boxes), pred_masks=masks)
    out = detector_postprocess(results, 64, 48)
    assert out.pred_masks.shape == (2, 64, 48) and out.pred_masks.dtype == torch.bool
    # The first box becomes (6, 16)-(30, 32) at the output size.
    expected = torch.zeros(64, 48, dtype=torch.bool)
    expected[16:32, 6:30] = True
    assert torch.equal(out.pred_masks[0], expected)
    assert out.pred_masks[1, :31].all() and not out.pred_masks[1, 33:].any()
    soft = detector_postprocess(
        Instances((32, 32), pred_boxes=Boxes(boxes.clone()), pred_masks=masks),
        64,
        48,
        mask_threshold=-1,
    )
    assert soft.pred_masks.dtype == torch.uint8 and soft.pred_masks.max() == 255


def test_detector_postprocess_resizes_full_image_masks() -> None:
    masks = torch.zeros(1, 10, 20, dtype=torch.bool)
    masks[0, :5] = True
    for pred_masks in (masks, BitMasks(masks)):
        results = Instances((10, 20), pred_masks=pred_masks)
        out = detector_postprocess(results, 40, 40)
        expected = torch.zeros(1, 40, 40, dtype=torch.bool)
        expected[0, :20] = True
        assert torch.equal(out.pred_masks, expected)
    with pytest.raises(ValueError, match="pred_masks"):
        detector_postprocess(Instances((10, 20), pred_masks=torch.ones(1, 5, 5)), 40, 40)


def test_sem_seg_postprocess_crops_padding_then_resizes() -> None:
    result = torch.full((2, 32, 32), 100.0)
    result[:, :20, :24] = torch.arange(2.0)[:, None, None]
    same = sem_seg_postprocess(result, (20, 24), 20, 24)
    assert torch.equal(same, result[:, :20, :24])
    resized = sem_seg_postprocess(result, (20, 24), 41, 37)
    assert resized.shape == (2, 41, 37)
    # No padding value leaks into the resized map.
    expected = torch.arange(2.0)[:, None, None].expand(2, 41, 37)
    assert torch.allclose(resized, expected, atol=1e-6)
    ramp = torch.arange(24.0).expand(1, 20, 24)
    upsampled = sem_seg_postprocess(ramp, (20, 24), 20, 48)
    assert math.isclose(upsampled[0, 0, 1].item(), 0.25, abs_tol=1e-6)
