"""Residual blocks and stems of ResNet, with Detectron2's module and parameter names.

Holds :class:`BasicBlock` (ResNet-18/34), :class:`BottleneckBlock` (ResNet-50 and deeper, and
ResNeXt), :class:`DeformBottleneckBlock`, :class:`BasicStem` and :class:`DeepLabStem` (the
three-convolution stem of Detectron2's DeepLab project). They are re-exported by
:mod:`segtron.modeling.backbone.resnet`, where Detectron2 defines them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from segtron.layers import (
    CNNBlockBase,
    Conv2d,
    DeformConv,
    ModulatedDeformConv,
    get_norm,
    weight_init,
)

__all__ = [
    "BasicBlock",
    "BottleneckBlock",
    "DeformBottleneckBlock",
    "BasicStem",
    "DeepLabStem",
]

NormSpec = str | Callable[[int], nn.Module] | None


def _projection_shortcut(
    in_channels: int, out_channels: int, stride: int, norm: NormSpec
) -> Conv2d | None:
    """1×1 projection for the residual branch, or None when the channels already match."""
    if in_channels == out_channels:
        return None
    return Conv2d(
        in_channels,
        out_channels,
        kernel_size=1,
        stride=stride,
        bias=False,
        norm=get_norm(norm, out_channels),
    )


def _msra_fill(*layers: nn.Module | None) -> None:
    for layer in layers:
        if layer is not None:
            weight_init.c2_msra_fill(layer)


class BasicBlock(CNNBlockBase):
    """Residual block of ResNet-18/34: two 3×3 convolutions and a projection when needed.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        stride: stride of the first convolution (and of the projection shortcut).
        norm: normalization after every convolution (see :func:`segtron.layers.get_norm`).
        dilation: dilation of the first 3×3 convolution (dilated ResNet-18/34, as in
            mmsegmentation's R-18-D8; the second convolution stays undilated).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        norm: NormSpec = "BN",
        dilation: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = _projection_shortcut(in_channels, out_channels, stride, norm)
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        self.conv2 = Conv2d(
            out_channels,
            out_channels,
            kernel_size=3,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        _msra_fill(self.conv1, self.conv2, self.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to an NCHW tensor."""
        out = self.conv2(F.relu_(self.conv1(x)))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + shortcut)


class BottleneckBlock(CNNBlockBase):
    """Residual block of ResNet-50 and deeper: 1×1, 3×3 and 1×1 convolutions.

    The last norm of the residual branch is not zero-initialized, as in Detectron2.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        bottleneck_channels: channels of the 3×3 convolution.
        stride: stride of the block.
        num_groups: groups of the 3×3 convolution (ResNeXt when > 1).
        norm: normalization after every convolution (see :func:`segtron.layers.get_norm`).
        stride_in_1x1: put the stride on the first 1×1 convolution (original MSRA / Caffe2
            weights) instead of the 3×3 one (torchvision weights).
        dilation: dilation of the 3×3 convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: NormSpec = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = _projection_shortcut(in_channels, out_channels, stride, norm)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv2 = Conv2d(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
            groups=num_groups,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        _msra_fill(self.conv1, self.conv2, self.conv3, self.shortcut)

    def _conv2(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to an NCHW tensor."""
        out = F.relu_(self.conv1(x))
        out = F.relu_(self._conv2(out))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + shortcut)


class DeformBottleneckBlock(BottleneckBlock):
    """:class:`BottleneckBlock` whose 3×3 convolution is deformable.

    ``conv2_offset`` (a plain 3×3 convolution with bias, zero-initialized so that training
    starts from the regular grid) predicts the offsets, and with ``deform_modulated`` also the
    modulation masks, from the output of ``conv1``; ``conv2`` is then a :class:`DeformConv` or
    :class:`ModulatedDeformConv`. Of the ``27 * deform_num_groups`` channels predicted in the
    modulated case, the first two thirds are the offsets and the last third, through a sigmoid,
    the masks.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        bottleneck_channels: channels of the 3×3 convolution.
        stride: stride of the block.
        num_groups: groups of the 3×3 convolution.
        norm: normalization after every convolution.
        stride_in_1x1: put the stride on the first 1×1 convolution.
        dilation: dilation of the 3×3 convolution.
        deform_modulated: use modulated deformable convolution (v2).
        deform_num_groups: number of deformable groups (sets of offsets).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: NormSpec = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
        deform_modulated: bool = False,
        deform_num_groups: int = 1,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            bottleneck_channels=bottleneck_channels,
            stride=stride,
            num_groups=num_groups,
            norm=norm,
            stride_in_1x1=stride_in_1x1,
            dilation=dilation,
        )
        self.deform_modulated = deform_modulated
        stride_3x3 = 1 if stride_in_1x1 else stride
        taps = 9 * deform_num_groups
        self.conv2_offset = Conv2d(
            bottleneck_channels,
            (3 if deform_modulated else 2) * taps,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
        )
        deform_op = ModulatedDeformConv if deform_modulated else DeformConv
        self.conv2 = deform_op(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            bias=False,
            groups=num_groups,
            dilation=dilation,
            deformable_groups=deform_num_groups,
            norm=get_norm(norm, bottleneck_channels),
        )
        _msra_fill(self.conv2)
        nn.init.zeros_(self.conv2_offset.weight)
        nn.init.zeros_(self.conv2_offset.bias)

    def _conv2(self, x: torch.Tensor) -> torch.Tensor:
        predicted = self.conv2_offset(x)
        if not self.deform_modulated:
            return self.conv2(x, predicted)
        num_offsets = predicted.shape[1] * 2 // 3
        offset, mask = predicted.split([num_offsets, predicted.shape[1] - num_offsets], dim=1)
        return self.conv2(x, offset, mask.sigmoid())


class BasicStem(CNNBlockBase):
    """Standard ResNet stem: 7×7 convolution with stride 2, ReLU, 3×3 max-pool with stride 2.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        norm: normalization after the convolution.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: NormSpec = "BN"):
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=7,
            stride=2,
            padding=3,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        _msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stem to an NCHW tensor (output stride 4)."""
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class DeepLabStem(CNNBlockBase):
    """Stem of DeepLab's ResNets (R-52, R-103): three 3×3 convolutions, then a max-pool.

    ``conv1`` (stride 2) and ``conv2`` give ``out_channels // 2`` channels, ``conv3`` gives
    ``out_channels``; each is followed by its norm and a ReLU, and a 3×3 max-pool with stride 2
    ends the stem.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        norm: normalization after every convolution.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 128, norm: NormSpec = "BN"):
        super().__init__(in_channels, out_channels, 4)
        half = out_channels // 2
        self.conv1 = Conv2d(
            in_channels, half, 3, stride=2, padding=1, bias=False, norm=get_norm(norm, half)
        )
        self.conv2 = Conv2d(half, half, 3, padding=1, bias=False, norm=get_norm(norm, half))
        self.conv3 = Conv2d(
            half, out_channels, 3, padding=1, bias=False, norm=get_norm(norm, out_channels)
        )
        _msra_fill(self.conv1, self.conv2, self.conv3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stem to an NCHW tensor (output stride 4)."""
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.relu_(conv(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
