"""Tests of the ROI heads: proposal sampling, box and mask heads, losses and inference."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from segtron.config import get_cfg
from segtron.layers import ShapeSpec
from segtron.modeling import (
    FastRCNNOutputLayers,
    ROIHeads,
    StandardROIHeads,
    build_roi_heads,
)
from segtron.modeling.box_regression import Box2BoxTransform
from segtron.modeling.matcher import Matcher
from segtron.modeling.roi_heads import (
    Res5ROIHeads,
    fast_rcnn_inference,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from segtron.structures import BitMasks, Boxes, ImageList, Instances, PolygonMasks
from segtron.utils.events import EventStorage

NUM_CLASSES = 3
FEATURES = ["p2", "p3", "p4", "p5"]
STRIDES = [4, 8, 16, 32]
IMAGE_SIZE = (64, 96)


def fpn_cfg(channels: int = 8, fc_dim: int = 32, mask_dim: int = 8) -> Any:
    """A Mask R-CNN FPN ROI-heads config (as Detectron2's Base-RCNN-FPN), with small dims."""
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = FEATURES
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = fc_dim
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 4
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = mask_dim
    cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
    return cfg


def fpn_shapes(channels: int = 8) -> dict[str, ShapeSpec]:
    return {f: ShapeSpec(channels=channels, stride=s) for f, s in zip(FEATURES, STRIDES)}


def fpn_features(num_images: int, channels: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    h, w = IMAGE_SIZE
    return {
        f: torch.randn(num_images, channels, h // s, w // s, generator=gen)
        for f, s in zip(FEATURES, STRIDES)
    }


def box_polygon(box: list[float]) -> list[list[float]]:
    x0, y0, x1, y1 = box
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def gt_instances(boxes: list[list[float]], classes: list[int]) -> Instances:
    """Ground truth whose masks are the boxes themselves, as polygons."""
    return Instances(
        IMAGE_SIZE,
        gt_boxes=Boxes(torch.tensor(boxes)),
        gt_classes=torch.tensor(classes),
        gt_masks=PolygonMasks([box_polygon(b) for b in boxes]),
    )


def proposals_from(boxes: torch.Tensor | list[list[float]]) -> Instances:
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    return Instances(
        IMAGE_SIZE, proposal_boxes=Boxes(boxes), objectness_logits=torch.zeros(len(boxes))
    )


def random_proposals(num: int, seed: int) -> Instances:
    gen = torch.Generator().manual_seed(seed)
    h, w = IMAGE_SIZE
    xy = torch.rand(num, 2, generator=gen) * torch.tensor([w - 20.0, h - 20.0])
    wh = 8 + torch.rand(num, 2, generator=gen) * 30
    boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([w - 1.0, h - 1.0]))], dim=1)
    return proposals_from(boxes)


def images(num: int) -> ImageList:
    return ImageList(torch.zeros(num, 3, *IMAGE_SIZE), [IMAGE_SIZE] * num)


# ---------------------------------------------------------------------------------------------
# Proposal labelling and sampling
# ---------------------------------------------------------------------------------------------


def sampling_heads(batch_size: int, positive_fraction: float, append_gt: bool) -> ROIHeads:
    return ROIHeads(
        num_classes=NUM_CLASSES,
        batch_size_per_image=batch_size,
        positive_fraction=positive_fraction,
        proposal_matcher=Matcher([0.5], [0, 1], allow_low_quality_matches=False),
        proposal_append_gt=append_gt,
    )


