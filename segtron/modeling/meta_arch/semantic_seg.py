"""Semantic segmentation: the :class:`SemanticSegmentor` meta-architecture and its heads.

Holds ``SEM_SEG_HEADS_REGISTRY`` with :func:`build_sem_seg_head`, the meta-architecture
(a backbone plus a semantic segmentation head) and :class:`SemSegFPNHead`, the head of
Panoptic FPN. Module, parameter and config names follow ``detectron2.modeling.meta_arch``, so
Detectron2 checkpoints load into these modules unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from fvcore.common.registry import Registry
from torch import nn
from torch.nn import functional as F

from segtron.config import configurable
from segtron.layers import Conv2d, ShapeSpec, get_norm, move_device_like
from segtron.layers.weight_init import c2_msra_fill
from segtron.modeling.backbone import Backbone, build_backbone
from segtron.modeling.postprocessing import sem_seg_postprocess
from segtron.structures import ImageList

from .build import META_ARCH_REGISTRY

__all__ = [
    "SEM_SEG_HEADS_REGISTRY",
    "SemSegFPNHead",
    "SemanticSegmentor",
    "build_sem_seg_head",
]

SEM_SEG_HEADS_REGISTRY = Registry("SEM_SEG_HEADS")
SEM_SEG_HEADS_REGISTRY.__doc__ = """
Registry of semantic segmentation heads, selected by ``cfg.MODEL.SEM_SEG_HEAD.NAME``.

