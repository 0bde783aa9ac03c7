"""The ROI heads of Mask R-CNN: :class:`StandardROIHeads` (FPN) and :class:`Res5ROIHeads` (C4).

:class:`StandardROIHeads` pools boxes and masks separately for its box and mask heads;
:class:`Res5ROIHeads` runs ResNet's res5 stage on the pooled regions and shares it between the
box predictor and the mask head. The registry, :func:`build_roi_heads`, :class:`ROIHeads` and
:func:`select_foreground_proposals` live in :mod:`.base` and are re-exported here, where
Detectron2 has them. Module and parameter names follow
``detectron2.modeling.roi_heads.roi_heads``, so Detectron2 checkpoints load unchanged.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from segtron.config import configurable
from segtron.layers import ShapeSpec
from segtron.modeling.backbone.resnet import ResNet
from segtron.modeling.backbone.resnet_blocks import BottleneckBlock
from segtron.modeling.poolers import ROIPooler
from segtron.structures import Boxes, ImageList, Instances

from .base import ROI_HEADS_REGISTRY, ROIHeads, build_roi_heads, select_foreground_proposals
from .box_head import build_box_head
from .fast_rcnn import FastRCNNOutputLayers
from .mask_head import build_mask_head

__all__ = [
    "ROI_HEADS_REGISTRY",
    "ROIHeads",
    "Res5ROIHeads",
    "StandardROIHeads",
    "build_roi_heads",
    "select_foreground_proposals",
]


@ROI_HEADS_REGISTRY.register()
class StandardROIHeads(ROIHeads):
    """ROI heads with their own pooling for boxes (``box_pooler``, ``box_head``,
    ``box_predictor``) and for masks (``mask_pooler``, ``mask_head``), as in FPN models.

    The mask head is trained on the foreground proposals only, and at inference it runs on
    the detections of the box branch.
    """

    @configurable
    def __init__(
        self,
        *,
        box_in_features: list[str],
        box_pooler: ROIPooler,
        box_head: nn.Module,
        box_predictor: nn.Module,
        mask_in_features: list[str] | None = None,
        mask_pooler: ROIPooler | None = None,
        mask_head: nn.Module | None = None,
        train_on_pred_boxes: bool = False,
        **kwargs: Any,
    ) -> None:
        """Create the heads.

        Args:
            box_in_features: names of the features the boxes are pooled from.
            box_pooler: pools box features.
            box_head: maps pooled features to per-region features.
            box_predictor: predicts classes and boxes, with ``losses`` and ``inference``
                (e.g. :class:`FastRCNNOutputLayers`).
            mask_in_features: names of the features masks are pooled from; None disables
                masks.
            mask_pooler: pools mask features; None gives the mask head the feature dict.
            mask_head: the mask head.
            train_on_pred_boxes: after the box losses, replace the proposal boxes by the
                predicted boxes of their ground-truth class for the mask head.
            **kwargs: arguments of :class:`ROIHeads`.
        """
        super().__init__(**kwargs)
        self.in_features = self.box_in_features = box_in_features
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor

        self.mask_on = mask_in_features is not None
        if self.mask_on:
            self.mask_in_features = mask_in_features
            self.mask_pooler = mask_pooler
            self.mask_head = mask_head
        self.train_on_pred_boxes = train_on_pred_boxes

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Arguments from the config: those of :class:`ROIHeads`, the box and mask branches."""
        ret = super().from_config(cfg)
        ret["train_on_pred_boxes"] = cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES
        # Subclasses may turn a branch off by setting its builder to None.
        if inspect.ismethod(cls._init_box_head):
            ret.update(cls._init_box_head(cfg, input_shape))
        if inspect.ismethod(cls._init_mask_head):
            ret.update(cls._init_mask_head(cfg, input_shape))
        return ret

    @classmethod
    def _init_box_head(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Build the box pooler, head and predictor from ``cfg.MODEL.ROI_BOX_HEAD``."""
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        box_cfg = cfg.MODEL.ROI_BOX_HEAD
        resolution = box_cfg.POOLER_RESOLUTION
        in_channels = _common_channels(in_features, input_shape)
        box_pooler = ROIPooler(
            output_size=resolution,
            scales=tuple(1.0 / input_shape[k].stride for k in in_features),
            sampling_ratio=box_cfg.POOLER_SAMPLING_RATIO,
            pooler_type=box_cfg.POOLER_TYPE,
        )
        box_head = build_box_head(
            cfg, ShapeSpec(channels=in_channels, height=resolution, width=resolution)
        )
        return {
            "box_in_features": in_features,
            "box_pooler": box_pooler,
            "box_head": box_head,
            "box_predictor": FastRCNNOutputLayers(cfg, box_head.output_shape),
        }

    @classmethod
    def _init_mask_head(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Build the mask pooler and head from ``cfg.MODEL.ROI_MASK_HEAD`` when MASK_ON."""
        if not cfg.MODEL.MASK_ON:
            return {}
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        mask_cfg = cfg.MODEL.ROI_MASK_HEAD
        resolution = mask_cfg.POOLER_RESOLUTION
        in_channels = _common_channels(in_features, input_shape)
        ret: dict[str, Any] = {"mask_in_features": in_features}
        if mask_cfg.POOLER_TYPE:
            ret["mask_pooler"] = ROIPooler(
                output_size=resolution,
                scales=tuple(1.0 / input_shape[k].stride for k in in_features),
                sampling_ratio=mask_cfg.POOLER_SAMPLING_RATIO,
                pooler_type=mask_cfg.POOLER_TYPE,
            )
            shape = ShapeSpec(channels=in_channels, width=resolution, height=resolution)
        else:
            ret["mask_pooler"] = None
            shape = {f: input_shape[f] for f in in_features}
        ret["mask_head"] = build_mask_head(cfg, shape)
        return ret

    def forward(
        self,
        images: ImageList,
        features: dict[str, torch.Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        """See :meth:`ROIHeads.forward`; training returns the sampled proposals."""
        del images
        if self.training:
            if targets is None:
                raise ValueError("StandardROIHeads needs targets in training")
            proposals = self.label_and_sample_proposals(proposals, targets)
            losses = self._forward_box(features, proposals)
            losses.update(self._forward_mask(features, proposals))
            return proposals, losses
        pred_instances = self._forward_box(features, proposals)
        return self.forward_with_given_boxes(features, pred_instances), {}

    def forward_with_given_boxes(
        self, features: dict[str, torch.Tensor], instances: list[Instances]
    ) -> list[Instances]:
        """Run the mask branch on given detections (inference only).

        Args:
            features: backbone features by name.
            instances: per image, detections with ``pred_boxes`` and ``pred_classes``.

        Returns:
            The instances, with ``pred_masks`` when masks are on.
        """
        if self.training:
            raise RuntimeError("forward_with_given_boxes is for inference only")
        if not (instances[0].has("pred_boxes") and instances[0].has("pred_classes")):
            raise ValueError("instances need pred_boxes and pred_classes")
        return self._forward_mask(features, instances)

    def _forward_box(
        self, features: dict[str, torch.Tensor], proposals: list[Instances]
    ) -> dict[str, torch.Tensor] | list[Instances]:
        """The box branch: losses in training, detections in inference."""
        feature_list = [features[f] for f in self.box_in_features]
        box_features = self.box_pooler(feature_list, [x.proposal_boxes for x in proposals])
        box_features = self.box_head(box_features)
        predictions = self.box_predictor(box_features)
        del box_features

        if not self.training:
            pred_instances, _ = self.box_predictor.inference(predictions, proposals)
            return pred_instances
        losses = self.box_predictor.losses(predictions, proposals)
        if self.train_on_pred_boxes:
            with torch.no_grad():
                pred_boxes = self.box_predictor.predict_boxes_for_gt_classes(predictions, proposals)
                for proposals_per_image, boxes in zip(proposals, pred_boxes):
                    proposals_per_image.proposal_boxes = Boxes(boxes)
        return losses

    def _forward_mask(
        self, features: dict[str, torch.Tensor], instances: list[Instances]
    ) -> dict[str, torch.Tensor] | list[Instances]:
        """The mask branch: ``{"loss_mask"}`` on foreground proposals, or masks added."""
        if not self.mask_on:
            return {} if self.training else instances
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
        if self.mask_pooler is not None:
            feature_list = [features[f] for f in self.mask_in_features]
            boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
            mask_features = self.mask_pooler(feature_list, boxes)
        else:
            mask_features = {f: features[f] for f in self.mask_in_features}
        return self.mask_head(mask_features, instances)


def _common_channels(in_features: list[str], input_shape: dict[str, ShapeSpec]) -> int:
    """The channel count shared by the named features (a pooler needs one)."""
    channels = {input_shape[f].channels for f in in_features}
    if len(channels) != 1:
        raise ValueError(f"ROI head input features must have equal channels, got {channels}")
    return channels.pop()


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeads(ROIHeads):
    """The ROI heads of C4 models: regions pooled from one feature (res4) go through ResNet's
    res5 stage (``res5``), shared by the box predictor (after global average pooling) and the
    mask head."""

    @configurable
    def __init__(
        self,
        *,
        in_features: list[str],
        pooler: ROIPooler,
        res5: nn.Module,
        box_predictor: nn.Module,
        mask_head: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the heads.

        Args:
            in_features: the name of the one feature regions are pooled from, in a list.
            pooler: pools region features.
            res5: the shared stage applied to pooled features.
            box_predictor: as in :class:`StandardROIHeads`.
            mask_head: the mask head, or None without masks.
            **kwargs: arguments of :class:`ROIHeads`.
        """
        super().__init__(**kwargs)
        self.in_features = in_features
        self.pooler = pooler
        self.res5 = nn.Sequential(*res5) if isinstance(res5, list | tuple) else res5
        self.box_predictor = box_predictor
        self.mask_on = mask_head is not None
        if self.mask_on:
            self.mask_head = mask_head

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Arguments from ``cfg.MODEL.ROI_HEADS``, ``ROI_BOX_HEAD``, ``RESNETS`` and the mask
        head config."""
        ret = super().from_config(cfg)
        in_features = ret["in_features"] = cfg.MODEL.ROI_HEADS.IN_FEATURES
        if len(in_features) != 1:
            raise ValueError(f"Res5ROIHeads pools from one feature, got {in_features}")
        resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        ret["pooler"] = ROIPooler(
            output_size=resolution,
            scales=(1.0 / input_shape[in_features[0]].stride,),
            sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
            pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
        )
        ret["res5"], out_channels = cls._build_res5_block(cfg)
        ret["box_predictor"] = FastRCNNOutputLayers(
            cfg, ShapeSpec(channels=out_channels, height=1, width=1)
        )
        if cfg.MODEL.MASK_ON:
            ret["mask_head"] = build_mask_head(
                cfg, ShapeSpec(channels=out_channels, width=resolution, height=resolution)
            )
        return ret

    @classmethod
    def _build_res5_block(cls, cfg: Any) -> tuple[nn.Sequential, int]:
        """ResNet's res5 stage (3 bottleneck blocks, first of stride 2) from
        ``cfg.MODEL.RESNETS``; returns it and its output channels."""
        resnets = cfg.MODEL.RESNETS
        stage_channel_factor = 2**3  # res5 has 8x the channels of res2
        bottleneck_channels = resnets.NUM_GROUPS * resnets.WIDTH_PER_GROUP * stage_channel_factor
        out_channels = resnets.RES2_OUT_CHANNELS * stage_channel_factor
        if resnets.DEFORM_ON_PER_STAGE[-1]:
            raise NotImplementedError("Deformable convolutions in Res5ROIHeads are not supported")
        blocks = ResNet.make_stage(
            BottleneckBlock,
            3,
            stride_per_block=[2, 1, 1],
            in_channels=out_channels // 2,
            bottleneck_channels=bottleneck_channels,
            out_channels=out_channels,
            num_groups=resnets.NUM_GROUPS,
            norm=resnets.NORM,
            stride_in_1x1=resnets.STRIDE_IN_1X1,
        )
        return nn.Sequential(*blocks), out_channels

    def _shared_roi_transform(
        self, features: list[torch.Tensor], boxes: list[Boxes]
    ) -> torch.Tensor:
        """Pool the boxes and run res5 on them."""
        return self.res5(self.pooler(features, boxes))

    def forward(
        self,
        images: ImageList,
        features: dict[str, torch.Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        """See :meth:`ROIHeads.forward`; training returns an empty list of proposals."""
        del images
        if self.training:
            if targets is None:
                raise ValueError("Res5ROIHeads needs targets in training")
            proposals = self.label_and_sample_proposals(proposals, targets)
        box_features = self._shared_roi_transform(
            [features[f] for f in self.in_features], [x.proposal_boxes for x in proposals]
        )
        predictions = self.box_predictor(box_features.mean(dim=[2, 3]))

        if not self.training:
            pred_instances, _ = self.box_predictor.inference(predictions, proposals)
            return self.forward_with_given_boxes(features, pred_instances), {}
        losses = self.box_predictor.losses(predictions, proposals)
        if self.mask_on:
            proposals, fg_selection_masks = select_foreground_proposals(proposals, self.num_classes)
            mask_features = box_features[torch.cat(fg_selection_masks, dim=0)]
            losses.update(self.mask_head(mask_features, proposals))
        return [], losses

    def forward_with_given_boxes(
        self, features: dict[str, torch.Tensor], instances: list[Instances]
    ) -> list[Instances]:
        """Run the mask head on given detections (inference only); see
        :meth:`StandardROIHeads.forward_with_given_boxes`."""
        if self.training:
            raise RuntimeError("forward_with_given_boxes is for inference only")
        if not self.mask_on:
            return instances
        mask_features = self._shared_roi_transform(
            [features[f] for f in self.in_features], [x.pred_boxes for x in instances]
        )
        return self.mask_head(mask_features, instances)
