"""Tests of the Matcher, Box2BoxTransform, the dense box regression loss and subsample_labels."""

from __future__ import annotations

import math

import pytest
import torch

from segtron.modeling.box_regression import Box2BoxTransform, _dense_box_regression_loss
from segtron.modeling.matcher import Matcher
from segtron.modeling.sampling import subsample_labels
from segtron.structures import Boxes

# Two ground truths (rows) against five predictions (columns).
IOU = torch.tensor(
    [
        [0.10, 0.50, 0.80, 0.00, 0.20],
        [0.20, 0.40, 0.30, 0.00, 0.25],
    ]
)


def test_matcher_thresholds() -> None:
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=False)
    matches, labels = matcher(IOU)
    assert matches.dtype == torch.int64 and labels.dtype == torch.int8
    # Column 3 is all zeros: argmax is the first row.
    assert matches.tolist() == [1, 0, 0, 0, 1]
    # 0.2 -> neg, 0.5 -> ignore, 0.8 -> pos, 0.0 -> neg, 0.25 -> neg; 0.3 and 0.7 are inclusive
    # lower bounds.
    assert labels.tolist() == [0, -1, 1, 0, 0]
    _, labels = matcher(torch.tensor([[0.3, 0.7, 0.2999]]))
    assert labels.tolist() == [-1, 1, 0]


def test_matcher_low_quality_matches() -> None:
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    matches, labels = matcher(IOU)
    # GT 1's best IoU is 0.4 at column 1, whose label becomes 1 though it matches GT 0 (0.5).
    assert labels.tolist() == [0, 1, 1, 0, 0]
    assert matches.tolist() == [1, 0, 0, 0, 1]


def test_matcher_low_quality_ties_all_promoted() -> None:
    matcher = Matcher([0.5], [0, 1], allow_low_quality_matches=True)
    _, labels = matcher(torch.tensor([[0.2, 0.4, 0.4, 0.1]]))
    assert labels.tolist() == [0, 1, 1, 0]


def test_matcher_empty_inputs() -> None:
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    matches, labels = matcher(torch.zeros(0, 4))
    assert matches.tolist() == [0, 0, 0, 0]
    assert labels.tolist() == [0, 0, 0, 0]
    matches, labels = matcher(torch.zeros(3, 0))
    assert matches.numel() == 0 and labels.numel() == 0


@pytest.mark.parametrize(
    "thresholds, labels",
    [([0.7, 0.3], [0, -1, 1]), ([0.3, 0.7], [0, 1]), ([0.3], [0, 2]), ([-0.1], [0, 1])],
)
def test_matcher_rejects_bad_arguments(thresholds: list[float], labels: list[int]) -> None:
    with pytest.raises(ValueError):
        Matcher(thresholds, labels)


def test_box2box_round_trip() -> None:
    torch.manual_seed(0)
    src = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 45.0, 25.0], [1.0, 2.0, 3.0, 4.0]])
    target = torch.tensor([[2.0, -3.0, 14.0, 15.0], [0.0, 10.0, 80.0, 12.0], [1.0, 2.0, 3.0, 4.0]])
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        transform = Box2BoxTransform(weights)
        deltas = transform.get_deltas(src, target)
        assert torch.allclose(transform.apply_deltas(deltas, src), target, atol=1e-4)
    # Known values with unit weights: centre shift in units of the source size, log size ratio.
    deltas = Box2BoxTransform((1.0, 1.0, 1.0, 1.0)).get_deltas(src[:1], target[:1])
    expected = torch.tensor([[(8 - 5) / 10, (6 - 10) / 20, math.log(12 / 10), math.log(18 / 20)]])
    assert torch.allclose(deltas, expected)
    deltas = Box2BoxTransform((10.0, 10.0, 5.0, 5.0)).get_deltas(src[:1], target[:1])
    assert torch.allclose(deltas, expected * torch.tensor([10.0, 10.0, 5.0, 5.0]))


def test_box2box_apply_deltas_per_class_and_clamp() -> None:
    transform = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    # Two sets of deltas (e.g. two classes): identity, and a huge scale that gets clamped.
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 100.0, 100.0]])
    out = transform.apply_deltas(deltas, boxes)
    assert out.shape == (1, 8)
    assert torch.allclose(out[0, :4], boxes[0])
    # exp(log(1000 / 16)) * 16 = 1000 wide, centred at 8.
    assert torch.allclose(out[0, 4:], torch.tensor([-492.0, -492.0, 508.0, 508.0]), atol=1e-3)
    assert torch.isfinite(out).all()


