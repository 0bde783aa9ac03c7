"""The Fast R-CNN box predictor: classification and box regression of each region.

Holds :class:`FastRCNNOutputLayers` (layers ``cls_score`` and ``bbox_pred``, their losses and
inference) and :func:`fast_rcnn_inference`, which turns per-region class scores and boxes into
detections (score threshold, per-class NMS, top-k). Follows
``detectron2.modeling.roi_heads.fast_rcnn``.

Shapes: R regions in a batch, K foreground classes; class K is the background.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from segtron.config import configurable
from segtron.layers import ShapeSpec, batched_nms, cat, cross_entropy, nonzero_tuple
from segtron.modeling.box_regression import Box2BoxTransform, _dense_box_regression_loss
from segtron.structures import Boxes, Instances
from segtron.utils.events import get_event_storage

__all__ = ["FastRCNNOutputLayers", "fast_rcnn_inference", "fast_rcnn_inference_single_image"]


def fast_rcnn_inference(
    boxes: list[torch.Tensor] | tuple[torch.Tensor, ...],
    scores: list[torch.Tensor] | tuple[torch.Tensor, ...],
    image_shapes: list[tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> tuple[list[Instances], list[torch.Tensor]]:
    """Turn the predictions of a batch into detections, image by image.

    Args:
        boxes: per image, (Ri, K * 4) class-specific or (Ri, 4) class-agnostic boxes.
        scores: per image, (Ri, K + 1) class probabilities, background last.
        image_shapes: per image, its (height, width); boxes are clipped to it.
        score_thresh: keep (region, class) pairs scoring more than this.
        nms_thresh: IoU threshold of the per-class NMS.
        topk_per_image: keep at most this many detections per image; negative keeps all.

    Returns:
        Per image, the detections as :class:`Instances` with ``pred_boxes``, ``scores`` and
        ``pred_classes``, by decreasing score; and per image, the index of the region each
        detection comes from.
    """
    results = [
        fast_rcnn_inference_single_image(
            boxes_per_image, scores_per_image, shape, score_thresh, nms_thresh, topk_per_image
        )
        for boxes_per_image, scores_per_image, shape in zip(boxes, scores, image_shapes)
    ]
    return [r[0] for r in results], [r[1] for r in results]


def fast_rcnn_inference_single_image(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_shape: tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> tuple[Instances, torch.Tensor]:
    """:func:`fast_rcnn_inference` for one image.

    Regions with a non-finite box or score are dropped first. The returned region indices
    count every given region; Detectron2's count only the finite ones, which differs (wrongly)
    once a region has been dropped.

    Args:
        boxes: (R, K * 4) or (R, 4) boxes.
        scores: (R, K + 1) probabilities.
        image_shape: (height, width) of the image.
        score_thresh: as in :func:`fast_rcnn_inference`.
        nms_thresh: as in :func:`fast_rcnn_inference`.
        topk_per_image: as in :func:`fast_rcnn_inference`.

    Returns:
        The detections and, for each, the index of its region among the R given.
    """
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    region_ids = torch.arange(len(boxes), device=boxes.device)
    if not valid.all():
        boxes, scores, region_ids = boxes[valid], scores[valid], region_ids[valid]

    scores = scores[:, :-1]
    num_bbox_reg_classes = boxes.shape[1] // 4
    clipped = Boxes(boxes.reshape(-1, 4))
    clipped.clip(image_shape)
    boxes = clipped.tensor.view(-1, num_bbox_reg_classes, 4)

    filter_mask = scores > score_thresh
    filter_inds = filter_mask.nonzero()
    if num_bbox_reg_classes == 1:
        boxes = boxes[filter_inds[:, 0], 0]
    else:
        boxes = boxes[filter_mask]
    scores = scores[filter_mask]

    keep = batched_nms(boxes, scores, filter_inds[:, 1], nms_thresh)
    if topk_per_image >= 0:
        keep = keep[:topk_per_image]
    boxes, scores, filter_inds = boxes[keep], scores[keep], filter_inds[keep]

    result = Instances(image_shape)
    result.pred_boxes = Boxes(boxes)
    result.scores = scores
    result.pred_classes = filter_inds[:, 1]
    return result, region_ids[filter_inds[:, 0]]


def _log_classification_stats(pred_logits: torch.Tensor, gt_classes: torch.Tensor) -> None:
    """Record the accuracy of the classifier in the current event storage.

    Args:
        pred_logits: (R, K + 1) logits.
        gt_classes: (R,) labels in [0, K].
    """
    num_instances = gt_classes.numel()
    if num_instances == 0:
        return
    pred_classes = pred_logits.argmax(dim=1)
    bg_class_ind = pred_logits.shape[1] - 1
    fg = (gt_classes >= 0) & (gt_classes < bg_class_ind)
    num_fg = int(fg.sum())
    fg_gt_classes = gt_classes[fg]
    fg_pred_classes = pred_classes[fg]
    num_false_negative = int((fg_pred_classes == bg_class_ind).sum())
    num_accurate = int((pred_classes == gt_classes).sum())
    fg_num_accurate = int((fg_pred_classes == fg_gt_classes).sum())

    storage = get_event_storage()
    storage.put_scalar("fast_rcnn/cls_accuracy", num_accurate / num_instances)
    if num_fg > 0:
        storage.put_scalar("fast_rcnn/fg_cls_accuracy", fg_num_accurate / num_fg)
        storage.put_scalar("fast_rcnn/false_negative", num_false_negative / num_fg)


class FastRCNNOutputLayers(nn.Module):
    """Two linear layers on region features: class scores ``cls_score`` and box deltas
    ``bbox_pred``.

    ``cls_score`` gives K + 1 logits (background last); ``bbox_pred`` gives 4 deltas per
    foreground class, or 4 in all when the regression is class-agnostic.

    Detectron2's federated loss and sigmoid cross-entropy (LVIS options) are not implemented;
    asking for them in the config raises ``NotImplementedError``.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        box2box_transform: Box2BoxTransform,
        num_classes: int,
        test_score_thresh: float = 0.0,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
        cls_agnostic_bbox_reg: bool = False,
        smooth_l1_beta: float = 0.0,
        box_reg_loss_type: str = "smooth_l1",
        loss_weight: float | dict[str, float] = 1.0,
    ) -> None:
        """Create the layers.

        Args:
            input_shape: shape of the per-region features; they are flattened.
            box2box_transform: how deltas map proposals to boxes.
            num_classes: number of foreground classes K.
            test_score_thresh: at inference, keep detections scoring more than this.
            test_nms_thresh: IoU threshold of the per-class NMS at inference.
            test_topk_per_image: at most this many detections per image (negative: all).
            cls_agnostic_bbox_reg: predict one box per region instead of one per class.
            smooth_l1_beta: transition point of the smooth L1 loss (0 gives L1).
            box_reg_loss_type: "smooth_l1", "giou", "diou" or "ciou".
            loss_weight: one weight for both losses, or a dict of weights by loss name
                ("loss_cls", "loss_box_reg"; missing ones are 1).
        """
        super().__init__()
        if isinstance(input_shape, int):
            input_shape = ShapeSpec(channels=input_shape)
        self.num_classes = num_classes
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        self.cls_score = nn.Linear(input_size, num_classes + 1)
        num_bbox_reg_classes = 1 if cls_agnostic_bbox_reg else num_classes
        box_dim = len(box2box_transform.weights)
        self.bbox_pred = nn.Linear(input_size, num_bbox_reg_classes * box_dim)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.constant_(layer.bias, 0)

        self.box2box_transform = box2box_transform
        self.smooth_l1_beta = smooth_l1_beta
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image
        self.box_reg_loss_type = box_reg_loss_type
        if isinstance(loss_weight, float | int):
            loss_weight = {"loss_cls": float(loss_weight), "loss_box_reg": float(loss_weight)}
        self.loss_weight = loss_weight

    @classmethod
    def from_config(cls, cfg: Any, input_shape: ShapeSpec) -> dict[str, Any]:
        """Arguments from ``cfg.MODEL.ROI_HEADS``, ``cfg.MODEL.ROI_BOX_HEAD`` and ``cfg.TEST``.

        Raises:
            NotImplementedError: when the config asks for the federated loss or sigmoid
                cross-entropy.
        """
        box_head = cfg.MODEL.ROI_BOX_HEAD
        if box_head.USE_FED_LOSS or box_head.USE_SIGMOID_CE:
            raise NotImplementedError(
                "ROI_BOX_HEAD.USE_FED_LOSS and ROI_BOX_HEAD.USE_SIGMOID_CE are not supported"
            )
        return {
            "input_shape": input_shape,
            "box2box_transform": Box2BoxTransform(weights=box_head.BBOX_REG_WEIGHTS),
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "cls_agnostic_bbox_reg": box_head.CLS_AGNOSTIC_BBOX_REG,
            "smooth_l1_beta": box_head.SMOOTH_L1_BETA,
            "test_score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            "test_nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "box_reg_loss_type": box_head.BBOX_REG_LOSS_TYPE,
            "loss_weight": {"loss_box_reg": box_head.BBOX_REG_LOSS_WEIGHT},
        }

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict class logits and box deltas.

        Args:
            x: (R, ...) per-region features, flattened from dimension 1.

        Returns:
            (R, K + 1) class logits and (R, K * 4) or (R, 4) box deltas.
        """
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)

    def losses(
        self, predictions: tuple[torch.Tensor, torch.Tensor], proposals: list[Instances]
    ) -> dict[str, torch.Tensor]:
        """Classification and box regression losses.

        Args:
            predictions: the output of :meth:`forward`.
            proposals: per image, the sampled proposals with ``proposal_boxes`` and
                ``gt_classes``, and ``gt_boxes`` when the image has objects.

        Returns:
            ``loss_cls``: cross-entropy averaged over the regions; ``loss_box_reg``: the box
            loss summed over foreground regions and divided by the number of regions.
        """
        scores, proposal_deltas = predictions
        gt_classes = (
            cat([p.gt_classes for p in proposals], dim=0)
            if len(proposals)
            else torch.empty(0, dtype=torch.int64, device=scores.device)
        )
        _log_classification_stats(scores, gt_classes)

        if len(proposals):
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat(
                [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals],
                dim=0,
            )
        else:
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=proposal_deltas.device)

        losses = {
            "loss_cls": cross_entropy(scores, gt_classes, reduction="mean"),
            "loss_box_reg": self.box_reg_loss(
                proposal_boxes, gt_boxes, proposal_deltas, gt_classes
            ),
        }
        return {name: loss * self.loss_weight.get(name, 1.0) for name, loss in losses.items()}

    def box_reg_loss(
        self,
        proposal_boxes: torch.Tensor,
        gt_boxes: torch.Tensor,
        pred_deltas: torch.Tensor,
        gt_classes: torch.Tensor,
    ) -> torch.Tensor:
        """Box regression loss of the foreground regions, normalized by the number of regions.

        Args:
            proposal_boxes: (R, 4) proposals.
            gt_boxes: (R, 4) matched ground-truth boxes.
            pred_deltas: (R, K * 4) or (R, 4) predicted deltas.
            gt_classes: (R,) labels; background K and ignored -1 regions are left out.

        Returns:
            A scalar: the summed loss divided by max(R, 1), as in Detectron2 (all regions
            count, so the loss weighs foreground in proportion to its share of the batch).
        """
        box_dim = proposal_boxes.shape[1]
        (fg_inds,) = nonzero_tuple((gt_classes >= 0) & (gt_classes < self.num_classes))
        if pred_deltas.shape[1] == box_dim:
            fg_pred_deltas = pred_deltas[fg_inds]
        else:
            fg_pred_deltas = pred_deltas.view(-1, self.num_classes, box_dim)[
                fg_inds, gt_classes[fg_inds]
            ]
        loss_box_reg = _dense_box_regression_loss(
            [proposal_boxes[fg_inds]],
            self.box2box_transform,
            [fg_pred_deltas.unsqueeze(0)],
            [gt_boxes[fg_inds]],
            torch.ones((1, len(fg_inds)), dtype=torch.bool, device=pred_deltas.device),
            self.box_reg_loss_type,
            self.smooth_l1_beta,
        )
        return loss_box_reg / max(gt_classes.numel(), 1.0)

    def inference(
        self, predictions: tuple[torch.Tensor, torch.Tensor], proposals: list[Instances]
    ) -> tuple[list[Instances], list[torch.Tensor]]:
        """Detections of each image from the predictions on its proposals.

        Args:
            predictions: the output of :meth:`forward`.
            proposals: per image, the proposals with ``proposal_boxes``.

        Returns:
            As :func:`fast_rcnn_inference`, with this module's test thresholds and top-k.
        """
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        image_shapes = [p.image_size for p in proposals]
        return fast_rcnn_inference(
            boxes,
            scores,
            image_shapes,
            self.test_score_thresh,
            self.test_nms_thresh,
            self.test_topk_per_image,
        )

    def predict_boxes_for_gt_classes(
        self, predictions: tuple[torch.Tensor, torch.Tensor], proposals: list[Instances]
    ) -> list[torch.Tensor]:
        """The box each region predicts for its ground-truth class.

        Args:
            predictions: the output of :meth:`forward`.
            proposals: per image, proposals with ``proposal_boxes`` and ``gt_classes``.

        Returns:
            Per image, (Ri, 4) boxes; background regions get the box of class 0 (clamped).
        """
        if not len(proposals):
            return []
        _, proposal_deltas = predictions
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        boxes = self.box2box_transform.apply_deltas(proposal_deltas, proposal_boxes)
        num_classes = boxes.shape[1] // proposal_boxes.shape[1]
        if num_classes > 1:
            gt_classes = cat([p.gt_classes for p in proposals], dim=0)
            gt_classes = gt_classes.clamp(0, num_classes - 1)
            boxes = boxes.view(len(boxes), num_classes, -1)[
                torch.arange(len(boxes), device=boxes.device), gt_classes
            ]
        return list(boxes.split([len(p) for p in proposals]))

    def predict_boxes(
        self, predictions: tuple[torch.Tensor, torch.Tensor], proposals: list[Instances]
    ) -> tuple[torch.Tensor, ...] | list[torch.Tensor]:
        """Decode the predicted deltas into boxes.

        Args:
            predictions: the output of :meth:`forward`.
            proposals: per image, the proposals with ``proposal_boxes``.

        Returns:
            Per image, (Ri, K * 4) or (Ri, 4) boxes.
        """
        if not len(proposals):
            return []
        _, proposal_deltas = predictions
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        boxes = self.box2box_transform.apply_deltas(proposal_deltas, proposal_boxes)
        return boxes.split([len(p) for p in proposals])

    def predict_probs(
        self, predictions: tuple[torch.Tensor, torch.Tensor], proposals: list[Instances]
    ) -> tuple[torch.Tensor, ...]:
        """Softmax class probabilities of each region.

        Args:
            predictions: the output of :meth:`forward`.
            proposals: per image, the proposals (only their number is used).

        Returns:
            Per image, (Ri, K + 1) probabilities.
        """
        scores, _ = predictions
        return F.softmax(scores, dim=-1).split([len(p) for p in proposals], dim=0)