A registered object is called as ``obj(cfg, input_shape)``, where ``input_shape`` maps feature
names to :class:`ShapeSpec`, and returns a module called as ``head(features, targets)`` that
gives ``(predictions, losses)``: in training ``(None, {"loss_...": ...})``, in inference
``(N×C×H×W scores at the padded input size, {})``. It has an ``ignore_value`` attribute.
"""


@META_ARCH_REGISTRY.register()
class SemanticSegmentor(nn.Module):
    """A backbone followed by a semantic segmentation head.

    Input images are normalized with ``pixel_mean``/``pixel_std`` and padded to the backbone's
    size divisibility; the labels are padded the same way with the head's ``ignore_value``.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        pixel_mean: tuple[float, ...] | list[float],
        pixel_std: tuple[float, ...] | list[float],
    ) -> None:
        """Create the model.

        Args:
            backbone: the feature extractor.
            sem_seg_head: the head; called as ``sem_seg_head(features, targets)``, see
                ``SEM_SEG_HEADS_REGISTRY``.
            pixel_mean: per-channel mean subtracted from the input images.
            pixel_std: per-channel standard deviation the input images are divided by.
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        # Not saved in checkpoints (as in Detectron2): they come from the config.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        """Build the backbone and head from MODEL.BACKBONE / MODEL.SEM_SEG_HEAD; MODEL.PIXEL_*."""
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self) -> torch.device:
        """The device the model's tensors are on."""
        return self.pixel_mean.device

    def _move_to_current_device(self, x: torch.Tensor) -> torch.Tensor:
        return move_device_like(x, self.pixel_mean)

    def forward(
        self, batched_inputs: list[dict[str, Any]]
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Segment a batch of images, or compute the training losses.

        Args:
            batched_inputs: one dict per image (the output of ``DatasetMapper``) with
                "image": a (C, H, W) tensor in the config's INPUT.FORMAT, 0-255;
                "sem_seg": an (H, W) integer tensor of labels (needed in training);
                "height", "width" (optional): the size to resize the output to, usually the
                original image size; by default the size of "image".

        Returns:
            In training, a dict of scalar losses. In inference, one dict per image with
            "sem_seg": a (num_classes, height, width) tensor of scores (logits).

        Raises:
            ValueError: in training, when the inputs have no "sem_seg" labels.
        """
        images = [self._move_to_current_device(x["image"]) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        images = ImageList.from_tensors(
            images,
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )
        features = self.backbone(images.tensor)

        if "sem_seg" in batched_inputs[0]:
            targets = [self._move_to_current_device(x["sem_seg"]) for x in batched_inputs]
            targets = ImageList.from_tensors(
                targets,
                self.backbone.size_divisibility,
                self.sem_seg_head.ignore_value,
                self.backbone.padding_constraints,
            ).tensor
        elif self.training:
            raise ValueError(
                "SemanticSegmentor needs a 'sem_seg' label map in every input dict in training; "
                "use a mapper that reads sem_seg_file_name (e.g. DatasetMapper)."
            )
        else:
            targets = None

        results, losses = self.sem_seg_head(features, targets)
        if self.training:
            return losses

        processed_results = []
        for result, input_per_image, image_size in zip(results, batched_inputs, images.image_sizes):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            processed_results.append(
                {"sem_seg": sem_seg_postprocess(result, image_size, height, width)}
            )
        return processed_results


def build_sem_seg_head(cfg: Any, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """Build the semantic segmentation head named by ``cfg.MODEL.SEM_SEG_HEAD.NAME``.

    Args:
        cfg: a config node.
        input_shape: shapes of the backbone's features, by name.

    Returns:
        The head.

    Raises:
        KeyError: when no head is registered under that name (fvcore's registry error).
    """
    name = cfg.MODEL.SEM_SEG_HEAD.NAME
    return SEM_SEG_HEADS_REGISTRY.get(name)(cfg, input_shape)


@SEM_SEG_HEADS_REGISTRY.register()
class SemSegFPNHead(nn.Module):
    """The semantic segmentation head of Panoptic FPN (Kirillov et al., 2019).

    Each input feature goes through its own "scale head": as many 3×3 conv + norm + ReLU blocks
    as it takes 2× bilinear upsamplings to reach ``common_stride`` (at least one conv). The
    results are summed, a 1×1 conv predicts the class scores, and these are upsampled by
    ``common_stride`` to the input resolution.

    The scale heads are registered under the feature names (state-dict keys
    ``p2.0.weight``, ``p3.0.norm.weight``, ...), as in Detectron2; ``scale_heads`` lists them
    in input-feature order.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        conv_dims: int,
        common_stride: int,
        loss_weight: float = 1.0,
        norm: str | Callable[[int], nn.Module] | None = None,
        ignore_value: int = -1,
    ) -> None:
        """Create the head.

        Args:
            input_shape: shapes of the input features, by name; all of them are used, from
                the finest stride to the coarsest.
            num_classes: number of classes to predict.
            conv_dims: channels of the scale heads' convolutions.
            common_stride: the stride the scale heads bring every feature to.
            loss_weight: factor of the cross-entropy loss.
            norm: normalization of the scale heads' convolutions ("" / None for none, "GN",
                "BN", ... or a callable; see :func:`segtron.layers.get_norm`).
            ignore_value: label that takes no loss.

        Raises:
            ValueError: when ``input_shape`` is empty.
        """
        super().__init__()
        shapes = sorted(input_shape.items(), key=lambda item: item[1].stride)
        if not shapes:
            raise ValueError("SemSegFPNHead(input_shape=...) cannot be empty.")
        self.in_features = [name for name, _ in shapes]
        self.ignore_value = ignore_value
        self.common_stride = common_stride
        self.loss_weight = loss_weight

        # A plain list: the modules are registered under the feature names instead, so that
        # the state-dict keys match Detectron2's.
        self.scale_heads: list[nn.Sequential] = []
        for name, shape in shapes:
            head_ops: list[nn.Module] = []
            head_length = max(1, int(np.log2(shape.stride) - np.log2(common_stride)))
            for k in range(head_length):
                conv = Conv2d(
                    shape.channels if k == 0 else conv_dims,
                    conv_dims,
                    kernel_size=3,
                    stride=1,
                    padding=1,
                    bias=not norm,
                    norm=get_norm(norm, conv_dims),
                    activation=F.relu,
                )
                c2_msra_fill(conv)
                head_ops.append(conv)
                if shape.stride != common_stride:
                    head_ops.append(
                        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
                    )
            self.scale_heads.append(nn.Sequential(*head_ops))
            self.add_module(name, self.scale_heads[-1])
        self.predictor = Conv2d(conv_dims, num_classes, kernel_size=1, stride=1, padding=0)
        c2_msra_fill(self.predictor)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Arguments from MODEL.SEM_SEG_HEAD.* (only the IN_FEATURES of ``input_shape``)."""
        head_cfg = cfg.MODEL.SEM_SEG_HEAD
        missing = [name for name in head_cfg.IN_FEATURES if name not in input_shape]
        if missing:
            raise ValueError(
                f"cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES names {missing}, which the backbone does "
                f"not output; it outputs {sorted(input_shape)}."
            )
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head_cfg.IN_FEATURES},
            "ignore_value": head_cfg.IGNORE_VALUE,
            "num_classes": head_cfg.NUM_CLASSES,
            "conv_dims": head_cfg.CONVS_DIM,
            "common_stride": head_cfg.COMMON_STRIDE,
            "norm": head_cfg.NORM,
            "loss_weight": head_cfg.LOSS_WEIGHT,
        }

    def forward(
        self, features: dict[str, torch.Tensor], targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Predict class scores, or compute the loss in training.

        Args:
            features: the backbone's features, by name.
            targets: (N, H, W) integer labels at the padded input size (training only).

        Returns:
            ``(None, {"loss_sem_seg": loss})`` in training; in inference
            ``((N, num_classes, H, W) scores at the padded input size, {})``.
        """
        x = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError("SemSegFPNHead needs targets in training.")
            return None, self.losses(x, targets)
        x = F.interpolate(x, scale_factor=self.common_stride, mode="bilinear", align_corners=False)
        return x, {}

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum the scale heads' outputs and predict, at ``common_stride``.

        Args:
            features: the backbone's features, by name.

        Returns:
            (N, num_classes, H / common_stride, W / common_stride) scores.
        """
        x = self.scale_heads[0](features[self.in_features[0]])
        for name, head in zip(self.in_features[1:], self.scale_heads[1:]):
            x = x + head(features[name])
        return self.predictor(x)

    def losses(self, predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy of the upsampled predictions, ignoring ``ignore_value``.

        Args:
            predictions: the output of :meth:`layers`.
            targets: (N, H, W) integer labels.

        Returns:
            ``{"loss_sem_seg": loss * loss_weight}``.
        """
        # Upsampled in float32: bilinear interpolation of half-precision input is slow or
        # unsupported on some devices.
        predictions = F.interpolate(
            predictions.float(),
            scale_factor=self.common_stride,
            mode="bilinear",
            align_corners=False,
        )
        loss = F.cross_entropy(
            predictions, targets, reduction="mean", ignore_index=self.ignore_value
        )
        return {"loss_sem_seg": loss * self.loss_weight}