def test_label_and_sample_proposals_assigns_classes_and_background() -> None:
    gt = gt_instances([[10, 10, 30, 30], [50, 20, 90, 60]], [2, 0])
    fg_boxes = [[11, 10, 30, 31], [10, 11, 29, 30], [52, 22, 90, 60], [50, 20, 88, 58]]
    bg_boxes = [[0, 40, 8, 60], [30, 0, 45, 10], [60, 0, 70, 8], [2, 2, 14, 14]]
    heads = sampling_heads(batch_size=100, positive_fraction=0.5, append_gt=False)
    with EventStorage() as storage:
        (sampled,) = heads.label_and_sample_proposals([proposals_from(fg_boxes + bg_boxes)], [gt])
        assert storage.latest()["roi_head/num_fg_samples"][0] == 4
    assert len(sampled) == 8
    by_box = {
        tuple(b.tolist()): (int(c), g.tolist())
        for b, c, g in zip(
            sampled.proposal_boxes.tensor, sampled.gt_classes, sampled.gt_boxes.tensor
        )
    }
    expected_gt = {0: ([10, 10, 30, 30], 2), 1: ([50, 20, 90, 60], 0)}
    for i, box in enumerate(fg_boxes):
        gt_box, cls = expected_gt[i // 2]
        assert by_box[tuple(float(v) for v in box)] == (cls, [float(v) for v in gt_box])
    for box in bg_boxes:
        assert by_box[tuple(float(v) for v in box)][0] == NUM_CLASSES
    # Every gt_* field is carried over for the matched ground truth.
    assert isinstance(sampled.gt_masks, PolygonMasks) and len(sampled.gt_masks) == 8


def test_label_and_sample_proposals_respects_batch_size_and_fraction() -> None:
    torch.manual_seed(0)
    gt = gt_instances([[10, 10, 40, 40]], [1])
    jitter = torch.rand(40, 4) * 2
    fg = torch.tensor([10.0, 10.0, 40.0, 40.0]) + jitter
    bg = torch.tensor([60.0, 30.0, 80.0, 50.0]) + torch.rand(40, 4)
    heads = sampling_heads(batch_size=16, positive_fraction=0.25, append_gt=True)
    with EventStorage():
        (sampled,) = heads.label_and_sample_proposals([proposals_from(torch.cat([fg, bg]))], [gt])
    assert len(sampled) == 16
    assert int((sampled.gt_classes == 1).sum()) == 4  # 16 * 0.25
    assert int((sampled.gt_classes == NUM_CLASSES).sum()) == 12
    # Only the proposals' fields plus the gt fields are kept.
    assert set(sampled.get_fields()) == {
        "proposal_boxes",
        "objectness_logits",
        "gt_classes",
        "gt_boxes",
        "gt_masks",
    }


def test_label_and_sample_proposals_appends_gt_and_handles_empty_gt() -> None:
    gt = gt_instances([[10, 10, 30, 30]], [2])
    empty_gt = gt_instances([[0, 0, 1, 1]], [0])[torch.zeros(1, dtype=torch.bool)]
    far = [[60.0, 30.0, 80.0, 50.0]]
    heads = sampling_heads(batch_size=8, positive_fraction=0.5, append_gt=True)
    with EventStorage():
        with_gt, without_gt = heads.label_and_sample_proposals(
            [proposals_from(far), proposals_from(far)], [gt, empty_gt]
        )
    # The appended ground-truth box is the only foreground proposal.
    assert sorted(with_gt.gt_classes.tolist()) == [2, NUM_CLASSES]
    assert without_gt.gt_classes.tolist() == [NUM_CLASSES]
    assert not without_gt.has("gt_boxes")


# ---------------------------------------------------------------------------------------------
# Building, names and shapes
# ---------------------------------------------------------------------------------------------


def test_state_dict_names_and_shapes_match_detectron2_r50_fpn() -> None:
    cfg = fpn_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 80
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
    heads = build_roi_heads(cfg, fpn_shapes(256))
    assert isinstance(heads, StandardROIHeads)
    shapes = {k: tuple(v.shape) for k, v in heads.state_dict().items()}
    expected = {
        "box_head.fc1.weight": (1024, 256 * 7 * 7),
        "box_head.fc1.bias": (1024,),
        "box_head.fc2.weight": (1024, 1024),
        "box_head.fc2.bias": (1024,),
        "box_predictor.cls_score.weight": (81, 1024),
        "box_predictor.cls_score.bias": (81,),
        "box_predictor.bbox_pred.weight": (320, 1024),
        "box_predictor.bbox_pred.bias": (320,),
        "mask_head.deconv.weight": (256, 256, 2, 2),
        "mask_head.deconv.bias": (256,),
        "mask_head.predictor.weight": (80, 256, 1, 1),
        "mask_head.predictor.bias": (80,),
    }
    for i in range(1, 5):
        expected[f"mask_head.mask_fcn{i}.weight"] = (256, 256, 3, 3)
        expected[f"mask_head.mask_fcn{i}.bias"] = (256,)
    assert shapes == expected


def test_class_agnostic_options_and_conv_box_head_names() -> None:
    cfg = fpn_cfg()
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    cfg.MODEL.ROI_BOX_HEAD.NUM_CONV = 2
    cfg.MODEL.ROI_BOX_HEAD.CONV_DIM = 4
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = True
    heads = build_roi_heads(cfg, fpn_shapes())
    names = set(heads.state_dict())
    assert {"box_head.conv1.weight", "box_head.conv2.weight", "box_head.fc1.weight"} <= names
    assert "box_head.fc2.weight" not in names
    assert heads.box_predictor.bbox_pred.out_features == 4
    assert heads.mask_head.predictor.out_channels == 1
    assert heads.box_head.output_shape == ShapeSpec(channels=32)


def test_res5_roi_heads_names_and_inference() -> None:
    cfg = get_cfg()  # Detectron2's default ROI heads are the C4 ones.
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 4
    heads = build_roi_heads(cfg, {"res4": ShapeSpec(channels=128, stride=16)})
    assert isinstance(heads, Res5ROIHeads)
    names = set(heads.state_dict())
    assert {
        "res5.0.conv1.weight",
        "res5.0.conv1.norm.weight",
        "res5.0.shortcut.weight",
        "res5.2.conv3.weight",
        "box_predictor.cls_score.weight",
        "mask_head.deconv.weight",
        "mask_head.predictor.weight",
    } <= names
    assert heads.box_predictor.cls_score.in_features == 256
    heads.eval()
    features = {"res4": torch.randn(1, 128, 4, 6)}
    with torch.no_grad():
        (result,), _ = heads(images(1), features, [random_proposals(6, seed=1)])
    assert result.pred_masks.shape == (len(result), 1, 14, 14)


# ---------------------------------------------------------------------------------------------
# Training and inference of StandardROIHeads
# ---------------------------------------------------------------------------------------------


def test_standard_roi_heads_training_losses_and_gradients() -> None:
    torch.manual_seed(0)
    heads = build_roi_heads(fpn_cfg(), fpn_shapes())
    heads.train()
    features = {k: v.requires_grad_() for k, v in fpn_features(2).items()}
    targets = [
        gt_instances([[5, 5, 30, 40], [40, 10, 90, 60]], [0, 2]),
        gt_instances([[20, 20, 50, 50]], [1]),
    ]
    proposals = [random_proposals(20, seed=1), random_proposals(20, seed=2)]
    with EventStorage() as storage:
        sampled, losses = heads(images(2), features, proposals, targets)
        latest = storage.latest()
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    for loss in losses.values():
        assert loss.dim() == 0 and torch.isfinite(loss)
    assert losses["loss_box_reg"] > 0 and losses["loss_mask"] > 0
    assert "fast_rcnn/cls_accuracy" in latest and "mask_rcnn/accuracy" in latest
    assert len(sampled) == 2 and all(p.has("gt_classes") for p in sampled)

    sum(losses.values()).backward()
    for name in [
        "box_head.fc1.weight",
        "box_predictor.bbox_pred.weight",
        "mask_head.predictor.weight",
        "mask_head.mask_fcn1.weight",
    ]:
        grad = dict(heads.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert features["p2"].grad is not None


def test_standard_roi_heads_training_with_an_image_without_objects() -> None:
    torch.manual_seed(0)
    heads = build_roi_heads(fpn_cfg(), fpn_shapes()).train()
    no_objects = gt_instances([[0, 0, 1, 1]], [0])[torch.zeros(1, dtype=torch.bool)]
    targets = [no_objects, gt_instances([[20, 20, 50, 50]], [1])]
    proposals = [random_proposals(10, seed=1), random_proposals(10, seed=2)]
    with EventStorage():
        _, losses = heads(images(2), fpn_features(2), proposals, targets)
        _, only_background = heads(images(1), fpn_features(1), proposals[:1], targets[:1])
    assert all(torch.isfinite(v) for v in losses.values())
    # Without foreground the box and mask losses are zeros that still backpropagate.
    assert only_background["loss_box_reg"].item() == 0
    assert only_background["loss_mask"].item() == 0
    sum(only_background.values()).backward()


def test_standard_roi_heads_inference_outputs_and_caps() -> None:
    torch.manual_seed(0)
    cfg = fpn_cfg()
    cfg.TEST.DETECTIONS_PER_IMAGE = 7
    heads = build_roi_heads(cfg, fpn_shapes()).eval()
    features = fpn_features(2)
    proposals = [random_proposals(30, seed=3), random_proposals(30, seed=4)]
    with torch.no_grad():
        results, extra = heads(images(2), features, proposals)
    assert extra == {}
    assert len(results) == 2
    for result in results:
        assert 0 < len(result) <= 7
        assert result.image_size == IMAGE_SIZE
        assert isinstance(result.pred_boxes, Boxes)
        assert result.pred_classes.dtype == torch.int64
        assert result.pred_masks.shape == (len(result), 1, 28, 28)
        assert ((result.pred_masks >= 0) & (result.pred_masks <= 1)).all()
        assert (result.scores > cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST).all()

    # The untrained classifier gives each class about 1 / (K + 1) = 0.25.
    heads.box_predictor.test_score_thresh = 0.26
    with torch.no_grad():
        results, _ = heads(images(2), features, proposals)
    for result in results:
        assert (result.scores > 0.26).all()
    heads.box_predictor.test_score_thresh = 0.99
    with torch.no_grad():
        results, _ = heads(images(2), features, proposals)
    assert [len(r) for r in results] == [0, 0]
    assert results[0].pred_masks.shape == (0, 1, 28, 28)


def test_fast_rcnn_inference_removes_duplicates() -> None:
    # Two foreground classes; class-specific boxes (R, 2 * 4), scores (R, 3).
    same = [10.0, 10.0, 50.0, 50.0]
    boxes = torch.tensor(
        [
            same + [0.0, 0.0, 5.0, 5.0],
            [11.0, 10.0, 50.0, 51.0] + [0.0, 0.0, 5.0, 5.0],  # duplicate of region 0, class 0
            [0.0, 0.0, 1.0, 1.0] + [12.0, 12.0, 48.0, 48.0],  # class 1, overlapping class 0
            [float("nan")] * 8,  # non-finite: dropped
            [-10.0, -5.0, 200.0, 30.0] + [0.0, 0.0, 1.0, 1.0],  # clipped to the image
        ]
    )
    scores = torch.tensor(
        [
            [0.9, 0.01, 0.09],
            [0.8, 0.01, 0.19],
            [0.02, 0.7, 0.28],
            [0.9, 0.05, 0.05],
            [0.6, 0.03, 0.37],
        ]
    )
    (result,), (indices,) = fast_rcnn_inference(
        [boxes], [scores], [(64, 96)], score_thresh=0.05, nms_thresh=0.5, topk_per_image=100
    )
    assert result.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert result.pred_classes.tolist() == [0, 1, 0]
    assert indices.tolist() == [0, 2, 4]
    torch.testing.assert_close(
        result.pred_boxes.tensor,
        torch.tensor([same, [12.0, 12.0, 48.0, 48.0], [0.0, 0.0, 96.0, 30.0]]),
    )
    (top1,), _ = fast_rcnn_inference(
        [boxes], [scores], [(64, 96)], score_thresh=0.05, nms_thresh=0.5, topk_per_image=1
    )
    assert top1.scores.tolist() == pytest.approx([0.9])


def test_box_losses_normalized_by_number_of_regions() -> None:
    predictor = FastRCNNOutputLayers(
        ShapeSpec(channels=4),
        box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
        num_classes=2,
    )
    proposals = Instances(
        IMAGE_SIZE,
        proposal_boxes=Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 4)),
        gt_boxes=Boxes(torch.tensor([[1.0, 0.0, 11.0, 10.0]] * 4)),
        gt_classes=torch.tensor([1, 2, 2, 2]),
    )
    deltas = torch.zeros(4, 8)
    with EventStorage():
        losses = predictor.losses((torch.zeros(4, 3), deltas), [proposals])
    # One foreground region with target dx = 10 * 1 / 10 = 1 (L1), divided by 4 regions.
    assert losses["loss_box_reg"].item() == pytest.approx(0.25)
    assert losses["loss_cls"].item() == pytest.approx(torch.log(torch.tensor(3.0)).item())


