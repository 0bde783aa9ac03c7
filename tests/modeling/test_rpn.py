"""Tests of the RPN: head names, labels, losses, proposals, proposal utilities and an overfit."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from segtron.config import get_cfg
from segtron.layers import ShapeSpec
from segtron.modeling import (
    PROPOSAL_GENERATOR_REGISTRY,
    RPN_HEAD_REGISTRY,
    build_proposal_generator,
)
from segtron.modeling.box_regression import Box2BoxTransform
from segtron.modeling.proposal_generator import (
    RPN,
    StandardRPNHead,
    add_ground_truth_to_proposals,
    find_top_rpn_proposals,
)
from segtron.structures import Boxes, ImageList, Instances, pairwise_iou
from segtron.utils.events import EventStorage

CHANNELS = 16
SHAPES = {
    "p2": ShapeSpec(channels=CHANNELS, stride=4),
    "p3": ShapeSpec(channels=CHANNELS, stride=8),
}
IMAGE_SIZES = [(64, 64), (56, 40)]


def rpn_cfg(**rpn: Any) -> Any:
    """A two-level RPN config; keyword arguments override MODEL.RPN values."""
    cfg = get_cfg()
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 20
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 300
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 50
    for key, value in rpn.items():
        cfg.MODEL.RPN[key] = value
    return cfg


def inputs(seed: int = 0) -> tuple[ImageList, dict[str, torch.Tensor], list[Instances]]:
    """Two padded 64x64 images of sizes IMAGE_SIZES, their features and ground truth."""
    gen = torch.Generator().manual_seed(seed)
    images = ImageList(torch.zeros(2, 3, 64, 64), IMAGE_SIZES)
    features = {
        "p2": torch.randn(2, CHANNELS, 16, 16, generator=gen),
        "p3": torch.randn(2, CHANNELS, 8, 8, generator=gen),
    }
    gts = [
        Instances(
            IMAGE_SIZES[0], gt_boxes=Boxes([[4.0, 4.0, 24.0, 20.0], [20.0, 10.0, 60.0, 50.0]])
        ),
        Instances(IMAGE_SIZES[1], gt_boxes=Boxes([[8.0, 8.0, 36.0, 30.0]])),
    ]
    return images, features, gts


def test_registries_and_builders() -> None:
    assert "RPN" in PROPOSAL_GENERATOR_REGISTRY and "StandardRPNHead" in RPN_HEAD_REGISTRY
    rpn = build_proposal_generator(rpn_cfg(), SHAPES)
    assert isinstance(rpn, RPN) and isinstance(rpn.rpn_head, StandardRPNHead)
    cfg = rpn_cfg()
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "PrecomputedProposals"
    assert build_proposal_generator(cfg, SHAPES) is None


def test_state_dict_names_match_detectron2() -> None:
    rpn = build_proposal_generator(rpn_cfg(), SHAPES)
    assert set(rpn.state_dict()) == {
        f"rpn_head.{name}.{param}"
        for name in ("conv", "objectness_logits", "anchor_deltas")
        for param in ("weight", "bias")
    }
    assert rpn.rpn_head.objectness_logits.weight.shape == (3, CHANNELS, 1, 1)
    assert rpn.rpn_head.anchor_deltas.weight.shape == (12, CHANNELS, 1, 1)
    deep = build_proposal_generator(rpn_cfg(CONV_DIMS=[-1, 8]), SHAPES)
    keys = set(deep.state_dict())
    assert {"rpn_head.conv.conv0.weight", "rpn_head.conv.conv1.weight"} <= keys
    assert deep.rpn_head.conv.conv1.weight.shape == (8, CHANNELS, 3, 3)
    assert deep.rpn_head.objectness_logits.weight.shape == (3, 8, 1, 1)


def test_training_losses_are_finite_with_gradients() -> None:
    rpn = build_proposal_generator(rpn_cfg(), SHAPES).train()
    images, features, gts = inputs()
    with EventStorage() as storage:
        proposals, losses = rpn(images, features, gts)
        assert storage.latest()["rpn/num_pos_anchors"][0] > 0
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert losses["loss_rpn_loc"] > 0
    sum(losses.values()).backward()
    for name, param in rpn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert len(proposals) == 2 and all(len(p) <= 50 for p in proposals)
    assert not proposals[0].proposal_boxes.tensor.requires_grad


def test_loss_values_and_weights() -> None:
    images, features, gts = inputs()
    rpn = build_proposal_generator(rpn_cfg(LOSS_WEIGHT=2.0, BBOX_REG_LOSS_WEIGHT=3.0), SHAPES)
    for layer in (rpn.rpn_head.objectness_logits, rpn.rpn_head.anchor_deltas):
        torch.nn.init.zeros_(layer.weight)
    with EventStorage():
        torch.manual_seed(0)
        _, losses = rpn(images, features, gts)
    # Logits 0: BCE = log 2 per sampled anchor; 256 sampled per image out of 1008 anchors.
    assert losses["loss_rpn_cls"].item() == pytest.approx(2.0 * math.log(2.0), rel=1e-5)
    # Deltas 0: L1 loss = sum of |target deltas| of the sampled positives, / (256 * 2).
    torch.manual_seed(0)
    anchors = rpn.anchor_generator([features["p2"], features["p3"]])
    labels, matched = rpn.label_and_sample_anchors(anchors, gts)
    all_anchors = Boxes.cat(anchors).tensor
    transform = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    expected = sum(
        transform.get_deltas(all_anchors[lab == 1], boxes[lab == 1]).abs().sum()
        for lab, boxes in zip(labels, matched)
    )
    assert losses["loss_rpn_loc"].item() == pytest.approx(6.0 * expected.item() / 512, rel=1e-5)


def test_label_and_sample_anchors() -> None:
    rpn = build_proposal_generator(rpn_cfg(BATCH_SIZE_PER_IMAGE=64), SHAPES)
    _, features, gts = inputs()
    anchors = rpn.anchor_generator([features["p2"], features["p3"]])
    all_anchors = Boxes.cat(anchors)
    empty = Instances((64, 64), gt_boxes=Boxes(torch.zeros(0, 4)))
    labels, matched = rpn.label_and_sample_anchors(anchors, [gts[0], empty])
    assert labels[0].shape == (len(all_anchors),)
    for lab in labels:
        assert (lab >= 0).sum() == 64
    assert (labels[1] == 1).sum() == 0 and (matched[1] == 0).all()
    # Positives have IoU >= 0.7 with their box, or are the best anchor of a ground truth.
    pos = labels[0] == 1
    assert 0 < pos.sum() <= 32
    ious = pairwise_iou(gts[0].gt_boxes, all_anchors[pos])
    best_per_gt = pairwise_iou(gts[0].gt_boxes, all_anchors).max(dim=1).values
    assert ((ious.max(dim=0).values >= 0.7) | (ious == best_per_gt[:, None]).any(dim=0)).all()
    # A matched box is the ground truth of highest IoU.
    assert torch.equal(matched[0][pos], gts[0].gt_boxes.tensor[ious.argmax(dim=0)])


def test_boundary_thresh_ignores_outside_anchors() -> None:
    rpn = build_proposal_generator(rpn_cfg(BOUNDARY_THRESH=0, BATCH_SIZE_PER_IMAGE=4096), SHAPES)
    _, features, gts = inputs()
    anchors = rpn.anchor_generator([features["p2"], features["p3"]])
    labels, _ = rpn.label_and_sample_anchors(anchors, gts)
    for lab, gt in zip(labels, gts):
        inside = Boxes.cat(anchors).inside_box(gt.image_size, 0)
        assert (lab[~inside] == -1).all() and (lab[inside] >= 0).any()
        assert not inside.all()


def test_inference_proposals() -> None:
    rpn = build_proposal_generator(rpn_cfg(), SHAPES).eval()
    torch.nn.init.normal_(rpn.rpn_head.objectness_logits.weight, std=1.0)
    torch.nn.init.normal_(rpn.rpn_head.anchor_deltas.weight, std=0.1)
    images, features, _ = inputs()
    with torch.no_grad():
        proposals, losses = rpn(images, features)
    assert losses == {}
    for props, (height, width) in zip(proposals, IMAGE_SIZES):
        assert props.image_size == (height, width)
        assert 0 < len(props) <= 20
        scores = props.objectness_logits
        assert torch.all(scores[:-1] >= scores[1:])
        box = props.proposal_boxes.tensor
        assert (box[:, 0] >= 0).all() and (box[:, 1] >= 0).all()
        assert (box[:, 2] <= width).all() and (box[:, 3] <= height).all()
        assert (box[:, 2] > box[:, 0]).all() and (box[:, 3] > box[:, 1]).all()


def test_find_top_rpn_proposals_by_hand() -> None:
    # Level 0: two overlapping boxes and a tiny one; level 1: a copy of the best box.
    level0 = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0], [5.0, 5.0, 5.5, 8.0]]])
    level1 = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [-5.0, -5.0, 50.0, 8.0]]])
    logits = [torch.tensor([[3.0, 2.0, 5.0]]), torch.tensor([[1.0, 0.0]])]
    (res,) = find_top_rpn_proposals(
        [level0, level1], logits, [(20, 30)], 0.7, 10, 10, min_box_size=1.0, training=False
    )
    # The tiny box is removed, box 1 suppressed by box 0 in its level, not across levels.
    assert res.objectness_logits.tolist() == [3.0, 1.0, 0.0]
    assert res.proposal_boxes.tensor.tolist() == [
        [0.0, 0.0, 10.0, 10.0],
        [0.0, 0.0, 10.0, 10.0],
        [0.0, 0.0, 30.0, 8.0],
    ]
    # Pre-NMS top-1 per level and post-NMS top-1.
    (res,) = find_top_rpn_proposals([level0, level1], logits, [(20, 30)], 0.7, 1, 10, 0.0, False)
    assert res.objectness_logits.tolist() == [5.0, 1.0]
    (res,) = find_top_rpn_proposals([level0, level1], logits, [(20, 30)], 0.7, 10, 1, 1.0, False)
    assert res.objectness_logits.tolist() == [3.0]


def test_find_top_rpn_proposals_non_finite() -> None:
    boxes = [torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, float("nan"), 5.0]]])]
    logits = [torch.tensor([[1.0, 2.0]])]
    (res,) = find_top_rpn_proposals(boxes, logits, [(20, 20)], 0.7, 10, 10, 0.0, False)
    assert res.objectness_logits.tolist() == [1.0]
    with pytest.raises(FloatingPointError):
        find_top_rpn_proposals(boxes, logits, [(20, 20)], 0.7, 10, 10, 0.0, True)


def test_add_ground_truth_to_proposals() -> None:
    props = Instances((20, 20))
    props.proposal_boxes = Boxes([[0.0, 0.0, 5.0, 5.0]])
    props.objectness_logits = torch.tensor([0.5])
    gt = Instances((20, 20), gt_boxes=Boxes([[1.0, 2.0, 3.0, 4.0]]), gt_classes=torch.tensor([3]))
    (out,) = add_ground_truth_to_proposals([gt], [props])
    assert len(out) == 2 and set(out.get_fields()) == {"proposal_boxes", "objectness_logits"}
    assert out.proposal_boxes.tensor[1].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert torch.sigmoid(out.objectness_logits[1]).item() == pytest.approx(1.0)
    assert out.objectness_logits[1] > 20
    (out,) = add_ground_truth_to_proposals([Boxes([[1.0, 1.0, 2.0, 2.0]])], [props])
    assert len(out) == 2
    with pytest.raises(ValueError):
        add_ground_truth_to_proposals([gt, gt], [props])


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Run on one thread: tiny convs are many times slower with threads on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("single_thread")
def test_overfit_one_box() -> None:
    """Trained on one image, the top proposal should land on its only box."""
    torch.manual_seed(0)
    cfg = rpn_cfg(IN_FEATURES=["p3"], BATCH_SIZE_PER_IMAGE=64, POST_NMS_TOPK_TEST=10)
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16, 32]]
    rpn = build_proposal_generator(cfg, {"p3": SHAPES["p3"]})
    features = {"p3": torch.randn(1, CHANNELS, 8, 8)}
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    gt_box = Boxes([[12.0, 20.0, 44.0, 40.0]])
    gts = [Instances((64, 64), gt_boxes=gt_box)]
    # The best anchor (45x23 at (24, 32)) has IoU ~0.6: the regression has to do the rest.
    anchors = rpn.anchor_generator([features["p3"]])[0]
    assert pairwise_iou(gt_box, anchors).max() < 0.7
    optimizer = torch.optim.SGD(rpn.parameters(), lr=0.05, momentum=0.9)
    with EventStorage():
        for _ in range(80):
            _, losses = rpn(images, features, gts)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    rpn.eval()
    with torch.no_grad():
        (props,), _ = rpn(images, features)
    assert pairwise_iou(props.proposal_boxes[:1], gt_box).item() > 0.7
