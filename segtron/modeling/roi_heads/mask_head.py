"""Mask heads of Mask R-CNN: per-region mask prediction, its loss and its inference.

Holds ``ROI_MASK_HEAD_REGISTRY``, :func:`build_mask_head`, :class:`BaseMaskRCNNHead`,
:class:`MaskRCNNConvUpsampleHead` (submodules ``mask_fcn1 ...``, ``deconv``, ``predictor`` as in
Detectron2), :func:`mask_rcnn_loss` and :func:`mask_rcnn_inference`. Follows
``detectron2.modeling.roi_heads.mask_head``.
"""

from __future__ import annotations

from typing import Any

import torch
from fvcore.common.registry import Registry
from torch import nn
from torch.nn import functional as F

from segtron.config import configurable
from segtron.layers import Conv2d, ConvTranspose2d, ShapeSpec, cat, get_norm
from segtron.layers.weight_init import c2_msra_fill
from segtron.structures import Instances
from segtron.utils.events import get_event_storage

__all__ = [
    "ROI_MASK_HEAD_REGISTRY",
    "BaseMaskRCNNHead",
    "MaskRCNNConvUpsampleHead",
    "build_mask_head",
    "mask_rcnn_inference",
    "mask_rcnn_loss",
]

ROI_MASK_HEAD_REGISTRY = Registry("ROI_MASK_HEAD")
ROI_MASK_HEAD_REGISTRY.__doc__ = """
Registry of mask heads, selected by ``cfg.MODEL.ROI_MASK_HEAD.NAME``.

A registered object is called as ``obj(cfg, input_shape)`` and returns a module called as
``head(features, instances)``: a dict ``{"loss_mask": ...}`` in training, the instances with
``pred_masks`` added in inference.
"""


def mask_rcnn_loss(
    pred_mask_logits: torch.Tensor, instances: list[Instances], vis_period: int = 0
) -> torch.Tensor:
    """Binary cross-entropy between predicted mask logits and ground-truth masks.

    Each region's target is its ground-truth mask (``PolygonMasks`` or ``BitMasks``) cropped to
    the proposal box and resized to M × M with ``crop_and_resize``; only the channel of the
    region's ground-truth class is used (or the single channel of a class-agnostic head).

    Args:
        pred_mask_logits: (R, C, M, M) logits, C = K classes or 1 (class-agnostic), for the
            foreground regions of all images in order.
        instances: per image, the foreground proposals with ``proposal_boxes``, ``gt_classes``
            and ``gt_masks``.
        vis_period: every ``vis_period`` iterations, put predicted and target masks side by
            side in the event storage as images; 0 disables it.

    Returns:
        The mean loss over all pixels of all regions; a zero connected to the graph when there
        are no regions.
    """
    cls_agnostic_mask = pred_mask_logits.size(1) == 1
    total_num_masks = pred_mask_logits.size(0)
    mask_side_len = pred_mask_logits.size(2)
    if pred_mask_logits.size(2) != pred_mask_logits.size(3):
        raise ValueError("Mask predictions must be square")

    gt_classes = []
    gt_masks = []
    for instances_per_image in instances:
        if len(instances_per_image) == 0:
            continue
        if not cls_agnostic_mask:
            gt_classes.append(instances_per_image.gt_classes.to(dtype=torch.int64))
        gt_masks.append(
            instances_per_image.gt_masks.crop_and_resize(
                instances_per_image.proposal_boxes.tensor, mask_side_len
            ).to(device=pred_mask_logits.device)
        )
    if len(gt_masks) == 0:
        return pred_mask_logits.sum() * 0

    gt_masks = cat(gt_masks, dim=0)
    if cls_agnostic_mask:
        pred_mask_logits = pred_mask_logits[:, 0]
    else:
        indices = torch.arange(total_num_masks, device=pred_mask_logits.device)
        pred_mask_logits = pred_mask_logits[indices, cat(gt_classes)]

    gt_masks_bool = gt_masks if gt_masks.dtype == torch.bool else gt_masks > 0.5
    gt_masks = gt_masks.to(dtype=torch.float32)

    predicted_fg = pred_mask_logits > 0.0
    num_positive = gt_masks_bool.sum().item()
    num_negative = gt_masks_bool.numel() - num_positive
    storage = get_event_storage()
    storage.put_scalar(
        "mask_rcnn/accuracy", (predicted_fg == gt_masks_bool).sum().item() / gt_masks.numel()
    )
    storage.put_scalar(
        "mask_rcnn/false_positive",
        (predicted_fg & ~gt_masks_bool).sum().item() / max(num_negative, 1.0),
    )
    storage.put_scalar(
        "mask_rcnn/false_negative",
        (~predicted_fg & gt_masks_bool).sum().item() / max(num_positive, 1.0),
    )
    if vis_period > 0 and storage.iter % vis_period == 0:
        side_by_side = torch.cat([pred_mask_logits.detach().sigmoid(), gt_masks], dim=2)
        name = "Left: mask prediction;   Right: mask GT"
        for idx, vis_mask in enumerate(side_by_side):
            storage.put_image(f"{name} ({idx})", vis_mask[None].expand(3, -1, -1).cpu())

    return F.binary_cross_entropy_with_logits(pred_mask_logits, gt_masks, reduction="mean")


