"""ResNet / ResNeXt backbones with Detectron2's module and parameter names.

Holds :class:`ResNet`, its stage helpers and the registered config builders
``build_resnet_backbone`` and ``build_resnet_deeplab_backbone``; the blocks and stems live in
:mod:`.resnet_blocks` and are re-exported here, where Detectron2 defines them.

Both builders share one implementation that understands every ResNet key of the config,
including those Detectron2 reads only in its DeepLab project (``RES4_DILATION``,
``RES5_MULTI_GRID``, ``STEM_TYPE``). Their segtron defaults (1, [1, 1, 1], "basic") leave the
standard network unchanged, and other values give dilated (DC5, OS8) or DeepLab-stem networks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segtron.layers import CNNBlockBase, ShapeSpec

from .backbone import Backbone
from .build import BACKBONE_REGISTRY
from .resnet_blocks import (
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    DeepLabStem,
    DeformBottleneckBlock,
)

__all__ = [
    "ResNetBlockBase",
    "BasicBlock",
    "BottleneckBlock",
    "DeformBottleneckBlock",
    "BasicStem",
    "DeepLabStem",
    "ResNet",
    "make_stage",
    "build_resnet_backbone",
    "build_resnet_deeplab_backbone",
]

ResNetBlockBase = CNNBlockBase
"""Alias of :class:`segtron.layers.CNNBlockBase`, kept for Detectron2 compatibility."""

_STAGE_INDEX = {"res2": 2, "res3": 3, "res4": 4, "res5": 5}


class ResNet(Backbone):
    """ResNet: a stem followed by stages of residual blocks named ``res2``, ``res3``, ...

    Args:
        stem: the stem module; it must have ``out_channels`` and ``stride`` attributes.
        stages: the blocks of each stage (typically 4 stages); each block is a
            :class:`segtron.layers.CNNBlockBase`.
        num_classes: when given, add global average pooling and a linear classifier
            (``linear``) after the last stage.
        out_features: names of the outputs to return, among "stem", "res2", ... and "linear".
            Stages after the last requested one are not built. Default: the last layer.
        freeze_at: number of leading parts to freeze (see :meth:`freeze`).
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: Sequence[Sequence[CNNBlockBase]],
        num_classes: int | None = None,
        out_features: Sequence[str] | None = None,
        freeze_at: int = 0,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.num_classes = num_classes
        current_stride = stem.stride
        self._out_feature_strides = {"stem": current_stride}
        self._out_feature_channels = {"stem": stem.out_channels}

        if out_features is not None:
            available = ["stem", *(f"res{i}" for i in range(2, len(stages) + 2))]
            available += ["linear"] if num_classes is not None else []
            if not out_features or not set(out_features) <= set(available):
                raise ValueError(
                    f"ResNet out_features {list(out_features)} must be a non-empty subset of "
                    f"{available}"
                )
            if "linear" not in out_features:
                stages = stages[: max(_STAGE_INDEX.get(f, 1) for f in out_features) - 1]
        self.stage_names: tuple[str, ...] = ()
        self.stages: list[nn.Sequential] = []
        name = "stem"
        for index, blocks in enumerate(stages, start=2):
            if not blocks:
                raise ValueError(f"Stage res{index} of ResNet has no blocks")
            for block in blocks:
                if not isinstance(block, CNNBlockBase):
                    raise TypeError(f"ResNet blocks must be CNNBlockBase, got {type(block)}")
            name = f"res{index}"
            stage = nn.Sequential(*blocks)
            self.add_module(name, stage)
            self.stage_names += (name,)
            self.stages.append(stage)
            current_stride *= math.prod(block.stride for block in blocks)
            self._out_feature_strides[name] = current_stride
            self._out_feature_channels[name] = blocks[-1].out_channels

        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.linear = nn.Linear(self._out_feature_channels[name], num_classes)
            nn.init.normal_(self.linear.weight, std=0.01)
            name = "linear"

        self._out_features = list(out_features) if out_features is not None else [name]
        self.freeze(freeze_at)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the requested features.

        Args:
            x: an (N, C, H, W) tensor; any H and W work (no size divisibility needed).

        Returns:
            A dict mapping each name of ``out_features`` to its tensor.
        """
        if x.dim() != 4:
            raise ValueError(f"ResNet takes an (N, C, H, W) input, got shape {tuple(x.shape)}")
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        if self.num_classes is not None:
            x = self.linear(torch.flatten(self.avgpool(x), 1))
            if "linear" in self._out_features:
                outputs["linear"] = x
        return outputs

    def freeze(self, freeze_at: int = 0) -> ResNet:
        """Freeze the first parts of the network, typically for fine-tuning.

        Frozen blocks get ``requires_grad=False`` and their batch norms become
        :class:`segtron.layers.FrozenBatchNorm2d`.

        Args:
            freeze_at: 0 freezes nothing, 1 the stem, 2 the stem and ``res2``, and so on.

        Returns:
            The ResNet itself.
        """
        if freeze_at >= 1:
            self.stem.freeze()
        for index, stage in enumerate(self.stages, start=2):
            if freeze_at >= index:
                for block in stage.children():
                    block.freeze()
        return self

    @staticmethod
    def make_stage(
        block_class: type[CNNBlockBase],
        num_blocks: int,
        *,
        in_channels: int,
        out_channels: int,
        **kwargs: Any,
    ) -> list[CNNBlockBase]:
        """Create the blocks of one stage.

        Args:
            block_class: the block type; it must keep the spatial size unless its stride > 1.
            num_blocks: number of blocks.
            in_channels: input channels of the first block.
            out_channels: output channels of every block.
            **kwargs: other arguments of ``block_class``. An argument named ``<name>_per_block``
                is a list of ``num_blocks`` values, the i-th going to block i as ``<name>``
                (e.g. ``stride_per_block=[2, 1, 1]``); the others go to every block.

        Returns:
            The blocks.

        Raises:
            ValueError: for a per-block list of the wrong length, or an argument given both
                per block and for all blocks.
        """
        per_block: dict[str, Sequence[Any]] = {}
        shared: dict[str, Any] = {}
        for key, value in kwargs.items():
            if not key.endswith("_per_block"):
                shared[key] = value
                continue
            name = key[: -len("_per_block")]
            if len(value) != num_blocks:
                raise ValueError(f"make_stage: {key} has {len(value)} values, not {num_blocks}")
            if name in kwargs:
                raise ValueError(f"make_stage: got both {key} and {name}")
            per_block[name] = value
        blocks = []
        for i in range(num_blocks):
            block_kwargs = {**shared, **{name: values[i] for name, values in per_block.items()}}
            blocks.append(
                block_class(in_channels=in_channels, out_channels=out_channels, **block_kwargs)
            )
            in_channels = out_channels
        return blocks

    @staticmethod
    def make_default_stages(
        depth: int, block_class: type[CNNBlockBase] | None = None, **kwargs: Any
    ) -> list[list[CNNBlockBase]]:
        """Create the four stages of a standard ResNet of the given depth.

        Args:
            depth: 18, 34, 50, 101 or 152.
            block_class: the block type; by default :class:`BasicBlock` below depth 50 and
                :class:`BottleneckBlock` from 50 on (which then gets ``bottleneck_channels``).
            **kwargs: other arguments of :meth:`make_stage` (not strides nor channels).

        Returns:
            The blocks of each stage.
        """
        if depth not in _BLOCKS_PER_STAGE:
            raise ValueError(f"ResNet depth must be one of {sorted(_BLOCKS_PER_STAGE)}: {depth}")
        if block_class is None:
            block_class = BasicBlock if depth < 50 else BottleneckBlock
        widths = [64, 128, 256, 512] if depth < 50 else [256, 512, 1024, 2048]
        in_channels = [64, *widths[:-1]]
        stages = []
        for num_blocks, stride, c_in, c_out in zip(
            _BLOCKS_PER_STAGE[depth], [1, 2, 2, 2], in_channels, widths
        ):
            if depth >= 50:
                kwargs["bottleneck_channels"] = c_out // 4
            stages.append(
                ResNet.make_stage(
                    block_class,
                    num_blocks,
                    stride_per_block=[stride] + [1] * (num_blocks - 1),
                    in_channels=c_in,
                    out_channels=c_out,
                    **kwargs,
                )
            )
        return stages


make_stage = ResNet.make_stage
"""Alias of :meth:`ResNet.make_stage`, kept for Detectron2 compatibility."""

_BLOCKS_PER_STAGE = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}


_STEMS = {"basic": BasicStem, "deeplab": DeepLabStem}
_OUT_FEATURES = ["stem", "res2", "res3", "res4", "res5"]


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"cfg.MODEL.{key} = {value!r} is not supported: {expected}")


def _check_resnet_config(cfg: Any) -> None:
    """Raise ValueError, naming the key and the valid values, for unusable ResNet settings."""
    r = cfg.MODEL.RESNETS
    depth = r.DEPTH
    _require(depth in _BLOCKS_PER_STAGE, "RESNETS.DEPTH", depth, f"use {sorted(_BLOCKS_PER_STAGE)}")
    _require(r.STEM_TYPE in _STEMS, "RESNETS.STEM_TYPE", r.STEM_TYPE, f"use {sorted(_STEMS)}")
    out_features = list(r.OUT_FEATURES)
    _require(
        bool(out_features) and set(out_features) <= set(_OUT_FEATURES),
        "RESNETS.OUT_FEATURES",
        out_features,
        f"use a non-empty subset of {_OUT_FEATURES}",
    )
    _require(r.RES4_DILATION in (1, 2), "RESNETS.RES4_DILATION", r.RES4_DILATION, "use 1 or 2")
    _require(r.RES5_DILATION in (1, 2, 4), "RESNETS.RES5_DILATION", r.RES5_DILATION, "use 1, 2, 4")
    _require(
        r.RES4_DILATION == 1 or r.RES5_DILATION == 4,
        "RESNETS.RES5_DILATION",
        r.RES5_DILATION,
        "RES4_DILATION 2 (output stride 8) needs RES5_DILATION 4",
    )
    deform_on = list(r.DEFORM_ON_PER_STAGE)
    _require(len(deform_on) == 4, "RESNETS.DEFORM_ON_PER_STAGE", deform_on, "use 4 booleans")
    grid = list(r.RES5_MULTI_GRID)
    if depth < 50:
        basic_block_needs = {
            "RES2_OUT_CHANNELS": (r.RES2_OUT_CHANNELS, 64),
            "NUM_GROUPS": (r.NUM_GROUPS, 1),
            "RES5_MULTI_GRID": (grid, [1] * len(grid)),
            "DEFORM_ON_PER_STAGE": (deform_on, [False] * 4),
        }
        for key, (value, needed) in basic_block_needs.items():
            _require(
                value == needed,
                f"RESNETS.{key}",
                value,
                f"ResNet-{depth} uses BasicBlock, which needs {needed!r}",
            )
        return
    num_res5 = _BLOCKS_PER_STAGE[depth][-1]
    _require(
        len(grid) == num_res5 and all(isinstance(g, int) and g >= 1 for g in grid),
        "RESNETS.RES5_MULTI_GRID",
        grid,
        f"use {num_res5} positive integers, one per res5 block",
    )


def _build_resnet(cfg: Any, input_shape: ShapeSpec) -> ResNet:
    """Build a :class:`ResNet` from ``cfg.MODEL.RESNETS`` and ``cfg.MODEL.BACKBONE.FREEZE_AT``."""
    _check_resnet_config(cfg)
    r = cfg.MODEL.RESNETS
    depth, norm = r.DEPTH, r.NORM
    stem = _STEMS[r.STEM_TYPE](
        in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=norm
    )
    in_channels, out_channels = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    bottleneck_channels = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    # Stages after the last requested output would only hold parameters without gradients.
    num_stages = max(_STAGE_INDEX.get(f, 1) for f in r.OUT_FEATURES) - 1
    stages = []
    for index, num_blocks in enumerate(_BLOCKS_PER_STAGE[depth][:num_stages], start=2):
        dilation = {4: r.RES4_DILATION, 5: r.RES5_DILATION}.get(index, 1)
        # A dilated stage keeps the resolution of the previous one.
        first_stride = 1 if index == 2 or dilation > 1 else 2
        kwargs: dict[str, Any] = {
            "stride_per_block": [first_stride] + [1] * (num_blocks - 1),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "norm": norm,
        }
        block_class: type[CNNBlockBase] = BasicBlock
        if depth < 50:
            kwargs["dilation_per_block"] = [dilation] * num_blocks
        else:
            grid = r.RES5_MULTI_GRID if index == 5 else [1] * num_blocks
            kwargs.update(
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=r.STRIDE_IN_1X1,
                num_groups=r.NUM_GROUPS,
                dilation_per_block=[dilation * g for g in grid],
            )
            block_class = BottleneckBlock
            if r.DEFORM_ON_PER_STAGE[index - 2]:
                block_class = DeformBottleneckBlock
                kwargs.update(
                    deform_modulated=r.DEFORM_MODULATED, deform_num_groups=r.DEFORM_NUM_GROUPS
                )
        stages.append(ResNet.make_stage(block_class, num_blocks, **kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(
        stem, stages, out_features=list(r.OUT_FEATURES), freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT
    )


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg: Any, input_shape: ShapeSpec) -> ResNet:
    """Build a ResNet from the config.

    Reads ``MODEL.BACKBONE.FREEZE_AT`` and ``MODEL.RESNETS.*``: DEPTH (18, 34, 50, 101, 152),
    OUT_FEATURES, NORM, STEM_OUT_CHANNELS, RES2_OUT_CHANNELS, NUM_GROUPS and WIDTH_PER_GROUP
    (ResNeXt), STRIDE_IN_1X1, the DEFORM_* keys, RES5_DILATION, and, beyond Detectron2's
    builder of this name, RES4_DILATION, RES5_MULTI_GRID and STEM_TYPE (see
    :func:`build_resnet_deeplab_backbone`). With their defaults the network is Detectron2's.

    Args:
        cfg: a config node.
        input_shape: shape of the input image (its channels are used).

    Returns:
        The ResNet.

    Raises:
        ValueError: for an unsupported value, naming the config key and the valid values.
    """
    return _build_resnet(cfg, input_shape)


@BACKBONE_REGISTRY.register()
def build_resnet_deeplab_backbone(cfg: Any, input_shape: ShapeSpec) -> ResNet:
    """Build the dilated ResNet of Detectron2's DeepLab project from the config.

    Same implementation as :func:`build_resnet_backbone`; DeepLab configs set its extra keys:
    ``STEM_TYPE`` "deeplab" (:class:`DeepLabStem`) or "basic"; ``RES4_DILATION`` 1 or 2 and
    ``RES5_DILATION`` 1, 2 or 4 (a dilated stage has stride 1, so 1/2 gives output stride 16
    and 2/4 output stride 8); ``RES5_MULTI_GRID``, giving res5 block i the dilation
    ``RES5_DILATION * RES5_MULTI_GRID[i]``.

    Args:
        cfg: a config node.
        input_shape: shape of the input image (its channels are used).

    Returns:
        The ResNet.

    Raises:
        ValueError: for an unsupported value, naming the config key and the valid values.
    """
    return _build_resnet(cfg, input_shape)
