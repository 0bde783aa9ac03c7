"""Feature Pyramid Network on top of a bottom-up backbone, with Detectron2's names.

Holds :class:`FPN`, the extra top levels :class:`LastLevelMaxPool` (P6 for Mask R-CNN) and
:class:`LastLevelP6P7` (P6 and P7 for RetinaNet), and the registered builders
``build_resnet_fpn_backbone`` and ``build_retinanet_resnet_fpn_backbone``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from segtron.layers import Conv2d, ShapeSpec, get_norm, weight_init

from .backbone import Backbone
from .build import BACKBONE_REGISTRY
from .resnet import build_resnet_backbone

__all__ = [
    "FPN",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "build_resnet_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone",
]


class FPN(Backbone):
    """Feature Pyramid Network: lateral 1×1 convolutions, a top-down path and 3×3 outputs.

    For an input feature of stride ``2**s`` the lateral convolution is ``fpn_lateral{s}``, the
    output convolution ``fpn_output{s}`` and the output ``p{s}``; a ``top_block`` adds coarser
    levels after the last one. Convolutions are initialized with ``c2_xavier_fill`` and have a
    bias only without norm.

    Unlike Detectron2, which doubles the size of the coarser map and so needs inputs padded
    to :attr:`size_divisibility`, the top-down path resizes it to the size of the finer
    lateral map. The result is identical for padded inputs and any input size works.

    Args:
        bottom_up: backbone whose outputs the pyramid is built on.
        in_features: names of the bottom-up outputs to use, from high to low resolution, with
            strides doubling from one to the next (e.g. ["res2", "res3", "res4", "res5"]).
        out_channels: channels of every pyramid level.
        norm: normalization of the lateral and output convolutions ("" for none).
        top_block: optional module producing extra levels; it has attributes ``num_levels``
            and ``in_feature`` (a bottom-up output name, else a pyramid output name) and
            returns a list of ``num_levels`` tensors, each halving the previous resolution.
        fuse_type: "sum" adds the lateral and top-down maps; "avg" averages them.
        square_pad: when positive, inputs should be padded to squares of this side (reported
            by :attr:`padding_constraints`).
    """

    def __init__(
        self,
        bottom_up: Backbone,
        in_features: Sequence[str],
        out_channels: int,
        norm: str | Callable[[int], nn.Module] | None = "",
        top_block: nn.Module | None = None,
        fuse_type: str = "sum",
        square_pad: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(bottom_up, Backbone):
            raise TypeError(f"FPN needs a Backbone as bottom_up, got {type(bottom_up)}")
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"FPN fuse_type must be 'sum' or 'avg', got {fuse_type!r}")
        input_shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in input_shapes]
        if not in_features or missing:
            raise ValueError(
                f"FPN in_features {list(in_features)} must be a non-empty subset of the "
                f"bottom-up outputs {list(input_shapes)}"
            )
        strides = [input_shapes[f].stride for f in in_features]
        _check_strides_log2_contiguous(in_features, strides)

        use_bias = not norm
        lateral_convs, output_convs = [], []
        for feature, stride in zip(in_features, strides):
            lateral_conv = Conv2d(
                input_shapes[feature].channels,
                out_channels,
                kernel_size=1,
                bias=use_bias,
                norm=get_norm(norm, out_channels),
            )
            output_conv = Conv2d(
                out_channels,
                out_channels,
                kernel_size=3,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, out_channels),
            )
            weight_init.c2_xavier_fill(lateral_conv)
            weight_init.c2_xavier_fill(output_conv)
            level = int(math.log2(stride))
            self.add_module(f"fpn_lateral{level}", lateral_conv)
            self.add_module(f"fpn_output{level}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # Kept coarsest first, the order of the top-down pass; registered above by name.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]
        self.top_block = top_block
        self.in_features = tuple(in_features)
        self.bottom_up = bottom_up

        self._out_feature_strides = {f"p{int(math.log2(s))}": s for s in strides}
        if top_block is not None:
            last = int(math.log2(strides[-1]))
            for level in range(last + 1, last + 1 + top_block.num_levels):
                self._out_feature_strides[f"p{level}"] = 2**level
        self._out_features = list(self._out_feature_strides)
        self._out_feature_channels = {name: out_channels for name in self._out_features}
        self._size_divisibility = strides[-1]
        self._square_pad = square_pad
        self._fuse_type = fuse_type

    @property
    def size_divisibility(self) -> int:
        """The largest input stride: padding inputs to it keeps every level aligned."""
        return self._size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        """``{"square_size": square_pad}``."""
        return {"square_size": self._square_pad}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the pyramid.

        Args:
            x: an (N, C, H, W) image tensor, passed to the bottom-up backbone.

        Returns:
            A dict mapping "p2", "p3", ... (from high to low resolution) to the pyramid levels.
        """
        bottom_up_features = self.bottom_up(x)
        inputs = [bottom_up_features[f] for f in self.in_features[::-1]]
        prev = self.lateral_convs[0](inputs[0])
        results = [self.output_convs[0](prev)]
        for features, lateral_conv, output_conv in zip(
            inputs[1:], self.lateral_convs[1:], self.output_convs[1:]
        ):
            lateral = lateral_conv(features)
            prev = lateral + F.interpolate(prev, size=lateral.shape[-2:], mode="nearest")
            if self._fuse_type == "avg":
                prev = prev / 2
            results.insert(0, output_conv(prev))
        if self.top_block is not None:
            name = self.top_block.in_feature
            if name in bottom_up_features:
                top_input = bottom_up_features[name]
            else:
                top_input = results[self._out_features.index(name)]
            results.extend(self.top_block(top_input))
        return dict(zip(self._out_features, results))