def _loss_inputs() -> tuple[list[Boxes], list[torch.Tensor], torch.Tensor]:
    anchors = [
        Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 30.0, 30.0]])),
        Boxes(torch.tensor([[0.0, 0.0, 40.0, 20.0]])),
    ]
    gt = torch.tensor([[1.0, 1.0, 11.0, 12.0], [8.0, 12.0, 30.0, 34.0], [0.0, 0.0, 40.0, 20.0]])
    fg_mask = torch.tensor([[True, True, False]])
    return anchors, [gt], fg_mask


def test_dense_box_regression_loss_smooth_l1_is_l1_sum_over_foreground() -> None:
    anchors, gt_boxes, fg_mask = _loss_inputs()
    transform = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    gt_deltas = transform.get_deltas(Boxes.cat(anchors).tensor, gt_boxes[0])
    pred = [torch.full((1, 2, 4), 0.1), torch.full((1, 1, 4), 5.0)]
    loss = _dense_box_regression_loss(anchors, transform, pred, gt_boxes, fg_mask)
    expected = (gt_deltas[:2] - 0.1).abs().sum()
    assert torch.allclose(loss, expected)
    # Tensors for anchors work too; a beta turns the small errors quadratic.
    tensors = [a.tensor for a in anchors]
    beta_loss = _dense_box_regression_loss(
        tensors, transform, pred, gt_boxes, fg_mask, smooth_l1_beta=10.0
    )
    assert torch.allclose(beta_loss, (0.5 * (gt_deltas[:2] - 0.1) ** 2 / 10.0).sum())


@pytest.mark.parametrize("loss_type", ["giou", "diou", "ciou"])
def test_dense_box_regression_iou_losses(loss_type: str) -> None:
    anchors, gt_boxes, fg_mask = _loss_inputs()
    transform = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    gt_deltas = transform.get_deltas(Boxes.cat(anchors).tensor, gt_boxes[0])[None]
    exact = _dense_box_regression_loss(
        anchors, transform, [gt_deltas[:, :2], gt_deltas[:, 2:]], gt_boxes, fg_mask, loss_type
    )
    assert exact.abs().item() < 1e-5
    wrong = _dense_box_regression_loss(
        anchors, transform, [gt_deltas[:, :2] + 0.5, gt_deltas[:, 2:]], gt_boxes, fg_mask, loss_type
    )
    assert wrong.item() > 0.1


def test_dense_box_regression_rejects_unknown_type() -> None:
    anchors, gt_boxes, fg_mask = _loss_inputs()
    pred = [torch.zeros(1, 2, 4), torch.zeros(1, 1, 4)]
    with pytest.raises(ValueError):
        _dense_box_regression_loss(
            anchors, Box2BoxTransform((1.0,) * 4), pred, gt_boxes, fg_mask, "l2"
        )


def test_subsample_labels_counts() -> None:
    torch.manual_seed(0)
    # 10 positives (classes 1..3), 50 negatives (bg 0), 5 ignored.
    labels = torch.tensor([1, 2, 3] * 3 + [1] + [0] * 50 + [-1] * 5)
    pos, neg = subsample_labels(labels, num_samples=16, positive_fraction=0.25, bg_label=0)
    assert len(pos) == 4 and len(neg) == 12
    assert (labels[pos] > 0).all() and (labels[neg] == 0).all()
    assert len(set(pos.tolist())) == 4 and len(set(neg.tolist())) == 12
    # Few positives: negatives fill the budget.
    labels = torch.tensor([5] * 2 + [0] * 50)
    pos, neg = subsample_labels(labels, num_samples=16, positive_fraction=0.5, bg_label=0)
    assert len(pos) == 2 and len(neg) == 14
    # Too few of both: fewer come back. bg_label other than 0 (ROI heads' background class).
    labels = torch.tensor([0, 1, 80, 80, -1])
    pos, neg = subsample_labels(labels, num_samples=16, positive_fraction=0.5, bg_label=80)
    assert sorted(pos.tolist()) == [0, 1] and sorted(neg.tolist()) == [2, 3]


def test_subsample_labels_is_random() -> None:
    torch.manual_seed(0)
    labels = torch.zeros(1000, dtype=torch.int64)
    draws = {tuple(sorted(subsample_labels(labels, 10, 0.5, 0)[1].tolist())) for _ in range(5)}
    assert len(draws) > 1
