"""DeepLab v1 (LargeFOV) and v2 (ASPP) heads, registered in ``SEM_SEG_HEADS_REGISTRY``.

- :class:`DeepLabV1LargeFOVHead` (Chen et al., "Semantic Image Segmentation with Deep
  Convolutional Nets and Fully Connected CRFs", ICLR 2015): on the dilated VGG-16 at stride 8
  (``build_vgg16_backbone`` with ``MODEL.VGG.DILATED True``): pool5a (3×3 average pooling,
  stride 1), fc6 (3×3, dilation 12, 1024 channels), ReLU, dropout, fc7 (1×1, 1024), ReLU,
  dropout, fc8 (1×1 classifier).
- :class:`DeepLabV2ASPPHead` (Chen et al., "DeepLab: Semantic Image Segmentation with Deep
  Convolutional Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2017), the ResNet-101
  variant: four parallel 3×3 classifiers with dilations 6, 12, 18, 24 ("ASPP-L") on res5 at
  output stride 8, whose class scores are summed.

Both predict at the feature stride and upsample bilinearly as DeepLab's Caffe ``Interp`` layer
does: feature i is centred on input pixel ``stride * i`` (true of Caffe-rounded pooling and of
padded stride-2 convolutions), so the scores are interpolated with ``align_corners=True`` to
``(h - 1) * stride + 1`` and the last ``stride - 1`` rows and columns are replicated. The loss
is the softmax cross-entropy of these upsampled scores against the labels (DeepLab instead
subsampled the labels by 8, which drops thin structures from the supervision). Their config
keys are added by :func:`add_deeplab_v1_v2_config`; the heads also read
``MODEL.SEM_SEG_HEAD.{IN_FEATURES, NUM_CLASSES, IGNORE_VALUE, LOSS_WEIGHT}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from segtron.config import CfgNode, add_missing_keys, configurable
from segtron.layers import Conv2d, ShapeSpec
from segtron.layers.weight_init import c2_msra_fill
from segtron.modeling import SEM_SEG_HEADS_REGISTRY

__all__ = [
    "DeepLabV1LargeFOVHead",
    "DeepLabV2ASPPHead",
    "add_deeplab_v1_v2_config",
    "upsample_like_caffe",
]

# (node, key, default): DeepLab-LargeFOV's fc6/fc7 and DeepLab v2's ASPP-L.
_KEYS: tuple[tuple[str, str, Any], ...] = (
    ("DEEPLAB_V1", "FC_DIM", 1024),
    ("DEEPLAB_V1", "FC_DILATION", 12),
    ("DEEPLAB_V1", "DROPOUT", 0.5),
    ("DEEPLAB_V1", "POOL5A", True),
    ("DEEPLAB_V2", "ASPP_DILATIONS", [6, 12, 18, 24]),
)


def add_deeplab_v1_v2_config(cfg: CfgNode) -> None:
    """Add the keys of the DeepLab v1/v2 heads to `cfg` (in place); present keys are kept.

    ``MODEL.DEEPLAB_V1``: ``FC_DIM`` (channels of fc6/fc7, 1024), ``FC_DILATION`` (of fc6, 12),
    ``DROPOUT`` (after fc6 and fc7, 0.5), ``POOL5A`` (the 3×3 stride-1 average pooling before
    fc6, True). ``MODEL.DEEPLAB_V2``: ``ASPP_DILATIONS`` ([6, 12, 18, 24]).

    Args:
        cfg: a config from `segtron.config.get_cfg`, not frozen.
    """
    add_missing_keys(cfg.MODEL, {f"{node_name}.{key}": value for node_name, key, value in _KEYS})


def upsample_like_caffe(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Upsample (N, C, h, w) scores by `stride`, feature i centred on output pixel stride * i.

    Args:
        x: scores at the feature stride.
        stride: the feature stride.

    Returns:
        (N, C, h * stride, w * stride) scores: bilinear (align_corners=True) up to
        ``(h - 1) * stride + 1``, the last ``stride - 1`` rows and columns replicated.
    """
    if stride == 1:
        return x
    h, w = x.shape[-2:]
    x = F.interpolate(
        x, size=((h - 1) * stride + 1, (w - 1) * stride + 1), mode="bilinear", align_corners=True
    )
    return F.pad(x, (0, stride - 1, 0, stride - 1), mode="replicate")


