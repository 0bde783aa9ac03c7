"""The base of ROI heads: their registry, and the labelling and sampling of training proposals.

Holds ``ROI_HEADS_REGISTRY`` with :func:`build_roi_heads`, :func:`select_foreground_proposals`
and the base class :class:`ROIHeads`. All are re-exported by
:mod:`segtron.modeling.roi_heads.roi_heads`, their module in Detectron2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from fvcore.common.registry import Registry
from torch import nn

from segtron.config import configurable
from segtron.layers import ShapeSpec, nonzero_tuple
from segtron.modeling.matcher import Matcher
from segtron.modeling.proposal_generator.proposal_utils import add_ground_truth_to_proposals
from segtron.modeling.sampling import subsample_labels
from segtron.structures import ImageList, Instances, pairwise_iou
from segtron.utils.events import get_event_storage

__all__ = ["ROI_HEADS_REGISTRY", "ROIHeads", "build_roi_heads", "select_foreground_proposals"]

ROI_HEADS_REGISTRY = Registry("ROI_HEADS")
ROI_HEADS_REGISTRY.__doc__ = """
Registry of ROI heads, selected by ``cfg.MODEL.ROI_HEADS.NAME``.

A registered object is called as ``obj(cfg, input_shape)``, where ``input_shape`` maps feature
names to :class:`ShapeSpec`, and returns an :class:`ROIHeads`.
"""


def build_roi_heads(cfg: Any, input_shape: dict[str, ShapeSpec]) -> ROIHeads:
    """Build the ROI heads named by ``cfg.MODEL.ROI_HEADS.NAME``.

    Args:
        cfg: a config node.
        input_shape: the shapes of the backbone's output features, by name.

    Returns:
        The ROI heads.
    """
    return ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME)(cfg, input_shape)


def select_foreground_proposals(
    proposals: list[Instances], bg_label: int
) -> tuple[list[Instances], list[torch.Tensor]]:
    """Keep the proposals labelled with a foreground class.

    Args:
        proposals: per image, proposals with ``gt_classes`` (-1 ignored, ``bg_label``
            background).
        bg_label: the background label.

    Returns:
        Per image, the foreground proposals, and the bool mask that selected them.
    """
    fg_proposals = []
    fg_selection_masks = []
    for proposals_per_image in proposals:
        gt_classes = proposals_per_image.gt_classes
        fg_mask = (gt_classes != -1) & (gt_classes != bg_label)
        (fg_inds,) = nonzero_tuple(fg_mask)
        fg_proposals.append(proposals_per_image[fg_inds])
        fg_selection_masks.append(fg_mask)
    return fg_proposals, fg_selection_masks


class ROIHeads(nn.Module):
    """Base class of ROI heads: labels and samples the proposals used for training.

    Subclasses implement :meth:`forward`.
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        batch_size_per_image: int,
        positive_fraction: float,
        proposal_matcher: Matcher,
        proposal_append_gt: bool = True,
    ) -> None:
        """Create the heads.

        Args:
            num_classes: number of foreground classes K; K is the background label.
            batch_size_per_image: proposals sampled per image for training.
            positive_fraction: largest share of foreground among the sampled proposals.
            proposal_matcher: matches proposals to ground-truth boxes (label 1 foreground,
                0 background, -1 ignored).
            proposal_append_gt: add the ground-truth boxes to the proposals before sampling.
        """
        super().__init__()
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.num_classes = num_classes
        self.proposal_matcher = proposal_matcher
        self.proposal_append_gt = proposal_append_gt

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        """Arguments from ``cfg.MODEL.ROI_HEADS``."""
        heads = cfg.MODEL.ROI_HEADS
        return {
            "batch_size_per_image": heads.BATCH_SIZE_PER_IMAGE,
            "positive_fraction": heads.POSITIVE_FRACTION,
            "num_classes": heads.NUM_CLASSES,
            "proposal_append_gt": heads.PROPOSAL_APPEND_GT,
            "proposal_matcher": Matcher(
                heads.IOU_THRESHOLDS, heads.IOU_LABELS, allow_low_quality_matches=False
            ),
        }

    def _sample_proposals(
        self, matched_idxs: torch.Tensor, matched_labels: torch.Tensor, gt_classes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Label the proposals of one image with classes and sample them.

        Args:
            matched_idxs: (N,) index of each proposal's best ground truth.
            matched_labels: (N,) matcher labels (1, 0 or -1).
            gt_classes: (M,) classes of the ground truths.

        Returns:
            The indices of the sampled proposals, and their classes (K for background).
        """
        if gt_classes.numel() > 0:
            gt_classes = gt_classes[matched_idxs]
            gt_classes[matched_labels == 0] = self.num_classes
            gt_classes[matched_labels == -1] = -1
        else:
            gt_classes = torch.zeros_like(matched_idxs) + self.num_classes
        fg_idxs, bg_idxs = subsample_labels(
            gt_classes, self.batch_size_per_image, self.positive_fraction, self.num_classes
        )
        sampled_idxs = torch.cat([fg_idxs, bg_idxs], dim=0)
        return sampled_idxs, gt_classes[sampled_idxs]

    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: list[Instances], targets: list[Instances]
    ) -> list[Instances]:
        """Match proposals to the ground truth and sample a training batch of them per image.

        Proposals whose best IoU is at least the matcher's threshold take the class of that
        ground truth; the others are background (class K). At most ``batch_size_per_image``
        are kept, with at most ``positive_fraction`` of them foreground.

        Args:
            proposals: per image, proposals with ``proposal_boxes`` (and ``objectness_logits``).
            targets: per image, ground truth with ``gt_boxes``, ``gt_classes`` and any other
                ``gt_*`` fields (``gt_masks`` ...).

        Returns:
            Per image, the sampled proposals with ``gt_classes`` and, when the image has
            ground truth, every ``gt_*`` field of its matched ground truth (``gt_boxes`` ...).
        """
        if self.proposal_append_gt:
            proposals = add_ground_truth_to_proposals(targets, proposals)

        proposals_with_gt = []
        num_fg_samples = []
        num_bg_samples = []
        for proposals_per_image, targets_per_image in zip(proposals, targets):
            has_gt = len(targets_per_image) > 0
            match_quality_matrix = pairwise_iou(
                targets_per_image.gt_boxes, proposals_per_image.proposal_boxes
            )
            matched_idxs, matched_labels = self.proposal_matcher(match_quality_matrix)
            sampled_idxs, gt_classes = self._sample_proposals(
                matched_idxs, matched_labels, targets_per_image.gt_classes
            )
            proposals_per_image = proposals_per_image[sampled_idxs]
            proposals_per_image.gt_classes = gt_classes
            if has_gt:
                sampled_targets = matched_idxs[sampled_idxs]
                for name, value in targets_per_image.get_fields().items():
                    if name.startswith("gt_") and not proposals_per_image.has(name):
                        proposals_per_image.set(name, value[sampled_targets])

            num_bg_samples.append(int((gt_classes == self.num_classes).sum()))
            num_fg_samples.append(gt_classes.numel() - num_bg_samples[-1])
            proposals_with_gt.append(proposals_per_image)

        storage = get_event_storage()
        storage.put_scalar("roi_head/num_fg_samples", np.mean(num_fg_samples))
        storage.put_scalar("roi_head/num_bg_samples", np.mean(num_bg_samples))
        return proposals_with_gt

    def forward(
        self,
        images: ImageList,
        features: dict[str, torch.Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        """Run the heads.

        Args:
            images: the batch (unused by the standard heads, kept for the interface).
            features: backbone features by name.
            proposals: per image, proposals with ``proposal_boxes``.
            targets: per image, the ground truth (training only).

        Returns:
            In training, the sampled proposals (or an empty list) and a dict of losses; in
            inference, per image the detections and an empty dict.
        """
        raise NotImplementedError
