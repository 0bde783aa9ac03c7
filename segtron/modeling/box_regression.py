"""Box regression: the R-CNN box parametrization and the dense box regression loss.

:class:`Box2BoxTransform` encodes a target box relative to a reference box as
``(dx, dy, dw, dh)`` deltas and decodes deltas back into boxes, as
``detectron2.modeling.box_regression`` does. :func:`_dense_box_regression_loss` is the box loss
of dense heads (RPN, RetinaNet): smooth L1 on deltas, or GIoU / DIoU / CIoU on decoded boxes
(the torchvision ops).
"""

from __future__ import annotations

import math

import torch
from fvcore.nn import smooth_l1_loss
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

from segtron.layers import cat
from segtron.structures import Boxes

__all__ = ["Box2BoxTransform"]

_DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class Box2BoxTransform:
    """The R-CNN box transformation between reference boxes and target boxes.

    A target box is described relative to a reference box by the translation of its center in
    units of the reference size, ``(dx, dy)``, and the log of its size ratio, ``(dw, dh)``, each
    multiplied by a weight.
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float],
        scale_clamp: float = _DEFAULT_SCALE_CLAMP,
    ) -> None:
        """Create the transform.

        Args:
            weights: Scaling factors ``(wx, wy, ww, wh)`` applied to the ``(dx, dy, dw, dh)``
                deltas; e.g. ``(1, 1, 1, 1)`` in the RPN, ``(10, 10, 5, 5)`` in Fast R-CNN.
            scale_clamp: Upper bound of the (unweighted) ``dw`` and ``dh`` when decoding, so that
                ``exp`` cannot overflow on large predictions.
        """
        self.weights = weights
        self.scale_clamp = scale_clamp

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """Encode ``target_boxes`` relative to ``src_boxes``.

        ``apply_deltas(get_deltas(src, target), src) == target`` up to rounding.

        Args:
            src_boxes: ``(N, 4)`` reference boxes (XYXY), of positive width and height.
            target_boxes: ``(N, 4)`` target boxes (XYXY).

        Returns:
            ``(N, 4)`` deltas ``(dx, dy, dw, dh)``.
        """
        if not isinstance(src_boxes, torch.Tensor) or not isinstance(target_boxes, torch.Tensor):
            raise TypeError("get_deltas expects tensors; pass Boxes.tensor for Boxes.")
        src_widths = src_boxes[:, 2] - src_boxes[:, 0]
        src_heights = src_boxes[:, 3] - src_boxes[:, 1]
        src_ctr_x = src_boxes[:, 0] + 0.5 * src_widths
        src_ctr_y = src_boxes[:, 1] + 0.5 * src_heights

        target_widths = target_boxes[:, 2] - target_boxes[:, 0]
        target_heights = target_boxes[:, 3] - target_boxes[:, 1]
        target_ctr_x = target_boxes[:, 0] + 0.5 * target_widths
        target_ctr_y = target_boxes[:, 1] + 0.5 * target_heights

        wx, wy, ww, wh = self.weights
        dx = wx * (target_ctr_x - src_ctr_x) / src_widths
        dy = wy * (target_ctr_y - src_ctr_y) / src_heights
        dw = ww * torch.log(target_widths / src_widths)
        dh = wh * torch.log(target_heights / src_heights)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Decode ``deltas`` relative to ``boxes`` into boxes.

        Args:
            deltas: ``(N, k * 4)`` deltas, for ``k >= 1`` (e.g. one set per class);
                ``deltas[i]`` applies to ``boxes[i]``.
            boxes: ``(N, 4)`` reference boxes (XYXY).

        Returns:
            ``(N, k * 4)`` float boxes (XYXY), shaped like ``deltas``.
        """
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)

        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.scale_clamp)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]

        x1 = pred_ctr_x - 0.5 * pred_w
        y1 = pred_ctr_y - 0.5 * pred_h
        x2 = pred_ctr_x + 0.5 * pred_w
        y2 = pred_ctr_y + 0.5 * pred_h
        return torch.stack((x1, y1, x2, y2), dim=-1).reshape(deltas.shape)


_IOU_LOSSES = {
    "giou": generalized_box_iou_loss,
    "diou": distance_box_iou_loss,
    "ciou": complete_box_iou_loss,
}


def _dense_box_regression_loss(
    anchors: list[Boxes] | list[torch.Tensor],
    box2box_transform: Box2BoxTransform,
    pred_anchor_deltas: list[torch.Tensor],
    gt_boxes: list[torch.Tensor],
    fg_mask: torch.Tensor,
    box_reg_loss_type: str = "smooth_l1",
    smooth_l1_beta: float = 0.0,
) -> torch.Tensor:
    """Summed box regression loss of a dense detector over its foreground anchors.

    Args:
        anchors: Anchors of each feature level, ``Boxes`` or ``(R_l, 4)`` tensors; ``R`` in
            total.
        box2box_transform: Transform between anchors and boxes.
        pred_anchor_deltas: Predicted deltas of each level, ``(N, R_l, 4)`` for ``N`` images.
        gt_boxes: Per image, the ``(R, 4)`` ground-truth box matched to each anchor.
        fg_mask: ``(N, R)`` bool mask of the foreground anchors, the only ones in the loss.
        box_reg_loss_type: ``"smooth_l1"`` (on deltas), or ``"giou"``, ``"diou"``, ``"ciou"``
            (on the decoded boxes).
        smooth_l1_beta: Transition point of the smooth L1 loss; 0 gives the L1 loss.

    Returns:
        The loss, a scalar tensor summed (not averaged) over the foreground anchors.

    Raises:
        ValueError: for an unknown ``box_reg_loss_type``.
    """
    if isinstance(anchors[0], Boxes):
        anchors_tensor = Boxes.cat(anchors).tensor
    else:
        anchors_tensor = cat(anchors)
    pred_deltas = cat(pred_anchor_deltas, dim=1)  # (N, R, 4)
    if box_reg_loss_type == "smooth_l1":
        gt_anchor_deltas = torch.stack(
            [box2box_transform.get_deltas(anchors_tensor, boxes) for boxes in gt_boxes]
        )
        return smooth_l1_loss(
            pred_deltas[fg_mask], gt_anchor_deltas[fg_mask], beta=smooth_l1_beta, reduction="sum"
        )
    if box_reg_loss_type in _IOU_LOSSES:
        pred_boxes = torch.stack(
            [box2box_transform.apply_deltas(deltas, anchors_tensor) for deltas in pred_deltas]
        )
        return _IOU_LOSSES[box_reg_loss_type](
            pred_boxes[fg_mask], torch.stack(gt_boxes)[fg_mask], reduction="sum"
        )
    raise ValueError(f"Invalid dense box regression loss type '{box_reg_loss_type}'.")