# ---------------------------------------------------------------------------------------------
# Mask loss and inference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_type", ["polygon", "bitmask"])
def test_mask_loss_is_zero_for_perfect_logits(mask_type: str) -> None:
    polygons = [
        [[4.0, 4.0, 28.0, 4.0, 16.0, 28.0]],
        [[40.0, 10.0, 60.0, 10.0, 60.0, 50.0, 40.0, 50.0]],
    ]
    gt_masks = PolygonMasks(polygons)
    if mask_type == "bitmask":
        gt_masks = BitMasks.from_polygon_masks(gt_masks, *IMAGE_SIZE)
    proposal_boxes = torch.tensor([[2.0, 2.0, 30.0, 30.0], [38.0, 8.0, 62.0, 52.0]])
    instances = Instances(
        IMAGE_SIZE,
        proposal_boxes=Boxes(proposal_boxes),
        gt_classes=torch.tensor([2, 0]),
        gt_masks=gt_masks,
    )
    target = gt_masks.crop_and_resize(proposal_boxes, 28).float()
    assert 0 < target.mean() < 1
    logits = torch.full((2, NUM_CLASSES, 28, 28), -30.0)  # other channels: ignored
    logits[0, 2] = (target[0] * 2 - 1) * 30
    logits[1, 0] = (target[1] * 2 - 1) * 30
    with EventStorage() as storage:
        loss = mask_rcnn_loss(logits, [instances])
        assert storage.latest()["mask_rcnn/accuracy"][0] == 1.0
        assert loss.item() < 1e-6
        wrong = mask_rcnn_loss(-logits, [instances])
        assert wrong.item() > 10
        agnostic = mask_rcnn_loss(logits[:1, 2:3], [instances[:1]])
        assert agnostic.item() < 1e-6