def _in_feature(cfg: CfgNode, input_shape: dict[str, ShapeSpec], head: str) -> str:
    names = list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES)
    if len(names) != 1 or names[0] not in input_shape:
        raise ValueError(
            f"{head} predicts from one backbone feature: cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES "
            f"must name one of {sorted(input_shape)}; got {names}."
        )
    return names[0]


class _SingleFeatureHead(nn.Module):
    """Forward pass and loss of a head that predicts from one feature at its stride."""

    def __init__(
        self, input_shape: ShapeSpec, in_feature: str, ignore_value: int, loss_weight: float
    ) -> None:
        super().__init__()
        self.in_feature = in_feature
        self.common_stride = input_shape.stride
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores at the feature stride."""
        raise NotImplementedError

    def forward(
        self, features: dict[str, torch.Tensor], targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Predict class scores, or compute the loss in training.

        Args:
            features: the backbone's features, by name.
            targets: (N, H, W) integer labels at the padded input size (training only).

        Returns:
            ``(None, {"loss_sem_seg": loss})`` in training; in inference ``((N, C, h * s,
            w * s) scores, {})`` for features of size h × w at stride s, which cover the
            padded input (see :func:`upsample_like_caffe`).
        """
        scores = self.layers(features[self.in_feature])
        if self.training:
            if targets is None:
                raise ValueError(f"{type(self).__name__} needs targets in training.")
            return None, self.losses(scores, targets)
        return upsample_like_caffe(scores, self.common_stride), {}

    def losses(self, scores: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Softmax cross-entropy of the upsampled scores, ignoring ``ignore_value``.

        Args:
            scores: the output of :meth:`layers`.
            targets: (N, H, W) integer labels.

        Returns:
            ``{"loss_sem_seg": loss * loss_weight}``.

        Raises:
            ValueError: when the upsampled scores do not cover the labels.
        """
        # float32: bilinear interpolation of half-precision input is slow or unsupported.
        scores = upsample_like_caffe(scores.float(), self.common_stride)
        height, width = targets.shape[-2:]
        if scores.shape[-2] < height or scores.shape[-1] < width:
            raise ValueError(
                f"{type(self).__name__}: scores upsampled to {tuple(scores.shape[-2:])} do not "
                f"cover the labels of size {(height, width)}; the feature "
                f"{self.in_feature!r} must have stride {self.common_stride}."
            )
        scores = scores[..., :height, :width]
        loss = F.cross_entropy(scores, targets, reduction="mean", ignore_index=self.ignore_value)
        return {"loss_sem_seg": loss * self.loss_weight}


def _init_classifier(conv: nn.Conv2d) -> None:
    # DeepLab's classifiers: Gaussian weights of std 0.01, zero bias.
    nn.init.normal_(conv.weight, 0, 0.01)
    nn.init.constant_(conv.bias, 0)


@SEM_SEG_HEADS_REGISTRY.register()
class DeepLabV1LargeFOVHead(_SingleFeatureHead):
    """DeepLab v1 LargeFOV: [pool5a], fc6 (3×3 dilated), fc7 (1×1), fc8 (1×1 classifier).

    Submodules keep the Caffe names ``pool5a``, ``fc6``, ``fc7``, ``fc8``.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        in_feature: str,
        num_classes: int,
        fc_dim: int = 1024,
        fc_dilation: int = 12,
        dropout: float = 0.5,
        pool5a: bool = True,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
    ) -> None:
        """Create the head.

        Args:
            input_shape: shape of the input feature (vgg5 of the dilated VGG-16, stride 8).
            in_feature: its name.
            num_classes: number of classes.
            fc_dim: channels of fc6 and fc7.
            fc_dilation: dilation (and padding) of fc6.
            dropout: dropout rate after fc6 and fc7.
            pool5a: start with a 3×3, stride 1, padding 1 average pooling, as LargeFOV does.
            ignore_value: label that takes no loss.
            loss_weight: factor of the loss.
        """
        super().__init__(input_shape, in_feature, ignore_value, loss_weight)
        self.pool5a = nn.AvgPool2d(3, stride=1, padding=1) if pool5a else nn.Identity()
        self.fc6 = Conv2d(
            input_shape.channels,
            fc_dim,
            kernel_size=3,
            padding=fc_dilation,
            dilation=fc_dilation,
            activation=F.relu,
        )
        self.fc7 = Conv2d(fc_dim, fc_dim, kernel_size=1, activation=F.relu)
        self.dropout = nn.Dropout(dropout)
        self.fc8 = Conv2d(fc_dim, num_classes, kernel_size=1)
        c2_msra_fill(self.fc6)
        c2_msra_fill(self.fc7)
        _init_classifier(self.fc8)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Arguments from MODEL.SEM_SEG_HEAD.* and MODEL.DEEPLAB_V1.*."""
        name = _in_feature(cfg, input_shape, cls.__name__)
        v1 = cfg.MODEL.DEEPLAB_V1
        return {
            "input_shape": input_shape[name],
            "in_feature": name,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "fc_dim": v1.FC_DIM,
            "fc_dilation": v1.FC_DILATION,
            "dropout": v1.DROPOUT,
            "pool5a": v1.POOL5A,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
        }

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores at the feature stride."""
        x = self.dropout(self.fc6(self.pool5a(x)))
        return self.fc8(self.dropout(self.fc7(x)))


