"""The region proposal network: ``RPN_HEAD_REGISTRY``, :class:`StandardRPNHead` and :class:`RPN`.

Follows ``detectron2.modeling.proposal_generator.rpn``: module and parameter names
(``rpn_head.conv``, ``rpn_head.objectness_logits``, ``rpn_head.anchor_deltas``), anchor order,
labelling, sampling, losses and proposal selection are Detectron2's, so its checkpoints load and
give the same proposals.
"""

from __future__ import annotations

from typing import Any

import torch
from fvcore.common.registry import Registry
from torch import nn
from torch.nn import functional as F

from segtron.config import configurable
from segtron.layers import Conv2d, ShapeSpec, cat
from segtron.modeling.anchor_generator import build_anchor_generator
from segtron.modeling.box_regression import Box2BoxTransform, _dense_box_regression_loss
from segtron.modeling.matcher import Matcher
from segtron.modeling.sampling import subsample_labels
from segtron.structures import Boxes, ImageList, Instances, pairwise_iou
from segtron.utils.events import get_event_storage

from .build import PROPOSAL_GENERATOR_REGISTRY
from .proposal_utils import find_top_rpn_proposals

__all__ = ["RPN", "RPN_HEAD_REGISTRY", "StandardRPNHead", "build_rpn_head"]

RPN_HEAD_REGISTRY = Registry("RPN_HEAD")
RPN_HEAD_REGISTRY.__doc__ = """
Registry of RPN heads, selected by ``cfg.MODEL.RPN.HEAD_NAME``.

A registered object is called as ``obj(cfg, input_shape)``, where ``input_shape`` is the list of
:class:`ShapeSpec` of the RPN's input features; it maps a list of feature maps to per-level
objectness logits ``(N, A, H, W)`` and anchor deltas ``(N, A * box_dim, H, W)``.
"""


def build_rpn_head(cfg: Any, input_shape: list[ShapeSpec]) -> nn.Module:
    """Build the RPN head named by ``cfg.MODEL.RPN.HEAD_NAME``.

    Args:
        cfg: The config.
        input_shape: The shapes of the RPN's input features.

    Returns:
        The RPN head module.
    """
    name = cfg.MODEL.RPN.HEAD_NAME
    return RPN_HEAD_REGISTRY.get(name)(cfg, input_shape)


@RPN_HEAD_REGISTRY.register()
class StandardRPNHead(nn.Module):
    """The RPN head of Faster R-CNN, shared by all feature levels.

    A 3x3 conv with ReLU (or a stack of them, ``conv.conv0``, ``conv.conv1``, ...), then two
    sibling 1x1 convs: ``objectness_logits`` (one logit per anchor) and ``anchor_deltas``
    (``box_dim`` deltas per anchor).
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        box_dim: int = 4,
        conv_dims: list[int] | tuple[int, ...] = (-1,),
    ) -> None:
        """Create the head.

        Args:
            in_channels: Channels of every input feature map.
            num_anchors: Anchors per location (the same for every level).
            box_dim: Coordinates of a box (4 for axis-aligned boxes).
            conv_dims: Output channels of each hidden 3x3 conv; -1 keeps the input channels.
                With a single entry the conv is the module ``conv`` itself, otherwise a
                ``nn.Sequential`` ``conv`` of ``conv0``, ``conv1``, ...

        Raises:
            ValueError: if a conv dim is not positive (other than -1).
        """
        super().__init__()
        cur_channels = in_channels
        if len(conv_dims) == 1:
            out_channels = cur_channels if conv_dims[0] == -1 else conv_dims[0]
            self.conv = self._get_rpn_conv(cur_channels, out_channels)
            cur_channels = out_channels
        else:
            self.conv = nn.Sequential()
            for k, conv_dim in enumerate(conv_dims):
                out_channels = cur_channels if conv_dim == -1 else conv_dim
                if out_channels <= 0:
                    raise ValueError(f"RPN conv dims must be positive or -1, got {conv_dim}.")
                self.conv.add_module(f"conv{k}", self._get_rpn_conv(cur_channels, out_channels))
                cur_channels = out_channels
        self.objectness_logits = nn.Conv2d(cur_channels, num_anchors, kernel_size=1, stride=1)
        self.anchor_deltas = nn.Conv2d(cur_channels, num_anchors * box_dim, kernel_size=1, stride=1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.constant_(layer.bias, 0)

    @staticmethod
    def _get_rpn_conv(in_channels: int, out_channels: int) -> nn.Module:
        """A 3x3 conv followed by ReLU."""
        return Conv2d(
            in_channels, out_channels, kernel_size=3, stride=1, padding=1, activation=nn.ReLU()
        )

    @classmethod
    def from_config(cls, cfg: Any, input_shape: list[ShapeSpec]) -> dict[str, Any]:
        """Channels from ``input_shape``, anchors from MODEL.ANCHOR_GENERATOR, MODEL.RPN.CONV_DIMS.

        Raises:
            ValueError: if the input levels differ in channels or in anchors per location.
        """
        in_channels = {shape.channels for shape in input_shape}
        if len(in_channels) != 1:
            raise ValueError(f"RPN head needs equal channels on every level, got {in_channels}.")
        anchor_generator = build_anchor_generator(cfg, input_shape)
        num_anchors = set(anchor_generator.num_anchors)
        if len(num_anchors) != 1:
            raise ValueError(
                f"RPN head needs the same number of anchors on every level, got {num_anchors}."
            )
        return {
            "in_channels": in_channels.pop(),
            "num_anchors": num_anchors.pop(),
            "box_dim": anchor_generator.box_dim,
            "conv_dims": cfg.MODEL.RPN.CONV_DIMS,
        }

    def forward(
        self, features: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Predict objectness logits and anchor deltas on each feature map.

        Args:
            features: ``(N, C, Hi, Wi)`` feature maps.

        Returns:
            ``(pred_objectness_logits, pred_anchor_deltas)``: per level, ``(N, A, Hi, Wi)`` and
            ``(N, A * box_dim, Hi, Wi)`` tensors.
        """
        pred_objectness_logits = []
        pred_anchor_deltas = []
        for x in features:
            t = self.conv(x)
            pred_objectness_logits.append(self.objectness_logits(t))
            pred_anchor_deltas.append(self.anchor_deltas(t))
        return pred_objectness_logits, pred_anchor_deltas


