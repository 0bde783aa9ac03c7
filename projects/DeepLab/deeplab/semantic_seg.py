"""DeepLab v3 and v3+ semantic segmentation heads, registered in ``SEM_SEG_HEADS_REGISTRY``.

:class:`DeepLabV3Head` (ASPP on the coarsest feature, prediction at the output stride) and
:class:`DeepLabV3PlusHead` (ASPP plus a decoder that fuses low-level features and predicts at
their stride) keep the module and parameter names of Detectron2's ``projects/DeepLab``, so that
its checkpoints load unchanged. Both are used by ``SemanticSegmentor``.

Differences from Detectron2, on purpose:

- Input sizes. ASPP's image pooling accepts inputs whose features are not multiples of the
  training crop's features (see :mod:`.aspp`; Detectron2 rejects them). Inputs that are not
  multiples of the output stride are fine too: predictions (upsampled from features of size
  ``ceil(size / stride)``) are cropped to the labels in training and by ``SemanticSegmentor``
  in inference.
- ``DeepLabV3Head``'s predictor takes ``ASPP_CHANNELS`` inputs (Detectron2: ``CONVS_DIM``,
  which must then be equal); a ``COMMON_STRIDE`` that is not the stride of the predicted
  features, or a relative crop type, is reported instead of failing later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from segtron.config import configurable
from segtron.layers import Conv2d, DepthwiseSeparableConv2d, ShapeSpec, get_norm
from segtron.layers.weight_init import c2_xavier_fill
from segtron.modeling import SEM_SEG_HEADS_REGISTRY

from .aspp import NormSpec, aspp_pool_kernel_size, build_aspp
from .loss import build_sem_seg_loss

__all__ = ["DeepLabV3Head", "DeepLabV3PlusHead", "upsample_by_stride"]

logger = logging.getLogger(__name__)


def _train_size(cfg: Any) -> list[int] | None:
    """The fixed (h, w) of the training crops, or None (then ASPP pools globally)."""
    crop = cfg.INPUT.CROP
    if not crop.ENABLED:
        return None
    if crop.TYPE != "absolute":
        logger.info(
            f"INPUT.CROP.TYPE is {crop.TYPE!r}, not 'absolute': training crops have no fixed "
            "size, so ASPP uses global image pooling."
        )
        return None
    return list(crop.SIZE)


def _head_input_shape(cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, ShapeSpec]:
    """The backbone outputs named by MODEL.SEM_SEG_HEAD.IN_FEATURES."""
    names = list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES)
    missing = [name for name in names if name not in input_shape]
    if missing:
        raise ValueError(
            f"cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES names {missing}, which the backbone does not "
            f"output; it outputs {sorted(input_shape)} (see MODEL.RESNETS.OUT_FEATURES)."
        )
    return {name: input_shape[name] for name in names}


def _check_common_stride(common_stride: int, stride: int, feature: str) -> None:
    if common_stride != stride:
        raise ValueError(
            f"cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = {common_stride}, but the head predicts at "
            f"the stride of {feature!r}, {stride}: set COMMON_STRIDE to {stride}."
        )


def upsample_by_stride(
    x: torch.Tensor, stride: int, size: Sequence[int] | None = None
) -> torch.Tensor:
    """Upsample `x` by `stride` (bilinear) and crop it to `size` when given.

    Features of an input of size s have size ceil(s / stride), so the upsampled map covers the
    input and may exceed it by less than `stride`: the crop removes that margin.
    """
    x = F.interpolate(x, scale_factor=stride, mode="bilinear", align_corners=False)
    if size is None:
        return x
    if x.shape[-2] < size[0] or x.shape[-1] < size[1]:
        raise ValueError(
            f"Predictions upsampled to {tuple(x.shape[-2:])} do not cover the labels of size "
            f"{tuple(size)}: check cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE ({stride})."
        )
    return x[..., : size[0], : size[1]]


class _DeepLabHeadBase(nn.Module):
    """Forward pass and losses shared by the heads; subclasses define `layers`."""

    common_stride: int
    loss_weight: float
    decoder_only: bool = False

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, features: dict[str, torch.Tensor], targets: torch.Tensor | None = None
    ) -> Any:
        """Predict class scores, or compute the loss in training.

        Args:
            features: the backbone's features, by name.
            targets: (N, H, W) integer labels at the padded input size (training only).

        Returns:
            ``(None, {"loss_sem_seg": loss})`` in training; in inference ``((N, C, H', W')
            scores, {})`` with H', W' the feature size times ``common_stride`` (the padded
            input size, or up to ``common_stride - 1`` more). A decoder-only head
            (``num_classes=None``) returns its decoder features.
        """
        y = self.layers(features)
        if self.decoder_only:
            return y
        if self.training:
            if targets is None:
                raise ValueError(f"{type(self).__name__} needs targets in training.")
            return None, self.losses(y, targets)
        return upsample_by_stride(y, self.common_stride), {}

    def losses(self, predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss of the predictions upsampled to the labels.

        Args:
            predictions: the output of `layers`, at ``common_stride``.
            targets: (N, H, W) integer labels.

        Returns:
            ``{"loss_sem_seg": loss * loss_weight}``.
        """
        # Upsampled in float32: bilinear interpolation of half-precision input is slow or
        # unsupported on some devices.
        predictions = upsample_by_stride(
            predictions.float(), self.common_stride, targets.shape[-2:]
        )
        return {"loss_sem_seg": self.loss(predictions, targets) * self.loss_weight}


