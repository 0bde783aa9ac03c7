"""Fully convolutional networks (Long, Shelhamer & Darrell, 2015): FCN-32s, FCN-16s, FCN-8s.

:class:`FCNHead` (registered in ``SEM_SEG_HEADS_REGISTRY``) runs under the core
``SemanticSegmentor``. On VGG-16 it turns fc6/fc7 into convolutions (7×7 and 1×1, 4096
channels, ReLU, dropout 0.5), scores the result (``score_fr``), and fuses it, coarse to fine, with
1×1 scores of finer features ("skips"): ``IN_FEATURES`` ["vgg5"] gives FCN-32s, ["vgg4", "vgg5"]
FCN-16s and ["vgg3", "vgg4", "vgg5"] FCN-8s. On a ResNet the same head scores res3/res4/res5
(set ``MODEL.FCN.FC_CHANNELS`` 0 to score res5 directly).

Every upsampling is a learnable transposed convolution initialized to bilinear interpolation
(:class:`BilinearUpsample`). Where FCN pads the input by 100 pixels and crops each upsampled map
by fixed offsets, we pad every convolution ("same" padding) and align maps at their top-left
pixel (:func:`align_to_size`); with VGG-16's size divisibility of 32 all maps then align exactly.
Score layers start at zero, as in FCN. Names follow the Caffe models where they can:
``fc6``, ``fc7``, ``score_fr``, ``score_<feature>`` (Caffe's ``score_pool4``), ``upscore_<feature>``
(Caffe's ``upscore2`` / ``upscore_pool4``) and ``upscore`` (Caffe's ``upscore32/16/8``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from segtron.config import configurable
from segtron.layers import Conv2d, ShapeSpec
from segtron.layers.weight_init import c2_msra_fill
from segtron.modeling import SEM_SEG_HEADS_REGISTRY

from .heads import align_to_size, check_in_features, semantic_loss

__all__ = ["BilinearUpsample", "FCNHead", "bilinear_kernel"]


def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """Weights of a (2·factor)×(2·factor) transposed convolution doing bilinear upsampling.

    Each channel is upsampled on its own (the weight is diagonal in channels), as FCN's
    ``upsample_filt``.

    Args:
        channels: input and output channels.
        factor: the upsampling factor.

    Returns:
        A (channels, channels, 2·factor, 2·factor) tensor.
    """
    size = 2 * factor
    center = factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = taps[:, None] * taps[None, :]
    return weight


class BilinearUpsample(nn.ConvTranspose2d):
    """Learnable ×``factor`` upsampling, initialized to exact bilinear interpolation.

    A transposed convolution of kernel 2·factor and stride ``factor`` applied to the input
    padded by one replicated pixel on each side; at initialization its output equals
    ``F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)`` everywhere,
    borders included, and its output is exactly ``factor`` times larger than its input.

    Args:
        channels: input and output channels.
        factor: an even upsampling factor.
    """

    def __init__(self, channels: int, factor: int) -> None:
        if factor < 2 or factor % 2:
            raise ValueError(f"BilinearUpsample needs an even factor >= 2, got {factor}")
        # The padding removes the replicated pixels' share (factor on each side) and the
        # half-kernel offset (factor / 2).
        super().__init__(
            channels, channels, 2 * factor, stride=factor, padding=factor + factor // 2, bias=False
        )
        self.factor = factor
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(channels, factor))

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        """Upsample (N, C, H, W) to (N, C, factor·H, factor·W)."""
        return super().forward(F.pad(x, (1, 1, 1, 1), mode="replicate"), output_size)


def _upsample(channels: int, factor: int) -> nn.Module:
    return BilinearUpsample(channels, factor) if factor > 1 else nn.Identity()


def _score(in_channels: int, num_classes: int) -> Conv2d:
    score = Conv2d(in_channels, num_classes, kernel_size=1)
    nn.init.zeros_(score.weight)
    nn.init.zeros_(score.bias)
    return score


@SEM_SEG_HEADS_REGISTRY.register()
class FCNHead(nn.Module):
    """FCN's head: fc6/fc7, scores of the coarsest feature, skip fusion, learnable upsampling.

    Args:
        input_shape: shapes of the input features by name, e.g. vgg3/vgg4/vgg5 for FCN-8s;
            each stride must divide the next coarser one.
        num_classes: number of classes.
        fc_channels: channels of fc6 and fc7; 0 leaves them out.
        fc_kernel_size: kernel of fc6 (odd; VGG-16's fc6 as a convolution is 7×7).
        dropout: dropout probability after fc6 and fc7.
        ignore_value: label that takes no loss.
        loss_weight: factor of the loss.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        fc_channels: int = 4096,
        fc_kernel_size: int = 7,
        dropout: float = 0.5,
        ignore_value: int = -1,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not input_shape:
            raise ValueError("FCNHead(input_shape=...) cannot be empty.")
        if fc_kernel_size % 2 != 1:
            raise ValueError(f"FCNHead fc_kernel_size must be odd, got {fc_kernel_size}")
        shapes = sorted(input_shape.items(), key=lambda item: -(item[1].stride or 1))
        self.in_features = [name for name, _ in shapes]
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight

        channels = shapes[0][1].channels
        self.fc_channels = fc_channels
        if fc_channels > 0:
            pad = fc_kernel_size // 2
            self.fc6 = Conv2d(channels, fc_channels, fc_kernel_size, padding=pad, activation=F.relu)
            self.drop6 = nn.Dropout(dropout)
            self.fc7 = Conv2d(fc_channels, fc_channels, 1, activation=F.relu)
            self.drop7 = nn.Dropout(dropout)
            c2_msra_fill(self.fc6)
            c2_msra_fill(self.fc7)
            channels = fc_channels
        self.score_fr = _score(channels, num_classes)

        stride = shapes[0][1].stride or 1
        for name, shape in shapes[1:]:
            skip_stride = shape.stride or 1
            if stride % skip_stride:
                raise ValueError(
                    f"FCNHead: the stride of {name!r} ({skip_stride}) must divide the stride of "
                    f"the coarser features ({stride})."
                )
            self.add_module(f"upscore_{name}", _upsample(num_classes, stride // skip_stride))
            self.add_module(f"score_{name}", _score(shape.channels, num_classes))
            stride = skip_stride
        self.output_stride = stride
        self.upscore = _upsample(num_classes, stride)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Arguments from MODEL.SEM_SEG_HEAD.* and MODEL.FCN.*."""
        head, fcn = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.FCN
        return {
            "input_shape": check_in_features(cfg, input_shape),
            "num_classes": head.NUM_CLASSES,
            "fc_channels": fcn.FC_CHANNELS,
            "fc_kernel_size": fcn.FC_KERNEL_SIZE,
            "dropout": fcn.DROPOUT,
            "ignore_value": head.IGNORE_VALUE,
            "loss_weight": head.LOSS_WEIGHT,
        }

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fused class scores at the finest input feature's stride.

        Args:
            features: the backbone's features, by name.

        Returns:
            (N, num_classes, h, w) scores on the finest input feature's grid.
        """
        x = features[self.in_features[0]]
        if self.fc_channels > 0:
            x = self.drop7(self.fc7(self.drop6(self.fc6(x))))
        x = self.score_fr(x)
        for name in self.in_features[1:]:
            skip = getattr(self, f"score_{name}")(features[name])
            x = align_to_size(getattr(self, f"upscore_{name}")(x), skip.shape[-2:]) + skip
        return x

    def forward(
        self, features: dict[str, torch.Tensor], targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Predict class scores, or compute the loss in training.

        Args:
            features: the backbone's features, by name.
            targets: (N, H, W) integer labels at the padded input size (training only).

        Returns:
            ``(None, {"loss_sem_seg": loss})`` in training. In inference ``((N, num_classes,
            H, W) scores, {})`` at ``output_stride`` times the finest feature's size: the padded
            input size when the backbone's size divisibility makes the poolings exact (VGG-16),
            else a few pixels more at the bottom/right, which ``sem_seg_postprocess`` crops.
        """
        x = self.upscore(self.layers(features))
        if self.training:
            if targets is None:
                raise ValueError("FCNHead needs targets in training.")
            return None, semantic_loss(x, targets, self.ignore_value, self.loss_weight)
        return x, {}
