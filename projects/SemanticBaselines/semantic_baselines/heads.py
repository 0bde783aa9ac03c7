"""Shared pieces of the baselines' heads, and :class:`PixelClassifierHead`.

:func:`align_to_size` crops or pads score maps onto a grid of a given size, and
:func:`semantic_loss` is the pixel-wise cross-entropy that every head here uses.
:class:`PixelClassifierHead` is the classifier of the encoder-decoder backbones (U-Net, SegNet),
whose single output feature is already at (or near) the input resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from segtron.config import configurable
from segtron.layers import Conv2d, ShapeSpec
from segtron.modeling import SEM_SEG_HEADS_REGISTRY

__all__ = ["PixelClassifierHead", "align_to_size", "check_in_features", "semantic_loss"]


def align_to_size(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Crop or pad the bottom/right of an (N, C, H, W) map to ``size`` (H', W').

    Maps computed with "same" padding and rounding up are anchored at the top-left pixel, so
    extra rows and columns are at the bottom/right; missing ones are filled by replication.

    Args:
        x: the map.
        size: the wanted (height, width).

    Returns:
        The aligned map.
    """
    height, width = int(size[0]), int(size[1])
    x = x[..., :height, :width]
    pad_h, pad_w = height - x.shape[-2], width - x.shape[-1]
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


