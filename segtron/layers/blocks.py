"""CNN building blocks: :class:`CNNBlockBase` and :class:`DepthwiseSeparableConv2d`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from segtron.layers import weight_init

from .batch_norm import FrozenBatchNorm2d, get_norm
from .wrappers import Conv2d

__all__ = ["CNNBlockBase", "DepthwiseSeparableConv2d"]

NormSpec = str | Callable[[int], nn.Module] | None
Activation = Callable[[torch.Tensor], torch.Tensor] | None


class CNNBlockBase(nn.Module):
    """Base of a block that maps NCHW inputs to NCHW outputs with known channels and stride.

    Subclasses take ``in_channels``, ``out_channels`` and ``stride`` in their ``__init__`` too.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        stride: ratio of input to output spatial size.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def freeze(self) -> CNNBlockBase:
        """Make the block untrainable.

        Sets ``requires_grad=False`` on every parameter and turns every batch norm inside into
        :class:`FrozenBatchNorm2d`.

        Returns:
            The block itself.
        """
        for p in self.parameters():
            p.requires_grad = False
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self


class DepthwiseSeparableConv2d(nn.Module):
    """A k×k depthwise convolution followed by a 1×1 pointwise convolution.

    Each convolution has its own optional norm and activation; a convolution without norm gets
    a bias. Both are initialized with ``c2_msra_fill``.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size: kernel size of the depthwise convolution.
        padding: padding of the depthwise convolution.
        dilation: dilation of the depthwise convolution.
        norm1: norm of the depthwise convolution (see :func:`get_norm`).
        activation1: activation of the depthwise convolution.
        norm2: norm of the pointwise convolution.
        activation2: activation of the pointwise convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        dilation: int = 1,
        *,
        norm1: NormSpec = None,
        activation1: Activation = None,
        norm2: NormSpec = None,
        activation2: Activation = None,
    ) -> None:
        super().__init__()
        self.depthwise = Conv2d(
            in_channels,
            in_channels,
            kernel_size=kernel_size,
            padding=padding,
            dilation=dilation,
            groups=in_channels,
            bias=not norm1,
            norm=get_norm(norm1, in_channels),
            activation=activation1,
        )
        self.pointwise = Conv2d(
            in_channels,
            out_channels,
            kernel_size=1,
            bias=not norm2,
            norm=get_norm(norm2, out_channels),
            activation=activation2,
        )
        weight_init.c2_msra_fill(self.depthwise)
        weight_init.c2_msra_fill(self.pointwise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the depthwise then the pointwise convolution."""
        return self.pointwise(self.depthwise(x))