def mask_rcnn_inference(pred_mask_logits: torch.Tensor, pred_instances: list[Instances]) -> None:
    """Add ``pred_masks`` to the predicted instances: the probabilities of the predicted class.

    Args:
        pred_mask_logits: (R, C, M, M) logits for the detections of all images in order.
        pred_instances: per image, the detections with ``pred_classes``; each gets
            ``pred_masks``, an (Ri, 1, M, M) tensor of probabilities, in place.
    """
    if pred_mask_logits.size(1) == 1:
        mask_probs_pred = pred_mask_logits.sigmoid()
    else:
        class_pred = cat([i.pred_classes for i in pred_instances])
        indices = torch.arange(pred_mask_logits.shape[0], device=pred_mask_logits.device)
        mask_probs_pred = pred_mask_logits[indices, class_pred.to(indices.device)][:, None]
        mask_probs_pred = mask_probs_pred.sigmoid()
    per_image = mask_probs_pred.split([len(i) for i in pred_instances], dim=0)
    for probs, instances in zip(per_image, pred_instances):
        instances.pred_masks = probs


class BaseMaskRCNNHead(nn.Module):
    """A mask head with Mask R-CNN's loss and inference; subclasses define :meth:`layers`."""

    @configurable
    def __init__(self, *, loss_weight: float = 1.0, vis_period: int = 0) -> None:
        """Create the head.

        Args:
            loss_weight: multiplier of the mask loss.
            vis_period: see :func:`mask_rcnn_loss`.
        """
        super().__init__()
        self.loss_weight = loss_weight
        self.vis_period = vis_period

    @classmethod
    def from_config(cls, cfg: Any, input_shape: ShapeSpec) -> dict[str, Any]:
        """Arguments from the config (``VIS_PERIOD``)."""
        return {"vis_period": cfg.VIS_PERIOD}

    def forward(
        self, x: torch.Tensor, instances: list[Instances]
    ) -> dict[str, torch.Tensor] | list[Instances]:
        """Predict masks, then compute the loss (training) or attach ``pred_masks``.

        Args:
            x: (R, C, H, W) region features.
            instances: per image, the foreground proposals (training) or detections.

        Returns:
            ``{"loss_mask": loss}`` in training; the instances with ``pred_masks`` otherwise.
        """
        x = self.layers(x)
        if self.training:
            return {"loss_mask": mask_rcnn_loss(x, instances, self.vis_period) * self.loss_weight}
        mask_rcnn_inference(x, instances)
        return instances

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """Map region features to (R, C, M, M) mask logits."""
        raise NotImplementedError


@ROI_MASK_HEAD_REGISTRY.register()
class MaskRCNNConvUpsampleHead(BaseMaskRCNNHead, nn.Sequential):
    """3×3 convolutions ``mask_fcn1 ...`` (ReLU), a 2× transposed convolution ``deconv`` (ReLU)
    and a 1×1 ``predictor`` with one output channel per class (or one, class-agnostic)."""

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: list[int],
        conv_norm: str = "",
        **kwargs: Any,
    ) -> None:
        """Create the head.

        Args:
            input_shape: channels of the region features.
            num_classes: output channels of the predictor (1 for class-agnostic masks).
            conv_dims: channels of each 3×3 convolution, then of the transposed convolution
                (the last entry); at least one entry.
            conv_norm: normalization after each 3×3 convolution.
            **kwargs: arguments of :class:`BaseMaskRCNNHead`.

        Raises:
            ValueError: when ``conv_dims`` is empty.
        """
        super().__init__(**kwargs)
        if len(conv_dims) < 1:
            raise ValueError("conv_dims must have at least one entry (the deconv's channels)")
        self.conv_norm_relus: list[Conv2d] = []
        cur_channels = input_shape.channels
        for k, conv_dim in enumerate(conv_dims[:-1]):
            conv = Conv2d(
                cur_channels,
                conv_dim,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=not conv_norm,
                norm=get_norm(conv_norm, conv_dim),
                activation=nn.ReLU(),
            )
            self.add_module(f"mask_fcn{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            cur_channels = conv_dim
        self.deconv = ConvTranspose2d(cur_channels, conv_dims[-1], kernel_size=2, stride=2)
        self.add_module("deconv_relu", nn.ReLU())
        self.predictor = Conv2d(conv_dims[-1], num_classes, kernel_size=1)

        for layer in [*self.conv_norm_relus, self.deconv]:
            c2_msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: ShapeSpec) -> dict[str, Any]:
        """Arguments from ``cfg.MODEL.ROI_MASK_HEAD`` (NUM_CONV, CONV_DIM, NORM,
        CLS_AGNOSTIC_MASK) and ``cfg.MODEL.ROI_HEADS.NUM_CLASSES``."""
        ret = super().from_config(cfg, input_shape)
        head = cfg.MODEL.ROI_MASK_HEAD
        ret.update(
            input_shape=input_shape,
            conv_dims=[head.CONV_DIM] * (head.NUM_CONV + 1),
            conv_norm=head.NORM,
            num_classes=1 if head.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        )
        return ret

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the convolutions, the upsampling and the predictor in order."""
        for layer in self:
            x = layer(x)
        return x


def build_mask_head(cfg: Any, input_shape: ShapeSpec) -> nn.Module:
    """Build the mask head named by ``cfg.MODEL.ROI_MASK_HEAD.NAME``.

    Args:
        cfg: a config node.
        input_shape: shape of the region features.

    Returns:
        The mask head.
    """
    return ROI_MASK_HEAD_REGISTRY.get(cfg.MODEL.ROI_MASK_HEAD.NAME)(cfg, input_shape)
