"""VGG-16 backbone (Simonyan & Zisserman, 2015) with the dilated variant of DeepLab v1/v2.

Holds :class:`VGGStage` (the 3×3 convolutions of one stage and its max pooling),
:class:`VGG16`, the registered builder :func:`build_vgg16_backbone` (config node ``MODEL.VGG``)
and :func:`convert_torchvision_vgg16`, which renames torchvision's ImageNet weights.

Parameter names: stage ``s`` (1..5) is the submodule ``vgg<s>`` and its ``j``-th convolution
``vgg<s>.conv<j>`` (Caffe's ``conv<s>_<j>``), with its optional norm at ``vgg<s>.conv<j>.norm``.
torchvision's ``vgg16`` numbers the same convolutions ``features.N`` with N = 0, 2 | 5, 7 |
10, 12, 14 | 17, 19, 21 | 24, 26, 28 (``vgg16_bn``: conv N, batch norm N + 1, with N = 0, 3 |
7, 10 | 14, 17, 20 | 24, 27, 30 | 34, 37, 40); its ``classifier.0`` / ``classifier.3`` are
the fully connected fc6 / fc7, which FCN turns into 7×7 and 1×1 convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from segtron.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from segtron.layers.weight_init import c2_msra_fill

from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = ["VGGStage", "VGG16", "build_vgg16_backbone", "convert_torchvision_vgg16"]

# Convolutions per stage and output channels of each stage in VGG-16 ("configuration D").
VGG16_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
VGG16_CHANNELS = (64, 128, 256, 512, 512)
_OUT_FEATURES = [f"vgg{s}" for s in range(1, 6)]


class VGGStage(CNNBlockBase):
    """The 3×3 convolutions (+ optional norm) + ReLU of one VGG stage, then max pooling.

    The convolutions are the submodules ``conv1``, ``conv2``, ... (also listed in ``convs``);
    the pooling is ``pool`` (an ``nn.MaxPool2d``), whose ``kernel_size``, ``stride``,
    ``padding`` and ``ceil_mode`` a decoder may reuse, e.g. SegNet pooling with
    ``return_indices=True``: ``self.pool_with_indices(self.forward_convs(x))``.

    Args:
        in_channels: input channels.
        out_channels: channels of every convolution.
        num_convs: number of convolutions.
        norm: normalization after each convolution (see :func:`segtron.layers.get_norm`).
        dilation: dilation (and padding) of the convolutions.
        pool_kernel_size: kernel of the max pooling.
        pool_stride: stride of the max pooling (the stage's stride).
        pool_padding: padding of the max pooling.
        pool_ceil_mode: Caffe's output-size rounding (ceil) rather than PyTorch's (floor).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_convs: int,
        norm: str | None = "",
        dilation: int = 1,
        pool_kernel_size: int = 2,
        pool_stride: int = 2,
        pool_padding: int = 0,
        pool_ceil_mode: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, pool_stride)
        self.convs: list[Conv2d] = []
        for j in range(1, num_convs + 1):
            # Every conv keeps its bias, even with a norm, as torchvision's vgg16_bn does.
            conv = Conv2d(
                in_channels if j == 1 else out_channels,
                out_channels,
                kernel_size=3,
                padding=dilation,
                dilation=dilation,
                norm=get_norm(norm, out_channels),
                activation=F.relu,
            )
            c2_msra_fill(conv)
            self.add_module(f"conv{j}", conv)
            self.convs.append(conv)
        self.pool = nn.MaxPool2d(
            pool_kernel_size, stride=pool_stride, padding=pool_padding, ceil_mode=pool_ceil_mode
        )

    def forward_convs(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the convolutions only (the stage's output before pooling)."""
        for conv in self.convs:
            x = conv(x)
        return x

    def pool_with_indices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Max-pool like ``pool`` and also return the argmax indices (for ``F.max_unpool2d``)."""
        p = self.pool
        return F.max_pool2d(
            x, p.kernel_size, p.stride, p.padding, ceil_mode=p.ceil_mode, return_indices=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolutions, then max pooling."""
        return self.pool(self.forward_convs(x))


class VGG16(Backbone):
    """VGG-16's convolutional part: stages ``vgg1`` .. ``vgg5``, outputs after each pooling.

    Plain mode (``dilated=False``): 2×2 stride-2 poolings, outputs at strides 2, 4, 8, 16, 32,
    and ``size_divisibility`` is the last built stage's stride, so every pooling is exact and
    decoders (FCN skips, SegNet unpooling) align without cropping.

    Dilated mode (``dilated=True``) is the network of DeepLab v1 (LargeFOV) and v2 (VGG-16):
    as in its Caffe prototxt, pool1–pool3 are 3×3 stride 2 pad 1, pool4 and pool5 are 3×3
    stride 1 pad 1, conv5_x have dilation 2, and the poolings round up (Caffe), so ``vgg3``,
    ``vgg4`` and ``vgg5`` are at stride 8 and an input of side 8k + 1 gives maps of side k + 1
    (321 → 41). No size divisibility is imposed then. DeepLab-LargeFOV's extra 3×3 average
    pooling ("pool5a") and its fc6/fc7 belong to the head.

    Args:
        in_channels: input channels.
        channels: output channels of the five stages (VGG-16: 64, 128, 256, 512, 512).
        norm: normalization after each convolution ("" for none, as in VGG; "BN", "GN", ...).
        dilated: DeepLab's dilated variant (see above).
        out_features: names of the outputs, among "vgg1" .. "vgg5"; stages after the last one
            requested are not built. Default: ["vgg5"].
        freeze_at: number of leading stages to freeze (0: none).
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        channels: Sequence[int] = VGG16_CHANNELS,
        norm: str | None = "",
        dilated: bool = False,
        out_features: Sequence[str] | None = None,
        freeze_at: int = 0,
    ) -> None:
        super().__init__()
        if len(channels) != 5 or not all(isinstance(c, int) and c > 0 for c in channels):
            raise ValueError(f"VGG16 channels must be 5 positive integers, got {list(channels)}")
        out_features = list(out_features) if out_features is not None else ["vgg5"]
        if not out_features or not set(out_features) <= set(_OUT_FEATURES):
            raise ValueError(
                f"VGG16 out_features {out_features} must be a non-empty subset of {_OUT_FEATURES}"
            )
        self.dilated = dilated
        self._out_features = out_features
        self._out_feature_channels: dict[str, int] = {}
        self._out_feature_strides: dict[str, int] = {}
        self.stage_names: tuple[str, ...] = ()
        self.stages: list[VGGStage] = []
        num_stages = max(_OUT_FEATURES.index(f) for f in out_features) + 1
        stride, c_in = 1, in_channels
        for index in range(1, num_stages + 1):
            c_out = channels[index - 1]
            pool: dict[str, Any] = {}
            if dilated:
                pool_stride = 2 if index <= 3 else 1
                pool = dict(pool_kernel_size=3, pool_padding=1, pool_ceil_mode=True)
            else:
                pool_stride = 2
            stage = VGGStage(
                c_in,
                c_out,
                num_convs=VGG16_CONVS_PER_STAGE[index - 1],
                norm=norm,
                dilation=2 if dilated and index == 5 else 1,
                pool_stride=pool_stride,
                **pool,
            )
            name = f"vgg{index}"
            self.add_module(name, stage)
            self.stage_names += (name,)
            self.stages.append(stage)
            stride *= pool_stride
            self._out_feature_strides[name] = stride
            self._out_feature_channels[name] = c_out
            c_in = c_out
        self._size_divisibility = 0 if dilated else stride
        self.freeze(freeze_at)

    @property
    def size_divisibility(self) -> int:
        """The total pooling stride in plain mode (exact poolings); 0 in dilated mode."""
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the requested features.

        Args:
            x: an (N, C, H, W) tensor.

        Returns:
            A dict mapping each name of ``out_features`` to its tensor.
        """
        if x.dim() != 4:
            raise ValueError(f"VGG16 takes an (N, C, H, W) input, got shape {tuple(x.shape)}")
        outputs = {}
        for name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def freeze(self, freeze_at: int = 0) -> VGG16:
        """Freeze stages ``vgg1`` .. ``vgg<freeze_at>`` (see :meth:`CNNBlockBase.freeze`).

        Args:
            freeze_at: number of leading stages to freeze; 0 freezes nothing.

        Returns:
            The backbone itself.
        """
        for stage in self.stages[:freeze_at]:
            stage.freeze()
        return self


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"cfg.MODEL.{key} = {value!r} is not supported: {expected}")


@BACKBONE_REGISTRY.register()
def build_vgg16_backbone(cfg: Any, input_shape: ShapeSpec) -> VGG16:
    """Build a :class:`VGG16` from the config.

    Reads ``MODEL.VGG.OUT_FEATURES`` (among "vgg1" .. "vgg5"), ``MODEL.VGG.NORM``,
    ``MODEL.VGG.CHANNELS_PER_STAGE`` (five widths; narrow ones suit small experiments),
    ``MODEL.VGG.DILATED`` (DeepLab v1/v2's stride-8 network) and ``MODEL.BACKBONE.FREEZE_AT``
    (number of leading stages frozen).

    Args:
        cfg: a config node.
        input_shape: shape of the input image (its channels are used).

    Returns:
        The backbone.

    Raises:
        ValueError: for an unsupported value, naming the config key and the valid values.
    """
    v = cfg.MODEL.VGG
    out_features = list(v.OUT_FEATURES)
    _check(
        bool(out_features) and set(out_features) <= set(_OUT_FEATURES),
        "VGG.OUT_FEATURES",
        out_features,
        f"use a non-empty subset of {_OUT_FEATURES}",
    )
    channels = list(v.CHANNELS_PER_STAGE)
    _check(
        len(channels) == 5 and all(isinstance(c, int) and c > 0 for c in channels),
        "VGG.CHANNELS_PER_STAGE",
        channels,
        "use 5 positive integers, e.g. [64, 128, 256, 512, 512]",
    )
    freeze_at = cfg.MODEL.BACKBONE.FREEZE_AT
    _check(0 <= freeze_at <= 5, "BACKBONE.FREEZE_AT", freeze_at, "VGG16 takes 0 to 5")
    return VGG16(
        input_shape.channels,
        channels=channels,
        norm=v.NORM,
        dilated=v.DILATED,
        out_features=out_features,
        freeze_at=freeze_at,
    )


def convert_torchvision_vgg16(
    state_dict: dict[str, torch.Tensor],
    backbone_prefix: str = "backbone.",
    fc_prefix: str | None = None,
) -> dict[str, torch.Tensor]:
    """Rename torchvision's ``vgg16`` / ``vgg16_bn`` ImageNet weights to segtron's names.

    Args:
        state_dict: torchvision's state dict (``features.N.*``, ``classifier.N.*``).
        backbone_prefix: prefix of the :class:`VGG16` names in the target model.
        fc_prefix: when given, fc6 and fc7 (``classifier.0`` / ``classifier.3``) are reshaped
            to 7×7 and 1×1 convolution weights and named ``<fc_prefix>fc6.weight`` ... (FCN's
            heads use ``sem_seg_head.``); when None they are dropped.

    Returns:
        The renamed tensors, e.g. ``backbone.vgg1.conv1.weight`` for ``features.0.weight``;
        wrap it as ``{"model": ...}`` to load it with ``DetectionCheckpointer``.

    Raises:
        KeyError: when a convolution of VGG-16 is missing from ``state_dict``.
    """
    with_bn = "features.1.running_mean" in state_dict
    out: dict[str, torch.Tensor] = {}
    index = 0
    for s, num_convs in enumerate(VGG16_CONVS_PER_STAGE, start=1):
        for j in range(1, num_convs + 1):
            name = f"{backbone_prefix}vgg{s}.conv{j}"
            if f"features.{index}.weight" not in state_dict:
                raise KeyError(f"features.{index}.weight (conv{s}_{j}) is not in the state dict")
            for p in ("weight", "bias"):
                out[f"{name}.{p}"] = state_dict[f"features.{index}.{p}"]
            if with_bn:
                for p in ("weight", "bias", "running_mean", "running_var"):
                    out[f"{name}.norm.{p}"] = state_dict[f"features.{index + 1}.{p}"]
            index += 3 if with_bn else 2  # conv (+ bn) + relu
        index += 1  # max pooling
    if fc_prefix is not None and "classifier.0.weight" in state_dict:
        for fc, key, kernel in (("fc6", "classifier.0", 7), ("fc7", "classifier.3", 1)):
            weight = state_dict[f"{key}.weight"]
            out[f"{fc_prefix}{fc}.weight"] = weight.reshape(weight.shape[0], -1, kernel, kernel)
            out[f"{fc_prefix}{fc}.bias"] = state_dict[f"{key}.bias"]
    return out