def _init_predictor(predictor: nn.Conv2d) -> None:
    nn.init.normal_(predictor.weight, 0, 0.001)
    nn.init.constant_(predictor.bias, 0)


@SEM_SEG_HEADS_REGISTRY.register()
class DeepLabV3Head(_DeepLabHeadBase):
    """The head of DeepLab v3 (Chen et al., 2017): ASPP, then a 1×1 classifier.

    Parameters: ``aspp.*`` (see `segtron.layers.ASPP`) and ``predictor.{weight,bias}``.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        aspp_channels: int,
        aspp_dilations: Sequence[int],
        aspp_dropout: float,
        common_stride: int,
        norm: NormSpec,
        train_size: Sequence[int] | None,
        loss_weight: float = 1.0,
        loss_type: str = "cross_entropy",
        ignore_value: int = -1,
        use_depthwise_separable_conv: bool = False,
    ) -> None:
        """Create the head.

        Args:
            input_shape: the one feature ASPP reads (usually res5 at output stride 16 or 8).
            num_classes: number of classes.
            aspp_channels: channels of the ASPP branches and output.
            aspp_dilations: the three atrous dilations (6, 12, 18 at OS16; 12, 24, 36 at OS8).
            aspp_dropout: dropout on ASPP's output.
            common_stride: the stride of the input feature (the output stride).
            norm: normalization of the ASPP convs.
            train_size: (h, w) of fixed training crops, or None (global image pooling).
            loss_weight: factor of the loss.
            loss_type: "cross_entropy" or "hard_pixel_mining".
            ignore_value: label that takes no loss.
            use_depthwise_separable_conv: depthwise-separable atrous convs in ASPP.

        Raises:
            ValueError: for more than one input feature, a `common_stride` that is not its
                stride, a `train_size` not divisible by it, or an unknown `loss_type`.
        """
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(
                "DeepLabV3Head reads one feature: set cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES to one "
                f"name (e.g. ['res5']), got {list(input_shape)}."
            )
        ((name, shape),) = input_shape.items()
        _check_common_stride(common_stride, shape.stride, name)
        self.in_features = [name]
        self.ignore_value = ignore_value
        self.common_stride = common_stride
        self.loss_weight = loss_weight
        self.loss_type = loss_type
        self.aspp = build_aspp(
            shape.channels,
            aspp_channels,
            aspp_dilations,
            norm=norm,
            pool_kernel_size=aspp_pool_kernel_size(train_size, shape.stride),
            dropout=aspp_dropout,
            use_depthwise_separable_conv=use_depthwise_separable_conv,
        )
        self.predictor = Conv2d(aspp_channels, num_classes, kernel_size=1)
        _init_predictor(self.predictor)
        self.loss = build_sem_seg_loss(loss_type, ignore_value)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Arguments from MODEL.SEM_SEG_HEAD.* and INPUT.CROP.*."""
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": _head_input_shape(cfg, input_shape),
            "num_classes": head.NUM_CLASSES,
            "aspp_channels": head.ASPP_CHANNELS,
            "aspp_dilations": head.ASPP_DILATIONS,
            "aspp_dropout": head.ASPP_DROPOUT,
            "common_stride": head.COMMON_STRIDE,
            "norm": head.NORM,
            "train_size": _train_size(cfg),
            "loss_weight": head.LOSS_WEIGHT,
            "loss_type": head.LOSS_TYPE,
            "ignore_value": head.IGNORE_VALUE,
            "use_depthwise_separable_conv": head.USE_DEPTHWISE_SEPARABLE_CONV,
        }

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class scores at the output stride."""
        return self.predictor(self.aspp(features[self.in_features[0]]))


@SEM_SEG_HEADS_REGISTRY.register()
class DeepLabV3PlusHead(_DeepLabHeadBase):
    """The head of DeepLab v3+ (Chen et al., 2018): ASPP plus a decoder.

    The input features are sorted by stride. The coarsest goes through ASPP; then, from coarse
    to fine, each other feature is projected by a 1×1 conv (``project_channels``), concatenated
    with the upsampled result so far and fused (two 3×3 convs, or one 5×5 depthwise-separable
    conv); a 1×1 classifier predicts at the finest stride. Parameters:
    ``decoder.<feature>.project_conv.*`` (ASPP for the coarsest feature),
    ``decoder.<feature>.fuse_conv.*`` and ``predictor.*``.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        project_channels: Sequence[int],
        aspp_dilations: Sequence[int],
        aspp_dropout: float,
        decoder_channels: Sequence[int],
        common_stride: int,
        norm: NormSpec,
        train_size: Sequence[int] | None,
        loss_weight: float = 1.0,
        loss_type: str = "cross_entropy",
        ignore_value: int = -1,
        num_classes: int | None = None,
        use_depthwise_separable_conv: bool = False,
    ) -> None:
        """Create the head.

        Args:
            input_shape: the features, e.g. res2 (low level) and res5 (ASPP's input).
            project_channels: output channels of the 1×1 projection of each low-level
                feature (one fewer than the features).
            aspp_dilations: the three atrous dilations.
            aspp_dropout: dropout on ASPP's output.
            decoder_channels: output channels of each decoder stage, finest first; the last
                is ASPP's (as many as the features).
            common_stride: stride of the finest feature, where the head predicts.
            norm: normalization of every conv but the predictor.
            train_size: (h, w) of fixed training crops, or None (global image pooling).
            loss_weight: factor of the loss.
            loss_type: "cross_entropy" or "hard_pixel_mining".
            ignore_value: label that takes no loss.
            num_classes: number of classes; None builds no predictor, and `forward` returns
                the decoder's features (as Panoptic-DeepLab uses it).
            use_depthwise_separable_conv: depthwise-separable convs in ASPP and the decoder.

        Raises:
            ValueError: for inconsistent lengths, a `common_stride` that is not the finest
                stride, a `train_size` not divisible by the coarsest stride, or an unknown
                `loss_type`.
        """
        super().__init__()
        shapes = sorted(input_shape.items(), key=lambda item: item[1].stride)
        self.in_features = [name for name, _ in shapes]
        if len(project_channels) != len(shapes) - 1:
            raise ValueError(
                f"cfg.MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS = {list(project_channels)} needs one "
                f"value per low-level feature of IN_FEATURES {self.in_features}, i.e. "
                f"{len(shapes) - 1}."
            )
        if len(decoder_channels) != len(shapes):
            raise ValueError(
                f"DeepLabV3PlusHead: decoder_channels {list(decoder_channels)} needs one value "
                f"per input feature {self.in_features}."
            )
        _check_common_stride(common_stride, shapes[0][1].stride, shapes[0][0])
        self.ignore_value = ignore_value
        self.common_stride = common_stride
        self.loss_weight = loss_weight
        self.loss_type = loss_type
        self.decoder_only = num_classes is None
        self.use_depthwise_separable_conv = use_depthwise_separable_conv
        use_bias = norm == ""

        self.decoder = nn.ModuleDict()
        for idx, (name, shape) in enumerate(shapes):
            stage = nn.ModuleDict()
            if idx == len(shapes) - 1:
                stage["project_conv"] = build_aspp(
                    shape.channels,
                    decoder_channels[-1],
                    aspp_dilations,
                    norm=norm,
                    pool_kernel_size=aspp_pool_kernel_size(train_size, shape.stride),
                    dropout=aspp_dropout,
                    use_depthwise_separable_conv=use_depthwise_separable_conv,
                )
                stage["fuse_conv"] = None
            else:
                project = Conv2d(
                    shape.channels,
                    project_channels[idx],
                    kernel_size=1,
                    bias=use_bias,
                    norm=get_norm(norm, project_channels[idx]),
                    activation=F.relu,
                )
                c2_xavier_fill(project)
                stage["project_conv"] = project
                stage["fuse_conv"] = self._fuse_conv(
                    project_channels[idx] + decoder_channels[idx + 1],
                    decoder_channels[idx],
                    norm,
                    use_depthwise_separable_conv,
                )
            self.decoder[name] = stage

        if not self.decoder_only:
            self.predictor = Conv2d(decoder_channels[0], num_classes, kernel_size=1)
            _init_predictor(self.predictor)
            self.loss = build_sem_seg_loss(loss_type, ignore_value)

    @staticmethod
    def _fuse_conv(
        in_channels: int, out_channels: int, norm: NormSpec, depthwise_separable: bool
    ) -> nn.Module:
        """Two 3×3 convs, or one 5×5 depthwise-separable conv (same receptive field)."""
        if depthwise_separable:
            return DepthwiseSeparableConv2d(
                in_channels,
                out_channels,
                kernel_size=5,
                padding=2,
                norm1=norm,
                activation1=F.relu,
                norm2=norm,
                activation2=F.relu,
            )
        convs = []
        for cin in (in_channels, out_channels):
            conv = Conv2d(
                cin,
                out_channels,
                kernel_size=3,
                padding=1,
                bias=norm == "",
                norm=get_norm(norm, out_channels),
                activation=F.relu,
            )
            c2_xavier_fill(conv)
            convs.append(conv)
        return nn.Sequential(*convs)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Arguments from MODEL.SEM_SEG_HEAD.* and INPUT.CROP.*.

        The decoder stages have CONVS_DIM channels and ASPP has ASPP_CHANNELS.
        """
        head = cfg.MODEL.SEM_SEG_HEAD
        decoder_channels = [head.CONVS_DIM] * (len(head.IN_FEATURES) - 1) + [head.ASPP_CHANNELS]
        return {
            "input_shape": _head_input_shape(cfg, input_shape),
            "project_channels": head.PROJECT_CHANNELS,
            "aspp_dilations": head.ASPP_DILATIONS,
            "aspp_dropout": head.ASPP_DROPOUT,
            "decoder_channels": decoder_channels,
            "common_stride": head.COMMON_STRIDE,
            "norm": head.NORM,
            "train_size": _train_size(cfg),
            "loss_weight": head.LOSS_WEIGHT,
            "loss_type": head.LOSS_TYPE,
            "ignore_value": head.IGNORE_VALUE,
            "num_classes": head.NUM_CLASSES,
            "use_depthwise_separable_conv": head.USE_DEPTHWISE_SEPARABLE_CONV,
        }

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class scores (or decoder features) at the finest stride."""
        y = None
        for name in self.in_features[::-1]:
            stage = self.decoder[name]
            x = stage["project_conv"](features[name])
            if y is None:
                y = x
            else:
                y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
                y = stage["fuse_conv"](torch.cat([x, y], dim=1))
        return y if self.decoder_only else self.predictor(y)
