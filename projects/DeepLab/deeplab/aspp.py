"""ASPP for the DeepLab heads: the core `ASPP` with an image pooling that takes any input size.

Trained on fixed crops, ASPP's image pooling averages windows of the training features' size
(crop / stride) with stride 1. Detectron2 then rejects inputs whose features are not multiples
of that window; :class:`TrainSizeAvgPool2d` caps the window by the input size instead, which
gives Detectron2's result wherever Detectron2 runs, a sliding average on other large inputs and
global pooling along a side shorter than the window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

from segtron.layers import ASPP

__all__ = ["TrainSizeAvgPool2d", "aspp_pool_kernel_size", "build_aspp"]

NormSpec = str | Callable[[int], nn.Module] | None


class TrainSizeAvgPool2d(nn.Module):
    """Stride-1 average pooling over ``kernel_size`` windows, capped by the input's size.

    On inputs of the training features' size this is global average pooling; on larger ones a
    sliding average (Detectron2's DeepLab behaviour); along a side shorter than the window, the
    whole side is averaged.

    Args:
        kernel_size: (height, width) of the window, or one int for both.
    """

    def __init__(self, kernel_size: int | Sequence[int]) -> None:
        super().__init__()
        self.kernel_size = tuple(_pair(kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average-pool (N, C, H, W) `x` with stride 1."""
        kernel = (min(self.kernel_size[0], x.shape[-2]), min(self.kernel_size[1], x.shape[-1]))
        return F.avg_pool2d(x, kernel, stride=1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


def build_aspp(
    in_channels: int,
    out_channels: int,
    dilations: Sequence[int],
    *,
    norm: NormSpec,
    pool_kernel_size: tuple[int, int] | None,
    dropout: float,
    use_depthwise_separable_conv: bool,
) -> ASPP:
    """The core `ASPP` with ReLU, whose image pooling accepts any input size.

    Args:
        in_channels: input channels.
        out_channels: channels of every branch and of the output.
        dilations: the three dilations of the atrous branches.
        norm: normalization of the convs (see `segtron.layers.get_norm`).
        pool_kernel_size: None for global image pooling; else the training features' (h, w),
            pooled by :class:`TrainSizeAvgPool2d`.
        dropout: dropout rate on the output.
        use_depthwise_separable_conv: depthwise-separable atrous branches.

    Returns:
        The module (``convs[4][0]`` is the pooling; it has no parameters, so the state-dict
        keys are the core ASPP's, i.e. Detectron2's).
    """
    aspp = ASPP(
        in_channels,
        out_channels,
        dilations,
        norm=norm,
        activation=F.relu,
        pool_kernel_size=None,
        dropout=dropout,
        use_depthwise_separable_conv=use_depthwise_separable_conv,
    )
    if pool_kernel_size is not None:
        aspp.convs[-1][0] = TrainSizeAvgPool2d(pool_kernel_size)
    return aspp


def aspp_pool_kernel_size(train_size: Sequence[int] | None, stride: int) -> tuple[int, int] | None:
    """ASPP's image-pooling window for training crops of `train_size` at feature `stride`.

    Args:
        train_size: (h, w) of the fixed training crops, or None.
        stride: the stride of the features ASPP reads.

    Returns:
        ``(h // stride, w // stride)``, or None (global pooling) without `train_size`.

    Raises:
        ValueError: naming INPUT.CROP.SIZE, when `stride` does not divide it.
    """
    if train_size is None:
        return None
    height, width = train_size
    if height % stride or width % stride:
        raise ValueError(
            f"cfg.INPUT.CROP.SIZE = {list(train_size)} must be divisible by the output stride "
            f"{stride} of the features ASPP reads: ASPP's image pooling uses the crop's feature "
            "size as its window. Pick a crop size that is a multiple of it."
        )
    return height // stride, width // stride
