"""The SOLOv2 and SOLO meta-architectures (registered in ``META_ARCH_REGISTRY``).

SOLOv2 (Wang et al., 2020) segments objects by location: each cell of an S×S grid over the
image predicts category scores and, for SOLOv2, a dynamic 1×1 kernel that turns the unified
mask features into the mask of the object centred there; SOLO (v1) predicts the S² masks of a
level directly. Names, config keys and defaults are AdelaiDet's (``MODEL.SOLOV2.*``), so its
configs and checkpoints load; unlike AdelaiDet, ``pred_boxes`` are the boxes around the
predicted masks, so box AP is meaningful.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import sigmoid_focal_loss

from segtron.config import configurable
from segtron.layers import move_device_like
from segtron.modeling import META_ARCH_REGISTRY
from segtron.modeling.backbone import Backbone, build_backbone
from segtron.structures import Boxes, ImageList, Instances

from .heads import SOLOMaskHead, SOLOv2InsHead, SOLOv2MaskHead
from .inference import InferenceParams, cell_strides, solo_inference_single
from .matrix_nms import point_nms
from .targets import MASK_STRIDE, downsample_masks, get_level_targets, gt_bitmasks

__all__ = ["SOLO", "SOLOv2", "dice_loss"]


def dice_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 − Dice coefficient per mask, with 0.001 added to each denominator term (AdelaiDet).

    Args:
        probs: (P, H, W) mask probabilities.
        targets: (P, H, W) 0/1 masks.

    Returns:
        (P,) losses.
    """
    probs, targets = probs.flatten(1), targets.flatten(1).float()
    inter = (probs * targets).sum(dim=1)
    return 1 - 2 * inter / (
        (probs * probs).sum(dim=1) + 0.001 + (targets * targets).sum(dim=1) + 0.001
    )


def _check_config(cfg: Any, shapes: dict) -> None:
    """Raise a ValueError naming the ``MODEL.SOLOV2`` keys that do not fit together."""
    s = cfg.MODEL.SOLOV2
    lengths = {
        "INSTANCE_IN_FEATURES": len(s.INSTANCE_IN_FEATURES),
        "FPN_INSTANCE_STRIDES": len(s.FPN_INSTANCE_STRIDES),
        "NUM_GRIDS": len(s.NUM_GRIDS),
        "FPN_SCALE_RANGES": len(s.FPN_SCALE_RANGES),
    }
    if len(set(lengths.values())) != 1 or lengths["NUM_GRIDS"] < 2:
        raise ValueError(
            f"MODEL.SOLOV2 needs one entry per instance level (at least 2) in each of {lengths}."
        )
    for key, channels in (("INSTANCE", s.INSTANCE_IN_CHANNELS), ("MASK", s.MASK_IN_CHANNELS)):
        for name in s[f"{key}_IN_FEATURES"]:
            if name not in shapes:
                raise ValueError(
                    f"MODEL.SOLOV2.{key}_IN_FEATURES has {name!r}, not an output of the backbone "
                    f"({list(shapes)}); check MODEL.BACKBONE.NAME / MODEL.FPN.IN_FEATURES."
                )
            if shapes[name].channels != channels:
                raise ValueError(
                    f"MODEL.SOLOV2.{key}_IN_CHANNELS is {channels} but backbone feature {name!r} "
                    f"has {shapes[name].channels} channels (MODEL.FPN.OUT_CHANNELS)."
                )
    mask_strides = [shapes[name].stride for name in s.MASK_IN_FEATURES]
    if mask_strides != [MASK_STRIDE * 2**i for i in range(len(mask_strides))]:
        raise ValueError(
            f"MODEL.SOLOV2.MASK_IN_FEATURES must have strides 4, 8, 16, ...; got {mask_strides}."
        )
    if s.USE_DCN_IN_INSTANCE:
        raise ValueError("MODEL.SOLOV2.USE_DCN_IN_INSTANCE True is not supported; set it False.")
    if not s.LOSS.FOCAL_USE_SIGMOID:
        raise ValueError("MODEL.SOLOV2.LOSS.FOCAL_USE_SIGMOID False is not supported.")