def _check_strides_log2_contiguous(names: Sequence[str], strides: Sequence[int]) -> None:
    """Raise ValueError unless each stride is a power of two and twice the previous one."""
    for i, stride in enumerate(strides):
        power_of_two = stride > 0 and stride & (stride - 1) == 0
        if not power_of_two or (i > 0 and stride != 2 * strides[i - 1]):
            raise ValueError(
                f"FPN input strides must be powers of two, each twice the previous one; got "
                f"{dict(zip(names, strides))} (a dilated stage cannot feed an FPN)"
            )


class LastLevelMaxPool(nn.Module):
    """Extra P6 level of the original FPN: a 1×1 max-pool with stride 2 of P5."""

    def __init__(self) -> None:
        super().__init__()
        self.num_levels = 1
        self.in_feature = "p5"

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return ``[p6]`` computed from ``p5``."""
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(nn.Module):
    """Extra P6 and P7 levels of RetinaNet: 3×3 stride-2 convolutions, ReLU in between.

    Args:
        in_channels: channels of the input feature.
        out_channels: channels of P6 and P7.
        in_feature: name of the input: "res5" (C5, as RetinaNet) or "p5".
    """

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "res5") -> None:
        super().__init__()
        self.num_levels = 2
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for module in (self.p6, self.p7):
            weight_init.c2_xavier_fill(module)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return ``[p6, p7]``."""
        p6 = self.p6(x)
        return [p6, self.p7(F.relu(p6))]


def _build_fpn(cfg: Any, bottom_up: Backbone, top_block: nn.Module) -> FPN:
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg: Any, input_shape: ShapeSpec) -> FPN:
    """Build a ResNet-FPN with levels P2–P6 (P6 by :class:`LastLevelMaxPool`), as Mask R-CNN.

    Args:
        cfg: a config node (``MODEL.RESNETS.*`` and ``MODEL.FPN.*``).
        input_shape: shape of the input image.

    Returns:
        The FPN backbone.
    """
    return _build_fpn(cfg, build_resnet_backbone(cfg, input_shape), LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_retinanet_resnet_fpn_backbone(cfg: Any, input_shape: ShapeSpec) -> FPN:
    """Build a ResNet-FPN with levels P3–P7 (P6, P7 from C5 by :class:`LastLevelP6P7`).

    Args:
        cfg: a config node (``MODEL.RESNETS.*`` and ``MODEL.FPN.*``).
        input_shape: shape of the input image.

    Returns:
        The FPN backbone.
    """
    bottom_up = build_resnet_backbone(cfg, input_shape)
    in_channels = bottom_up.output_shape()["res5"].channels
    return _build_fpn(cfg, bottom_up, LastLevelP6P7(in_channels, cfg.MODEL.FPN.OUT_CHANNELS))