@PROPOSAL_GENERATOR_REGISTRY.register()
class RPN(nn.Module):
    """Region proposal network (Faster R-CNN): anchors, a head, losses and proposal selection."""

    @configurable
    def __init__(
        self,
        *,
        in_features: list[str],
        head: nn.Module,
        anchor_generator: nn.Module,
        anchor_matcher: Matcher,
        box2box_transform: Box2BoxTransform,
        batch_size_per_image: int,
        positive_fraction: float,
        pre_nms_topk: tuple[int, int],
        post_nms_topk: tuple[int, int],
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
        anchor_boundary_thresh: float = -1.0,
        loss_weight: float | dict[str, float] = 1.0,
        box_reg_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.0,
    ) -> None:
        """Create the RPN.

        Args:
            in_features: Names of the input features.
            head: Maps the list of features to objectness logits and anchor deltas.
            anchor_generator: Makes the anchors of the features (with ``box_dim``).
            anchor_matcher: Labels anchors as foreground (1), background (0) or ignored (-1) by
                their IoU with the ground truth.
            box2box_transform: Transform between anchors and proposal boxes.
            batch_size_per_image: Anchors sampled per image for the losses.
            positive_fraction: Largest share of foreground among the sampled anchors.
            pre_nms_topk: Proposals kept per level before NMS, ``(training, inference)``.
            post_nms_topk: Proposals kept per image after NMS, ``(training, inference)``.
            nms_thresh: IoU threshold of the NMS on proposals.
            min_box_size: Proposals must have both sides larger than this.
            anchor_boundary_thresh: Anchors reaching further than this outside the image are
                ignored in training; a negative value keeps all anchors.
            loss_weight: A weight for both losses, or a dict of weights by loss name
                (``"loss_rpn_cls"``, ``"loss_rpn_loc"``).
            box_reg_loss_type: ``"smooth_l1"``, ``"giou"``, ``"diou"`` or ``"ciou"``.
            smooth_l1_beta: Transition point of the smooth L1 loss; 0 gives the L1 loss.
        """
        super().__init__()
        self.in_features = in_features
        self.rpn_head = head
        self.anchor_generator = anchor_generator
        self.anchor_matcher = anchor_matcher
        self.box2box_transform = box2box_transform
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}
        self.post_nms_topk = {True: post_nms_topk[0], False: post_nms_topk[1]}
        self.nms_thresh = nms_thresh
        self.min_box_size = float(min_box_size)
        self.anchor_boundary_thresh = anchor_boundary_thresh
        if isinstance(loss_weight, int | float):
            loss_weight = {"loss_rpn_cls": loss_weight, "loss_rpn_loc": loss_weight}
        self.loss_weight = loss_weight
        self.box_reg_loss_type = box_reg_loss_type
        self.smooth_l1_beta = smooth_l1_beta

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Arguments from MODEL.RPN.*, MODEL.PROPOSAL_GENERATOR.MIN_SIZE and the anchor config."""
        rpn = cfg.MODEL.RPN
        in_features = list(rpn.IN_FEATURES)
        shapes = [input_shape[name] for name in in_features]
        return {
            "in_features": in_features,
            "head": build_rpn_head(cfg, shapes),
            "anchor_generator": build_anchor_generator(cfg, shapes),
            "anchor_matcher": Matcher(
                rpn.IOU_THRESHOLDS, rpn.IOU_LABELS, allow_low_quality_matches=True
            ),
            "box2box_transform": Box2BoxTransform(weights=rpn.BBOX_REG_WEIGHTS),
            "batch_size_per_image": rpn.BATCH_SIZE_PER_IMAGE,
            "positive_fraction": rpn.POSITIVE_FRACTION,
            "pre_nms_topk": (rpn.PRE_NMS_TOPK_TRAIN, rpn.PRE_NMS_TOPK_TEST),
            "post_nms_topk": (rpn.POST_NMS_TOPK_TRAIN, rpn.POST_NMS_TOPK_TEST),
            "nms_thresh": rpn.NMS_THRESH,
            "min_box_size": cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
            "anchor_boundary_thresh": rpn.BOUNDARY_THRESH,
            "loss_weight": {
                "loss_rpn_cls": rpn.LOSS_WEIGHT,
                "loss_rpn_loc": rpn.BBOX_REG_LOSS_WEIGHT * rpn.LOSS_WEIGHT,
            },
            "box_reg_loss_type": rpn.BBOX_REG_LOSS_TYPE,
            "smooth_l1_beta": rpn.SMOOTH_L1_BETA,
        }

    def _subsample_labels(self, label: torch.Tensor) -> torch.Tensor:
        """Keep a random sample of positive (1) and negative (0) labels; set the rest to -1."""
        pos_idx, neg_idx = subsample_labels(
            label, self.batch_size_per_image, self.positive_fraction, 0
        )
        label.fill_(-1)
        label.scatter_(0, pos_idx, 1)
        label.scatter_(0, neg_idx, 0)
        return label

    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: list[Boxes], gt_instances: list[Instances]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Label the anchors of each image by their matches and sample those used in the losses.

        Args:
            anchors: Anchors of each feature level (``R`` in total).
            gt_instances: Per image, the ground truth with ``gt_boxes``.

        Returns:
            ``(gt_labels, matched_gt_boxes)``: per image, ``(R,)`` labels (1 foreground,
            0 background, -1 ignored or not sampled) and the ``(R, 4)`` ground-truth box
            matched to each anchor (meaningful for foreground anchors only).
        """
        all_anchors = Boxes.cat(anchors)
        gt_labels = []
        matched_gt_boxes = []
        for instances in gt_instances:
            gt_boxes_i = instances.gt_boxes
            match_quality_matrix = pairwise_iou(gt_boxes_i, all_anchors)
            matched_idxs, gt_labels_i = self.anchor_matcher(match_quality_matrix)
            gt_labels_i = gt_labels_i.to(device=gt_boxes_i.device)
            del match_quality_matrix

            if self.anchor_boundary_thresh >= 0:
                inside = all_anchors.inside_box(instances.image_size, self.anchor_boundary_thresh)
                gt_labels_i[~inside] = -1
            gt_labels_i = self._subsample_labels(gt_labels_i)

            if len(gt_boxes_i) == 0:
                matched_gt_boxes_i = torch.zeros_like(all_anchors.tensor)
            else:
                matched_gt_boxes_i = gt_boxes_i[matched_idxs].tensor
            gt_labels.append(gt_labels_i)
            matched_gt_boxes.append(matched_gt_boxes_i)
        return gt_labels, matched_gt_boxes

    def losses(
        self,
        anchors: list[Boxes],
        pred_objectness_logits: list[torch.Tensor],
        gt_labels: list[torch.Tensor],
        pred_anchor_deltas: list[torch.Tensor],
        gt_boxes: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The RPN losses, each summed over sampled anchors and divided by the sample budget.

        Both losses are normalized by ``batch_size_per_image * num_images`` (not by the number
        of sampled anchors), then weighted by ``loss_weight``. Logs the average numbers of
        positive and negative anchors per image to the current event storage.

        Args:
            anchors: Anchors of each level.
            pred_objectness_logits: Per level, ``(N, Hi*Wi*A)`` logits.
            gt_labels: Per image, ``(R,)`` labels from :meth:`label_and_sample_anchors`.
            pred_anchor_deltas: Per level, ``(N, Hi*Wi*A, 4)`` deltas.
            gt_boxes: Per image, ``(R, 4)`` matched ground-truth boxes.

        Returns:
            ``{"loss_rpn_cls": ..., "loss_rpn_loc": ...}``.
        """
        num_images = len(gt_labels)
        labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = labels == 1
        storage = get_event_storage()
        storage.put_scalar("rpn/num_pos_anchors", pos_mask.sum().item() / num_images)
        storage.put_scalar("rpn/num_neg_anchors", (labels == 0).sum().item() / num_images)

        localization_loss = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            gt_boxes,
            pos_mask,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        valid_mask = labels >= 0
        objectness_loss = F.binary_cross_entropy_with_logits(
            cat(pred_objectness_logits, dim=1)[valid_mask],
            labels[valid_mask].to(torch.float32),
            reduction="sum",
        )
        normalizer = self.batch_size_per_image * num_images
        losses = {
            "loss_rpn_cls": objectness_loss / normalizer,
            "loss_rpn_loc": localization_loss / normalizer,
        }
        return {name: loss * self.loss_weight.get(name, 1.0) for name, loss in losses.items()}

    def forward(
        self,
        images: ImageList,
        features: dict[str, torch.Tensor],
        gt_instances: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        """Propose regions and, in training, compute the RPN losses.

        Args:
            images: The input images (only their ``image_sizes`` are used).
            features: Feature maps by name; ``in_features`` are used.
            gt_instances: Per image, the ground truth with ``gt_boxes``; required in training.

        Returns:
            ``(proposals, losses)``: per image, :class:`Instances` with ``proposal_boxes`` and
            ``objectness_logits`` sorted by decreasing objectness; the losses dict (empty in
            inference).

        Raises:
            ValueError: in training without ``gt_instances``.
        """
        feature_list = [features[name] for name in self.in_features]
        anchors = self.anchor_generator(feature_list)
        pred_objectness_logits, pred_anchor_deltas = self.rpn_head(feature_list)
        # (N, A, Hi, Wi) -> (N, Hi*Wi*A), the anchors' order.
        pred_objectness_logits = [
            score.permute(0, 2, 3, 1).flatten(1) for score in pred_objectness_logits
        ]
        # (N, A*B, Hi, Wi) -> (N, Hi*Wi*A, B).
        box_dim = self.anchor_generator.box_dim
        pred_anchor_deltas = [
            x.view(x.shape[0], -1, box_dim, x.shape[-2], x.shape[-1])
            .permute(0, 3, 4, 1, 2)
            .flatten(1, -2)
            for x in pred_anchor_deltas
        ]

        if self.training:
            if gt_instances is None:
                raise ValueError("RPN requires gt_instances in training.")
            gt_labels, gt_boxes = self.label_and_sample_anchors(anchors, gt_instances)
            losses = self.losses(
                anchors, pred_objectness_logits, gt_labels, pred_anchor_deltas, gt_boxes
            )
        else:
            losses = {}
        proposals = self.predict_proposals(
            anchors, pred_objectness_logits, pred_anchor_deltas, images.image_sizes
        )
        return proposals, losses

    def predict_proposals(
        self,
        anchors: list[Boxes],
        pred_objectness_logits: list[torch.Tensor],
        pred_anchor_deltas: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[Instances]:
        """Decode the deltas into proposals and select the best ones per image.

        Proposals are detached: Faster R-CNN does not backpropagate through proposal boxes.

        Args:
            anchors: Anchors of each level.
            pred_objectness_logits: Per level, ``(N, Hi*Wi*A)`` logits.
            pred_anchor_deltas: Per level, ``(N, Hi*Wi*A, B)`` deltas.
            image_sizes: ``(height, width)`` of each image.

        Returns:
            Per image, :class:`Instances` with ``proposal_boxes`` and ``objectness_logits``.
        """
        with torch.no_grad():
            pred_proposals = self._decode_proposals(anchors, pred_anchor_deltas)
            return find_top_rpn_proposals(
                pred_proposals,
                pred_objectness_logits,
                image_sizes,
                self.nms_thresh,
                self.pre_nms_topk[self.training],
                self.post_nms_topk[self.training],
                self.min_box_size,
                self.training,
            )

    def _decode_proposals(
        self, anchors: list[Boxes], pred_anchor_deltas: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Apply each image's deltas to the anchors: per level, ``(N, Hi*Wi*A, B)`` boxes."""
        num_images = pred_anchor_deltas[0].shape[0]
        proposals = []
        for anchors_i, deltas_i in zip(anchors, pred_anchor_deltas, strict=True):
            box_dim = anchors_i.tensor.size(1)
            deltas_i = deltas_i.reshape(-1, box_dim)
            anchors_rep = anchors_i.tensor.unsqueeze(0).expand(num_images, -1, -1)
            proposals_i = self.box2box_transform.apply_deltas(
                deltas_i, anchors_rep.reshape(-1, box_dim)
            )
            proposals.append(proposals_i.view(num_images, -1, box_dim))
        return proposals