@META_ARCH_REGISTRY.register()
class SOLOv2(nn.Module):
    """SOLOv2: a backbone, an instance head (categories, kernels) and a mask-feature head.

    Module names are AdelaiDet's: ``backbone``, ``ins_head``, ``mask_head``. Training returns
    ``loss_ins`` (dice, over positive cells) and ``loss_cate`` (sigmoid focal loss, summed
    over cells and classes, divided by the number of positive cells + 1).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        ins_head: nn.Module,
        mask_head: nn.Module,
        instance_in_features: Sequence[str],
        mask_in_features: Sequence[str],
        num_classes: int,
        num_grids: Sequence[int],
        instance_strides: Sequence[int],
        scale_ranges: Sequence[Sequence[float]],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        sigma: float = 0.2,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        focal_weight: float = 1.0,
        dice_weight: float = 3.0,
        inference_params: InferenceParams | None = None,
    ) -> None:
        """Create the model.

        Args:
            backbone: the feature extractor (a ResNet-FPN with P2–P6 by default).
            ins_head: a :class:`SOLOv2InsHead`.
            mask_head: a :class:`SOLOv2MaskHead` (a :class:`SOLOMaskHead` for :class:`SOLO`).
            instance_in_features: backbone features of the instance levels, finest first; the
                first is downsampled 2×, the last resized to the size of the one before.
            mask_in_features: backbone features of the mask head, strides 4, 8, ...
            num_classes: foreground classes.
            num_grids: S of each instance level.
            instance_strides: stride of each instance level (masks of at most that many
                pixels are dropped at inference).
            scale_ranges: (low, high) object scale sqrt(w·h) of each level.
            pixel_mean: per-channel mean subtracted from the input images.
            pixel_std: per-channel standard deviation the input images are divided by.
            sigma: centre-region fraction of the box half-sizes.
            focal_alpha: α of the focal loss.
            focal_gamma: γ of the focal loss.
            focal_weight: weight of ``loss_cate``.
            dice_weight: weight of ``loss_ins``.
            inference_params: thresholds and limits of inference; None for AdelaiDet's
                defaults.
        """
        super().__init__()
        self.backbone = backbone
        self.ins_head = ins_head
        self.mask_head = mask_head
        self.instance_in_features = tuple(instance_in_features)
        self.mask_in_features = tuple(mask_in_features)
        self.num_classes = num_classes
        self.num_grids = tuple(num_grids)
        self.scale_ranges = tuple(tuple(r) for r in scale_ranges)
        self.sigma = sigma
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.focal_weight, self.dice_weight = focal_weight, dice_weight
        self.inference_params = inference_params or InferenceParams()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.register_buffer("cell_strides", cell_strides(num_grids, instance_strides), False)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        """Build from ``MODEL.SOLOV2.*``, ``MODEL.BACKBONE`` and ``MODEL.PIXEL_*``."""
        backbone = build_backbone(cfg)
        _check_config(cfg, backbone.output_shape())
        s = cfg.MODEL.SOLOV2
        ins_head, mask_head = cls._build_heads(cfg)
        return {
            "backbone": backbone,
            "ins_head": ins_head,
            "mask_head": mask_head,
            "instance_in_features": s.INSTANCE_IN_FEATURES,
            "mask_in_features": s.MASK_IN_FEATURES,
            "num_classes": s.NUM_CLASSES,
            "num_grids": s.NUM_GRIDS,
            "instance_strides": s.FPN_INSTANCE_STRIDES,
            "scale_ranges": s.FPN_SCALE_RANGES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "sigma": s.SIGMA,
            "focal_alpha": s.LOSS.FOCAL_ALPHA,
            "focal_gamma": s.LOSS.FOCAL_GAMMA,
            "focal_weight": s.LOSS.FOCAL_WEIGHT,
            "dice_weight": s.LOSS.DICE_WEIGHT,
            "inference_params": InferenceParams(
                score_thr=s.SCORE_THR,
                mask_thr=s.MASK_THR,
                update_thr=s.UPDATE_THR,
                nms_pre=s.NMS_PRE,
                max_per_img=s.MAX_PER_IMG,
                nms_type=s.NMS_TYPE,
                nms_kernel=s.NMS_KERNEL,
                nms_sigma=float(s.NMS_SIGMA),
            ),
        }

    @classmethod
    def _build_heads(cls, cfg: Any) -> tuple[nn.Module, nn.Module]:
        s = cfg.MODEL.SOLOV2
        ins_head = SOLOv2InsHead(
            in_channels=s.INSTANCE_IN_CHANNELS,
            num_classes=s.NUM_CLASSES,
            num_kernels=s.NUM_KERNELS,
            num_grids=s.NUM_GRIDS,
            channels=s.INSTANCE_CHANNELS,
            num_convs=s.NUM_INSTANCE_CONVS,
            norm=s.NORM,
            use_coord_conv=s.USE_COORD_CONV,
            prior_prob=s.PRIOR_PROB,
        )
        mask_head = SOLOv2MaskHead(
            in_channels=s.MASK_IN_CHANNELS,
            num_levels=len(s.MASK_IN_FEATURES),
            channels=s.MASK_CHANNELS,
            num_masks=s.NUM_MASKS,
            norm=s.NORM,
        )
        return ins_head, mask_head

    @property
    def device(self) -> torch.device:
        """The device the model's tensors are on."""
        return self.pixel_mean.device

    # ---- the network --------------------------------------------------------------------

    def preprocess_image(self, batched_inputs: list[dict[str, Any]]) -> ImageList:
        """Normalize the images and pad them to the backbone's size divisibility."""
        images = [move_device_like(x["image"], self.pixel_mean) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        return ImageList.from_tensors(
            images,
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )

    @staticmethod
    def split_feats(features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """AdelaiDet's level resizing: the first level 2× smaller, the last at the size of the
        one before it (P2 → stride 8, P6 → P5's size)."""
        out = list(features)
        out[0] = F.interpolate(out[0], scale_factor=0.5, mode="bilinear", align_corners=False)
        out[-1] = F.interpolate(out[-1], size=out[-2].shape[-2:], mode="bilinear")
        return out

    def _network(self, images: torch.Tensor) -> tuple[list, list | None, Any]:
        """(cate_preds, kernel_preds, mask_outputs) of a padded, normalized batch."""
        features = self.backbone(images)
        ins_features = self.split_feats([features[f] for f in self.instance_in_features])
        cate_preds, kernel_preds = self.ins_head(ins_features)
        mask_out = self.mask_head([features[f] for f in self.mask_in_features])
        return cate_preds, kernel_preds, mask_out

    def _mask_logits(
        self,
        image: int,
        level: int | None,
        cells: torch.Tensor,
        kernel_preds: list[torch.Tensor] | None,
        mask_out: torch.Tensor,
    ) -> torch.Tensor:
        """(K, h, w) mask logits at 1/4 scale of cells of one image.

        SOLOv2: dynamic 1×1 convolutions of the mask features with the cells' kernels.
        `cells` index the cells of `level`, or of all levels concatenated when it is None.
        """
        if level is None:
            kernels = torch.cat([k[image].flatten(1) for k in kernel_preds], dim=1)
        else:
            kernels = kernel_preds[level][image].flatten(1)
        features = mask_out[image]
        logits = kernels[:, cells].t() @ features.flatten(1)
        return logits.view(-1, *features.shape[-2:])

    def _mask_feat_size(self, mask_out: Any) -> tuple[int, int]:
        """(height, width) of the masks at 1/4 of the padded input."""
        return tuple(mask_out.shape[-2:])

    # ---- forward and losses ----------------------------------------------------------------

    def forward(
        self, batched_inputs: list[dict[str, Any]]
    ) -> dict[str, torch.Tensor] | list[dict[str, Instances]]:
        """Segment a batch of images, or compute the training losses.

        Args:
            batched_inputs: one dict per image (the output of ``DatasetMapper``) with
                "image": a (C, H, W) tensor in the config's INPUT.FORMAT, 0-255;
                "instances" (training): ground truth with gt_boxes, gt_classes, gt_masks;
                "height", "width" (optional): the output size, by default the image's.

        Returns:
            In training, ``{"loss_ins", "loss_cate"}``. In inference, one dict per image with
            "instances": pred_masks ((K, height, width) bool), scores, pred_classes and
            pred_boxes (the boxes around the masks).

        Raises:
            ValueError: in training, when the inputs have no "instances" or no masks.
        """
        images = self.preprocess_image(batched_inputs)
        if self.training and "instances" not in batched_inputs[0]:
            raise ValueError(
                f"{type(self).__name__} needs ground-truth 'instances' in every input dict in "
                "training; use a mapper that reads annotations (e.g. DatasetMapper)."
            )
        cate_preds, kernel_preds, mask_out = self._network(images.tensor)
        if self.training:
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            size = self._mask_feat_size(mask_out)
            return self.losses(gt_instances, cate_preds, kernel_preds, mask_out, size)
        results = []
        for i, (inputs, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            output_size = (inputs.get("height", image_size[0]), inputs.get("width", image_size[1]))
            masks, scores, classes, boxes = self.inference_single(
                i, cate_preds, kernel_preds, mask_out, image_size, output_size
            )
            instances = Instances(output_size)
            instances.pred_masks = masks
            instances.scores = scores
            instances.pred_classes = classes
            instances.pred_boxes = Boxes(boxes)
            results.append({"instances": instances})
        return results

    def losses(
        self,
        gt_instances: list[Instances],
        cate_preds: list[torch.Tensor],
        kernel_preds: list[torch.Tensor] | None,
        mask_out: Any,
        mask_feat_size: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        """The dice loss of the masks of positive cells and the focal loss of all cells."""
        full_masks = [gt_bitmasks(x) for x in gt_instances]
        small_masks = [downsample_masks(m, mask_feat_size) for m in full_masks]
        targets = get_level_targets(
            gt_instances,
            full_masks,
            small_masks,
            mask_feat_size,
            self.num_grids,
            self.scale_ranges,
            self.num_classes,
            self.sigma,
        )
        dice = []
        for level, target in enumerate(targets):
            for img in range(len(gt_instances)):
                pick = target.image_index == img
                if not bool(pick.any()):
                    continue
                logits = self._mask_logits(
                    img, level, target.cell_index[pick], kernel_preds, mask_out
                )
                gt = small_masks[img][target.gt_index[pick]]
                dice.append(dice_loss(logits.sigmoid(), gt))
        if dice:
            loss_ins = torch.cat(dice).mean() * self.dice_weight
        else:  # no positive cell: a zero still connected to every output
            outputs = [*cate_preds, *(kernel_preds or []), *_as_list(mask_out)]
            loss_ins = sum(x.sum() for x in outputs) * 0.0

        labels = torch.cat([t.cate_labels.flatten() for t in targets])
        logits = torch.cat(
            [p.permute(0, 2, 3, 1).reshape(-1, self.num_classes) for p in cate_preds]
        )
        positive = labels != self.num_classes
        one_hot = torch.zeros_like(logits)
        one_hot[positive, labels[positive]] = 1.0
        loss_cate = sigmoid_focal_loss(
            logits, one_hot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
        ) / (positive.sum() + 1)
        return {"loss_ins": loss_ins, "loss_cate": loss_cate * self.focal_weight}

    # ---- inference ----------------------------------------------------------------------

    def inference_single(
        self,
        image: int,
        cate_preds: list[torch.Tensor],
        kernel_preds: list[torch.Tensor] | None,
        mask_out: Any,
        image_size: tuple[int, int],
        output_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(masks, scores, classes, boxes)`` of one image of the batch; see
        :func:`solo_inference_single`."""
        cate_scores = torch.cat(
            [
                point_nms(p[image : image + 1].sigmoid())[0]
                .permute(1, 2, 0)
                .reshape(-1, p.shape[1])
                for p in cate_preds
            ]
        )

        def mask_fn(cells: torch.Tensor) -> torch.Tensor:
            return self._mask_logits(image, None, cells, kernel_preds, mask_out).sigmoid()

        return solo_inference_single(
            cate_scores, self.cell_strides, mask_fn, image_size, output_size, self.inference_params
        )


def _as_list(x: Any) -> list[torch.Tensor]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


@META_ARCH_REGISTRY.register()
class SOLO(SOLOv2):
    """SOLO (v1): the mask head predicts the S² masks of each level directly.

    Same backbone, category branch, targets, losses and inference as :class:`SOLOv2`, with a
    :class:`SOLOMaskHead` (``MODEL.SOLO.*``) on the instance levels instead of the kernel
    branch and unified mask features. A level's mask logits are resized (bilinear) to 1/4 of
    the padded input, where the targets are.
    """

    @classmethod
    def _build_heads(cls, cfg: Any) -> tuple[nn.Module, nn.Module]:
        s = cfg.MODEL.SOLOV2
        ins_head = SOLOv2InsHead(
            in_channels=s.INSTANCE_IN_CHANNELS,
            num_classes=s.NUM_CLASSES,
            num_kernels=0,
            num_grids=s.NUM_GRIDS,
            channels=s.INSTANCE_CHANNELS,
            num_convs=s.NUM_INSTANCE_CONVS,
            norm=s.NORM,
            prior_prob=s.PRIOR_PROB,
        )
        mask_head = SOLOMaskHead(
            in_channels=s.INSTANCE_IN_CHANNELS,
            num_grids=s.NUM_GRIDS,
            channels=cfg.MODEL.SOLO.MASK_TOWER_CHANNELS,
            num_convs=cfg.MODEL.SOLO.NUM_MASK_CONVS,
            norm=s.NORM,
        )
        return ins_head, mask_head

    def _network(self, images: torch.Tensor) -> tuple[list, None, list[torch.Tensor]]:
        features = self.backbone(images)
        ins_features = self.split_feats([features[f] for f in self.instance_in_features])
        cate_preds, _ = self.ins_head(ins_features)
        return cate_preds, None, self.mask_head(ins_features)

    def _mask_feat_size(self, mask_out: Any) -> tuple[int, int]:
        h, w = mask_out[0].shape[-2:]  # the first level has stride 8 (P2 downsampled)
        return (2 * h, 2 * w)

    def _mask_logits(
        self,
        image: int,
        level: int | None,
        cells: torch.Tensor,
        kernel_preds: None,
        mask_out: list[torch.Tensor],
    ) -> torch.Tensor:
        """The cells' channels of the level outputs, resized to 1/4 of the padded input."""
        size = self._mask_feat_size(mask_out)
        if level is not None:
            return _resize(mask_out[level][image, cells], size)
        out = mask_out[0].new_zeros((cells.shape[0], *size))
        start = 0
        for level_out in mask_out:
            end = start + level_out.shape[1]
            pick = (cells >= start) & (cells < end)
            out[pick] = _resize(level_out[image, cells[pick] - start], size)
            start = end
        return out


def _resize(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(logits[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
