"""Deformable convolutions (v1 :class:`DeformConv` and modulated v2 :class:`ModulatedDeformConv`).

Both run ``torchvision.ops.deform_conv2d``, on CPU or CUDA, and keep Detectron2's argument,
parameter and submodule names. The offset layout is the one of Detectron2 and torchvision:
for deformable group ``g`` and kernel position ``k`` (row-major), channel ``2 * (g * K + k)``
holds the vertical and the next channel the horizontal displacement.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

__all__ = ["DeformConv", "ModulatedDeformConv"]

IntOrPair = int | tuple[int, int]


class _DeformConvBase(nn.Module):
    """Parameters, checks and output-shape logic shared by both deformable convolutions.

    ``bias=None`` takes the class's default: False for ``DeformConv``, True for
    ``ModulatedDeformConv``, as in Detectron2.
    """

    default_bias: bool = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool | None = None,
        norm: nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if bias is None:
            bias = self.default_bias
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be "
                f"divisible by groups ({groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.with_bias = bias
        self.norm = norm
        self.activation = activation
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size)
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def _output_shape(self, x: torch.Tensor) -> list[int]:
        sizes = [
            (size + 2 * pad - (dil * (k - 1) + 1)) // step + 1
            for size, pad, dil, k, step in zip(
                x.shape[-2:], self.padding, self.dilation, self.kernel_size, self.stride
            )
        ]
        return [x.shape[0], self.out_channels, *sizes]

    def _check_channels(self, name: str, tensor: torch.Tensor, per_position: int) -> None:
        expected = per_position * self.deformable_groups * math.prod(self.kernel_size)
        if tensor.dim() != 4 or tensor.shape[1] != expected:
            raise ValueError(
                f"{type(self).__name__} with kernel {self.kernel_size} and deformable_groups="
                f"{self.deformable_groups} expects {name} of shape (N, {expected}, H_out, W_out),"
                f" got {tuple(tensor.shape)}"
            )

    def _deform(
        self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        self._check_channels("offset", offset, 2)
        if mask is not None:
            self._check_channels("mask", mask, 1)
        if x.numel() == 0:
            # torchvision rejects empty spatial sizes: give the shape a convolution would give,
            # still connected to the input's graph.
            return x.new_zeros(self._output_shape(x)) + x.sum()
        x = deform_conv2d(
            x,
            offset.to(x.dtype),
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=None if mask is None else mask.to(x.dtype),
        )
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.with_bias}"
        )


class DeformConv(_DeformConvBase):
    """Deformable convolution (v1): each kernel tap is sampled at a learned offset.

    Arguments are those of ``torch.nn.Conv2d`` plus:

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size: kernel size.
        stride: stride.
        padding: zero padding.
        dilation: dilation.
        groups: convolution groups.
        deformable_groups: number of channel groups with their own offsets.
        bias: add a learned bias (default False). Detectron2 only allows False; True is an
            extension.
        norm: normalization module applied after the convolution (submodule ``norm``).
        activation: callable applied last.
    """

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` (N, C, H, W) with taps displaced by ``offset``.

        Args:
            x: input features.
            offset: (N, 2 * deformable_groups * kh * kw, H_out, W_out) displacements, in
                pixels, (dy, dx) per tap.

        Returns:
            (N, out_channels, H_out, W_out) features.
        """
        return self._deform(x, offset, None)


class ModulatedDeformConv(_DeformConvBase):
    """Modulated deformable convolution (v2): displaced taps each weighted by a learned mask.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size: kernel size.
        stride: stride.
        padding: zero padding.
        dilation: dilation.
        groups: convolution groups.
        deformable_groups: number of channel groups with their own offsets and masks.
        bias: add a learned bias, initialized to zero (default True).
        norm: normalization module applied after the convolution (submodule ``norm``).
        activation: callable applied last.
    """

    default_bias = True

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` with displaced taps, each scaled by ``mask``.

        Args:
            x: (N, C, H, W) input features.
            offset: (N, 2 * deformable_groups * kh * kw, H_out, W_out) displacements (dy, dx).
            mask: (N, deformable_groups * kh * kw, H_out, W_out) modulation, usually in [0, 1].

        Returns:
            (N, out_channels, H_out, W_out) features.
        """
        return self._deform(x, offset, mask)
