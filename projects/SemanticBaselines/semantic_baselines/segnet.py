"""SegNet (Badrinarayanan, Kendall & Cipolla, 2017) as a backbone: :class:`SegNet`.

The encoder is the core :class:`~segtron.modeling.backbone.VGG16` (13 convolutions, with batch
norm in SegNet); each of its stages is run as its convolutions then a max pooling that keeps
the argmax indices (``VGGStage.pool_with_indices``). The decoder mirrors the encoder: at each
stage, from the coarsest, ``F.max_unpool2d`` puts every value back at the position its pooling
took it from (zeros elsewhere), then 3×3 conv + norm + ReLU layers densify the sparse map; the
last convolution of a decoder stage maps to the channels of the next finer stage. The
backbone returns the last decoder map as ``"segnet"`` (stride 1) and the encoder's output as
``"vgg5"`` (stride 32), which a head may supervise directly; SegNet's classifier, a 3×3
convolution (Caffe's ``conv1_1_D``), is :class:`~.heads.PixelClassifierHead` with
``MODEL.PIXEL_CLASSIFIER.KERNEL_SIZE`` 3.

Names: the encoder is ``encoder.vgg<s>.conv<j>`` (torchvision weights convert with
``convert_torchvision_vgg16(sd, backbone_prefix="backbone.encoder.")``), the decoder
``dec<s>.conv<j>`` for Caffe's ``conv<s>_<j>_D``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from segtron.layers import Conv2d, ShapeSpec, get_norm
from segtron.layers.weight_init import c2_msra_fill
from segtron.modeling import BACKBONE_REGISTRY, Backbone
from segtron.modeling.backbone import VGG16

__all__ = ["SegNet", "build_segnet_vgg16_backbone"]


class SegNet(Backbone):
    """SegNet's encoder (a plain VGG16) and its mirrored decoder; outputs ``"segnet"``, ``"vgg5"``.

    Args:
        encoder: a VGG16 with all five stages and 2×2 stride-2 poolings (not dilated).
        norm: normalization after each decoder convolution ("BN" in SegNet).
    """

    def __init__(self, encoder: VGG16, *, norm: str = "BN") -> None:
        super().__init__()
        if encoder.dilated or len(encoder.stages) != 5:
            raise ValueError("SegNet needs a plain VGG16 encoder with its five stages built.")
        self.encoder = encoder
        for s, stage in enumerate(encoder.stages, start=1):
            decoder = nn.Module()
            num_convs = len(stage.convs)
            # Caffe's conv<s>_<n>_D .. conv<s>_1_D; conv1_1_D is the classifier (the head).
            for j in range(num_convs, 0 if s > 1 else 1, -1):
                out_channels = stage.in_channels if j == 1 else stage.out_channels
                conv = Conv2d(
                    stage.out_channels,
                    out_channels,
                    3,
                    padding=1,
                    bias=not norm,
                    norm=get_norm(norm, out_channels),
                    activation=F.relu,
                )
                c2_msra_fill(conv)
                decoder.add_module(f"conv{j}", conv)
            self.add_module(f"dec{s}", decoder)
        self._out_features = ["segnet", "vgg5"]
        self._out_feature_channels = {
            "segnet": encoder.stages[0].out_channels,
            "vgg5": encoder.stages[-1].out_channels,
        }
        self._out_feature_strides = {"segnet": 1, "vgg5": 32}

    @property
    def size_divisibility(self) -> int:
        """0: unpooling restores each pre-pooling size, so any input size works."""
        return 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode with pooling indices, decode by unpooling with them.

        Args:
            x: an (N, C, H, W) tensor.

        Returns:
            ``{"segnet": (N, channels of vgg1, H, W) map, "vgg5": the pooled encoder output}``.
        """
        if x.dim() != 4:
            raise ValueError(f"SegNet takes an (N, C, H, W) input, got shape {tuple(x.shape)}")
        pooled = []
        for stage in self.encoder.stages:
            x = stage.forward_convs(x)
            size = x.shape[-2:]
            x, indices = stage.pool_with_indices(x)
            pooled.append((indices, size))
        encoded = x
        for s in range(5, 0, -1):
            stage = self.encoder.stages[s - 1]
            indices, size = pooled[s - 1]
            pool = stage.pool
            x = F.max_unpool2d(
                x, indices, pool.kernel_size, pool.stride, pool.padding, output_size=size
            )
            for conv in getattr(self, f"dec{s}").children():
                x = conv(x)
        return {"segnet": x, "vgg5": encoded}


@BACKBONE_REGISTRY.register()
def build_segnet_vgg16_backbone(cfg: Any, input_shape: ShapeSpec) -> SegNet:
    """Build a :class:`SegNet` whose encoder is the core VGG-16 built from ``MODEL.VGG``.

    Reads ``MODEL.VGG.CHANNELS_PER_STAGE`` and ``MODEL.VGG.NORM`` (encoder and decoder; SegNet
    uses "BN") and ``MODEL.BACKBONE.FREEZE_AT`` (frozen encoder stages).

    Args:
        cfg: a config node.
        input_shape: shape of the input image (its channels are used).

    Returns:
        The backbone.

    Raises:
        ValueError: when ``MODEL.VGG.DILATED`` is set or a VGG key is invalid.
    """
    v = cfg.MODEL.VGG
    if v.DILATED:
        raise ValueError("cfg.MODEL.VGG.DILATED must be False for SegNet (its pools are 2x2).")
    channels = list(v.CHANNELS_PER_STAGE)
    if len(channels) != 5:
        raise ValueError(f"cfg.MODEL.VGG.CHANNELS_PER_STAGE = {channels} must have 5 widths")
    encoder = VGG16(
        input_shape.channels,
        channels=channels,
        norm=v.NORM,
        out_features=["vgg5"],
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )
    return SegNet(encoder, norm=v.NORM)