def test_mask_loss_without_regions_is_a_connected_zero() -> None:
    logits = torch.zeros(0, NUM_CLASSES, 28, 28, requires_grad=True)
    empty = gt_instances([[0, 0, 1, 1]], [0])[torch.zeros(1, dtype=torch.bool)]
    empty.proposal_boxes = Boxes(torch.zeros(0, 4))
    with EventStorage():
        loss = mask_rcnn_loss(logits, [empty])
    assert loss.item() == 0
    loss.backward()


def test_mask_rcnn_inference_takes_the_predicted_class_channel() -> None:
    logits = torch.randn(3, NUM_CLASSES, 5, 5)
    first = Instances(IMAGE_SIZE, pred_classes=torch.tensor([2, 0]))
    second = Instances(IMAGE_SIZE, pred_classes=torch.tensor([1]))
    mask_rcnn_inference(logits, [first, second])
    torch.testing.assert_close(first.pred_masks[:, 0], logits[[0, 1], [2, 0]].sigmoid())
    torch.testing.assert_close(second.pred_masks[:, 0], logits[2:, 1].sigmoid())
    assert second.pred_masks.shape == (1, 1, 5, 5)


# ---------------------------------------------------------------------------------------------
# Overfitting sanity check
# ---------------------------------------------------------------------------------------------


