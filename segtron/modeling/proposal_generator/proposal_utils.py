"""Proposal selection and ground-truth injection shared by proposal generators and ROI heads.

Follows ``detectron2.modeling.proposal_generator.proposal_utils``.
"""

from __future__ import annotations

import math

import torch

from segtron.layers import batched_nms, cat, move_device_like
from segtron.structures import Boxes, Instances

__all__ = ["add_ground_truth_to_proposals", "find_top_rpn_proposals"]


def find_top_rpn_proposals(
    proposals: list[torch.Tensor],
    pred_objectness_logits: list[torch.Tensor],
    image_sizes: list[tuple[int, int]],
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
) -> list[Instances]:
    """Select the best proposals of each image.

    For each image: keep the ``pre_nms_topk`` highest-scored proposals of each feature level,
    clip them to the image, drop those with a side not larger than ``min_box_size``, run NMS
    within each level (levels never suppress each other), and keep the ``post_nms_topk``
    highest-scored survivors over all levels.

    Args:
        proposals: Per level, ``(N, Hi*Wi*A, 4)`` decoded proposal boxes of the ``N`` images.
        pred_objectness_logits: Per level, ``(N, Hi*Wi*A)`` objectness logits.
        image_sizes: ``(height, width)`` of each image.
        nms_thresh: IoU threshold of the NMS.
        pre_nms_topk: Proposals kept per level and image before NMS.
        post_nms_topk: Proposals kept per image after NMS.
        min_box_size: Proposals must have both sides larger than this (input pixels).
        training: In training, non-finite boxes or scores raise an error; in inference they are
            dropped.

    Returns:
        Per image, :class:`Instances` with ``proposal_boxes`` (:class:`Boxes`) and
        ``objectness_logits`` (``(K,)``), sorted by decreasing objectness, ``K <= post_nms_topk``.

    Raises:
        FloatingPointError: in training, when a box or score is not finite (training diverged).
    """
    num_images = len(image_sizes)
    device = proposals[0].device
    batch_idx = move_device_like(torch.arange(num_images, device=device), proposals[0])

    topk_scores = []
    topk_proposals = []
    level_ids = []
    for level_id, (proposals_i, logits_i) in enumerate(
        zip(proposals, pred_objectness_logits, strict=True)
    ):
        num_proposals_i = min(logits_i.shape[1], pre_nms_topk)
        topk_scores_i, topk_idx = logits_i.topk(num_proposals_i, dim=1)
        topk_proposals.append(proposals_i[batch_idx[:, None], topk_idx])
        topk_scores.append(topk_scores_i)
        level_ids.append(torch.full((num_proposals_i,), level_id, dtype=torch.int64, device=device))
    all_scores = cat(topk_scores, dim=1)
    all_proposals = cat(topk_proposals, dim=1)
    all_levels = cat(level_ids, dim=0)

    results = []
    for n, image_size in enumerate(image_sizes):
        boxes = Boxes(all_proposals[n])
        scores = all_scores[n]
        levels = all_levels
        valid = torch.isfinite(boxes.tensor).all(dim=1) & torch.isfinite(scores)
        if not valid.all():
            if training:
                raise FloatingPointError(
                    "Predicted boxes or scores contain Inf/NaN. Training has diverged."
                )
            boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        boxes.clip(image_size)

        keep = boxes.nonempty(threshold=min_box_size)
        if not keep.all():
            boxes, scores, levels = boxes[keep], scores[keep], levels[keep]

        keep = batched_nms(boxes.tensor, scores, levels, nms_thresh)[:post_nms_topk]
        result = Instances(image_size)
        result.proposal_boxes = boxes[keep]
        result.objectness_logits = scores[keep]
        results.append(result)
    return results


def add_ground_truth_to_proposals(
    gt: list[Instances] | list[Boxes], proposals: list[Instances]
) -> list[Instances]:
    """Append the ground-truth boxes of each image to its proposals.

    Args:
        gt: Per image, :class:`Instances` with ``gt_boxes`` (and possibly other ``gt_*`` fields,
            which are carried along) or plain :class:`Boxes`.
        proposals: Per image, :class:`Instances` with ``proposal_boxes`` and
            ``objectness_logits``.

    Returns:
        Per image, the proposals followed by one proposal per ground truth, whose objectness
        logit is that of a probability of ``1 - 1e-10``. Only the fields of ``proposals`` are
        kept.

    Raises:
        ValueError: if ``gt`` is None or its length differs from ``proposals``.
    """
    if gt is None:
        raise ValueError("add_ground_truth_to_proposals needs ground truth.")
    if len(proposals) != len(gt):
        raise ValueError(
            f"Got proposals for {len(proposals)} images but ground truth for {len(gt)}."
        )
    return [
        _add_ground_truth_to_proposals_single_image(gt_i, proposals_i)
        for gt_i, proposals_i in zip(gt, proposals, strict=True)
    ]


def _add_ground_truth_to_proposals_single_image(
    gt: Instances | Boxes, proposals: Instances
) -> Instances:
    """:func:`add_ground_truth_to_proposals` for one image."""
    if isinstance(gt, Boxes):
        gt = Instances(proposals.image_size, gt_boxes=gt)
    gt_boxes = gt.gt_boxes
    device = proposals.objectness_logits.device
    # The logit of a probability p = 1 - 1e-10 is log(p / (1 - p)).
    prob = 1.0 - 1e-10
    gt_logit_value = math.log(prob / (1.0 - prob))
    gt_proposal = Instances(proposals.image_size, **gt.get_fields())
    gt_proposal.proposal_boxes = gt_boxes
    gt_proposal.objectness_logits = torch.full((len(gt_boxes),), gt_logit_value, device=device)
    missing = [key for key in proposals.get_fields() if not gt_proposal.has(key)]
    if missing:
        raise ValueError(f"The fields {missing} of the proposals are missing in the ground truth.")
    # Instances.cat keeps the fields of its first element, so extra gt_* fields are dropped.
    return Instances.cat([proposals, gt_proposal])