def semantic_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_value: int,
    loss_weight: float = 1.0,
    class_weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Mean cross-entropy of input-resolution scores, ignoring ``ignore_value``.

    Args:
        logits: (N, C, H', W') scores; aligned to the targets' size with :func:`align_to_size`.
        targets: (N, H, W) integer labels.
        ignore_value: label that takes no loss.
        loss_weight: factor of the loss.
        class_weights: optional (C,) weight of each class's pixels; the loss is then the
            weighted mean (divided by the summed weights of the labelled pixels).

    Returns:
        ``{"loss_sem_seg": loss}``.
    """
    logits = align_to_size(logits.float(), targets.shape[-2:])
    loss = F.cross_entropy(
        logits, targets.long(), weight=class_weights, reduction="mean", ignore_index=ignore_value
    )
    return {"loss_sem_seg": loss * loss_weight}


def check_in_features(cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, ShapeSpec]:
    """The shapes of ``MODEL.SEM_SEG_HEAD.IN_FEATURES``, or a ValueError naming the key."""
    names = list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES)
    missing = [name for name in names if name not in input_shape]
    if not names or missing:
        raise ValueError(
            f"cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = {names} must name features that the backbone "
            f"outputs; it outputs {sorted(input_shape)}."
        )
    return {name: input_shape[name] for name in names}


@SEM_SEG_HEADS_REGISTRY.register()
class PixelClassifierHead(nn.Module):
    """A k×k convolution to class scores on one feature, upsampled bilinearly to its stride.

    The last layer of U-Net (1×1) and SegNet (3×3, Caffe's ``conv1_1_D``). Optionally, in
    training only, a 1×1 auxiliary classifier (``aux_predictor``) on a coarse feature of the
    backbone (U-Net's ``"bottleneck"``, SegNet's ``"vgg5"``) adds a loss on its bilinearly
    upsampled scores, as PSPNet's auxiliary head does. It is not part of either paper: it gives
    the deep layers a direct gradient, without which these decoders trained from scratch can
    learn where the objects are long before which class they are. Class weights
    (``class_weights``) make rare classes count as much as frequent ones in both losses.

    Args:
        input_shape: the shape of the one input feature, by name.
        num_classes: number of classes.
        kernel_size: kernel of the classifier (odd; padded to keep the size).
        ignore_value: label that takes no loss.
        loss_weight: factor of the loss.
        aux_input_shape: the shape of the auxiliary classifier's feature, by name; None (the
            default) builds no auxiliary classifier.
        aux_loss_weight: factor of the auxiliary loss ``loss_sem_seg_aux``.
        class_weights: one weight per class for the pixels of that class in both losses (e.g.
            median frequency balancing, see ``class_weights.py``); empty (the default) for
            none. Not saved in checkpoints.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        kernel_size: int = 1,
        ignore_value: int = -1,
        loss_weight: float = 1.0,
        aux_input_shape: dict[str, ShapeSpec] | None = None,
        aux_loss_weight: float = 0.4,
        class_weights: Sequence[float] = (),
    ) -> None:
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(f"PixelClassifierHead takes one feature, got {sorted(input_shape)}")
        if kernel_size % 2 != 1:
            raise ValueError(f"PixelClassifierHead kernel_size must be odd, got {kernel_size}")
        self.in_feature, shape = next(iter(input_shape.items()))
        self.stride = shape.stride or 1
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        if class_weights and len(class_weights) != num_classes:
            raise ValueError(
                f"PixelClassifierHead has {num_classes} classes but {len(class_weights)} class "
                "weights (MODEL.PIXEL_CLASSIFIER.CLASS_WEIGHTS); give one per class or none."
            )
        self.register_buffer(
            "class_weights",
            torch.tensor(class_weights, dtype=torch.float32) if class_weights else None,
            persistent=False,
        )
        self.predictor = Conv2d(shape.channels, num_classes, kernel_size, padding=kernel_size // 2)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)
        self.aux_in_feature = None
        if aux_input_shape:
            self.aux_in_feature, aux_shape = next(iter(aux_input_shape.items()))
            self.aux_loss_weight = aux_loss_weight
            self.aux_predictor = Conv2d(aux_shape.channels, num_classes, 1)
            nn.init.normal_(self.aux_predictor.weight, std=0.01)
            nn.init.zeros_(self.aux_predictor.bias)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Arguments from MODEL.SEM_SEG_HEAD.* and MODEL.PIXEL_CLASSIFIER.*."""
        head, pixel = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.PIXEL_CLASSIFIER
        aux_input_shape = None
        if pixel.AUX_IN_FEATURE and pixel.AUX_LOSS_WEIGHT > 0:
            if pixel.AUX_IN_FEATURE not in input_shape:
                raise ValueError(
                    f"cfg.MODEL.PIXEL_CLASSIFIER.AUX_IN_FEATURE = {pixel.AUX_IN_FEATURE!r} is not "
                    f"a feature of the backbone; it outputs {sorted(input_shape)}. Name one of "
                    "them, or set it to '' for no auxiliary loss."
                )
            aux_input_shape = {pixel.AUX_IN_FEATURE: input_shape[pixel.AUX_IN_FEATURE]}
        return {
            "input_shape": check_in_features(cfg, input_shape),
            "num_classes": head.NUM_CLASSES,
            "kernel_size": pixel.KERNEL_SIZE,
            "ignore_value": head.IGNORE_VALUE,
            "loss_weight": head.LOSS_WEIGHT,
            "aux_input_shape": aux_input_shape,
            "aux_loss_weight": pixel.AUX_LOSS_WEIGHT,
            "class_weights": tuple(pixel.CLASS_WEIGHTS),
        }

    def forward(
        self, features: dict[str, torch.Tensor], targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Predict class scores, or compute the loss in training.

        Args:
            features: the backbone's features, by name.
            targets: (N, H, W) integer labels at the padded input size (training only).

        Returns:
            ``(None, {"loss_sem_seg": loss})`` in training (and ``"loss_sem_seg_aux"`` with
            an auxiliary classifier); in inference
            ``((N, num_classes, H, W) scores at the feature's size times its stride, {})``.
        """
        x = self.predictor(features[self.in_feature])
        if self.stride > 1:
            x = F.interpolate(x, scale_factor=self.stride, mode="bilinear", align_corners=False)
        if self.training:
            if targets is None:
                raise ValueError("PixelClassifierHead needs targets in training.")
            losses = semantic_loss(
                x, targets, self.ignore_value, self.loss_weight, self.class_weights
            )
            if self.aux_in_feature is not None:
                aux = self.aux_predictor(features[self.aux_in_feature])
                aux = F.interpolate(aux, size=x.shape[-2:], mode="bilinear", align_corners=False)
                aux_loss = semantic_loss(
                    aux, targets, self.ignore_value, self.aux_loss_weight, self.class_weights
                )
                losses["loss_sem_seg_aux"] = aux_loss["loss_sem_seg"]
            return None, losses
        return x, {}