@SEM_SEG_HEADS_REGISTRY.register()
class DeepLabV2ASPPHead(_SingleFeatureHead):
    """DeepLab v2 ASPP (ResNet variant): parallel dilated 3×3 classifiers, summed.

    ``aspp[i]`` is the classifier of dilation ``dilations[i]`` (Caffe's ``fc1_*_c<i>``).
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        in_feature: str,
        num_classes: int,
        dilations: Sequence[int] = (6, 12, 18, 24),
        ignore_value: int = 255,
        loss_weight: float = 1.0,
    ) -> None:
        """Create the head.

        Args:
            input_shape: shape of the input feature (res5 of a dilated ResNet, stride 8).
            in_feature: its name.
            num_classes: number of classes.
            dilations: dilation (and padding) of each branch.
            ignore_value: label that takes no loss.
            loss_weight: factor of the loss.

        Raises:
            ValueError: when ``dilations`` is empty or holds a non-positive value.
        """
        super().__init__(input_shape, in_feature, ignore_value, loss_weight)
        if not dilations or min(dilations) < 1:
            raise ValueError(
                "DeepLabV2ASPPHead needs positive dilations (cfg.MODEL.DEEPLAB_V2."
                f"ASPP_DILATIONS); got {list(dilations)}."
            )
        self.aspp = nn.ModuleList(
            Conv2d(input_shape.channels, num_classes, kernel_size=3, padding=d, dilation=d)
            for d in dilations
        )
        for conv in self.aspp:
            _init_classifier(conv)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Arguments from MODEL.SEM_SEG_HEAD.* and MODEL.DEEPLAB_V2.ASPP_DILATIONS."""
        name = _in_feature(cfg, input_shape, cls.__name__)
        return {
            "input_shape": input_shape[name],
            "in_feature": name,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "dilations": list(cfg.MODEL.DEEPLAB_V2.ASPP_DILATIONS),
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
        }

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of the branches' class scores, at the feature stride."""
        return torch.stack([branch(x) for branch in self.aspp]).sum(dim=0)
