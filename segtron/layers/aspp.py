"""Atrous Spatial Pyramid Pooling (:class:`ASPP`), the context module of DeepLab v3 / v3+."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import deepcopy

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

from segtron.layers import weight_init

from .batch_norm import get_norm
from .blocks import DepthwiseSeparableConv2d
from .wrappers import Conv2d

__all__ = ["ASPP"]


class ASPP(nn.Module):
    """Five parallel branches over the same features, concatenated and projected.

    Submodules keep Detectron2's names: ``convs[0]`` is a 1×1 conv, ``convs[1:4]`` are 3×3
    atrous convs (or depthwise-separable ones), ``convs[4]`` is image pooling (average pooling
    then a 1×1 conv with bias and no norm, upsampled back bilinearly), and ``project`` maps the
    concatenation to ``out_channels``. Every conv except the pooling one uses ``norm``.

    As in Detectron2 (so that its checkpoints map one to one), the convs have a bias only for
    ``norm=""``; with ``norm=None`` they have neither norm nor bias.

    Args:
        in_channels: input channels.
        out_channels: channels of every branch and of the output.
        dilations: the three dilations of the atrous branches.
        norm: normalization of the convs (see :func:`get_norm`).
        activation: activation after every conv (deep-copied for each).
        pool_kernel_size: None for global average pooling (any input size); or the (kh, kw)
            window of a stride-1 average pooling, usually the feature size of the training
            crops, in which case input heights and widths must be multiples of it.
        dropout: dropout rate on the output.
        use_depthwise_separable_conv: use :class:`DepthwiseSeparableConv2d` for the atrous
            branches.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dilations: Sequence[int],
        *,
        norm: str | Callable[[int], nn.Module] | None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None,
        pool_kernel_size: int | Sequence[int] | None = None,
        dropout: float = 0.0,
        use_depthwise_separable_conv: bool = False,
    ) -> None:
        super().__init__()
        if len(dilations) != 3:
            raise ValueError(f"ASPP expects 3 dilations, got {len(dilations)}: {list(dilations)}")
        self.pool_kernel_size = None if pool_kernel_size is None else tuple(_pair(pool_kernel_size))
        self.dropout = dropout
        use_bias = norm == ""

        def conv(in_ch: int, kernel_size: int, dilation: int = 1) -> Conv2d:
            layer = Conv2d(
                in_ch,
                out_channels,
                kernel_size=kernel_size,
                padding=dilation * (kernel_size // 2),
                dilation=dilation,
                bias=use_bias,
                norm=get_norm(norm, out_channels),
                activation=deepcopy(activation),
            )
            weight_init.c2_xavier_fill(layer)
            return layer

        self.convs = nn.ModuleList([conv(in_channels, 1)])
        for dilation in dilations:
            if use_depthwise_separable_conv:
                self.convs.append(
                    DepthwiseSeparableConv2d(
                        in_channels,
                        out_channels,
                        kernel_size=3,
                        padding=dilation,
                        dilation=dilation,
                        norm1=norm,
                        activation1=deepcopy(activation),
                        norm2=norm,
                        activation2=deepcopy(activation),
                    )
                )
            else:
                self.convs.append(conv(in_channels, 3, dilation))
        pool = (
            nn.AdaptiveAvgPool2d(1)
            if self.pool_kernel_size is None
            else nn.AvgPool2d(kernel_size=self.pool_kernel_size, stride=1)
        )
        pool_conv = Conv2d(in_channels, out_channels, 1, bias=True, activation=deepcopy(activation))
        weight_init.c2_xavier_fill(pool_conv)
        self.convs.append(nn.Sequential(pool, pool_conv))
        self.project = conv(5 * out_channels, 1)

    def _check_input_size(self, height: int, width: int) -> None:
        if self.pool_kernel_size is None:
            return
        kh, kw = self.pool_kernel_size
        if height < kh or width < kw or height % kh or width % kw:
            raise ValueError(
                f"ASPP input of size {height}x{width} (HxW) does not fit its image-pooling "
                f"kernel {kh}x{kw}: height and width must be positive multiples of the kernel. "
                "Pad or resize inputs so that the features reaching ASPP are multiples of the "
                "kernel (a size divisibility of kernel x feature stride on the images does it), "
                "or build ASPP with pool_kernel_size=None (set the pooling kernel to null in the "
                "config) to use global average pooling, which accepts any size."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the five branches to ``x`` (N, C, H, W) and project their concatenation.

        Raises:
            ValueError: if a fixed pooling kernel does not divide the input's height and width.
        """
        size = x.shape[-2:]
        self._check_input_size(size[0], size[1])
        branches = [conv(x) for conv in self.convs]
        branches[-1] = F.interpolate(branches[-1], size=size, mode="bilinear", align_corners=False)
        out = self.project(torch.cat(branches, dim=1))
        if self.dropout > 0:
            out = F.dropout(out, self.dropout, training=self.training)
        return out