def test_overfit_two_boxes_with_gt_proposals() -> None:
    torch.manual_seed(0)
    cfg = fpn_cfg(fc_dim=64)
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    heads = build_roi_heads(cfg, fpn_shapes())
    features = fpn_features(1, seed=5)
    gt_boxes = [[6.0, 8.0, 34.0, 44.0], [44.0, 14.0, 88.0, 56.0]]
    target = gt_instances(gt_boxes, [2, 1])
    optimizer = torch.optim.SGD(heads.parameters(), lr=0.02, momentum=0.9)
    heads.train()
    with EventStorage():
        for _ in range(60):
            _, losses = heads(images(1), features, [proposals_from(gt_boxes)], [target])
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    assert losses["loss_cls"].item() < 0.2  # from log(K + 1) = 1.39

    heads.eval()
    with torch.no_grad():
        (result,), _ = heads(images(1), features, [proposals_from(gt_boxes)])
    top = result[result.scores > 0.5]
    assert sorted(top.pred_classes.tolist()) == [1, 2]
    by_class = {int(c): b for c, b in zip(top.pred_classes, top.pred_boxes.tensor)}
    torch.testing.assert_close(by_class[2], torch.tensor(gt_boxes[0]), atol=2.0, rtol=0)
    torch.testing.assert_close(by_class[1], torch.tensor(gt_boxes[1]), atol=2.0, rtol=0)
