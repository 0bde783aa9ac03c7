"""The PSPNet head: :class:`PyramidPoolingModule` and :class:`PSPNetHead`.

Follows Zhao et al., "Pyramid Scene Parsing Network" (CVPR 2017): the last backbone feature
goes through a pyramid pooling module (adaptive average pooling to bins 1, 2, 3, 6, a 1×1 conv
to C/4 each, bilinear upsampling back, concatenation with the input), a 3×3 fusion conv
(512 channels, norm, ReLU, dropout 0.1) and a 1×1 classifier. In training an auxiliary FCN head
on res4 (3×3 conv 256, norm, ReLU, dropout, classifier) adds a loss weighted 0.4.

Scores are upsampled by the feature's stride with ``align_corners=False`` and cropped to the
input (as Detectron2's DeepLab heads do) instead of resized to the input with
``align_corners=True`` as in the original Caffe code: every input size works, not only 8k + 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from segtron.config import configurable
from segtron.layers import Conv2d, ShapeSpec, get_norm
from segtron.layers.weight_init import c2_msra_fill
from segtron.modeling import SEM_SEG_HEADS_REGISTRY

__all__ = ["PSPNetHead", "PyramidPoolingModule"]

Norm = str | Callable[[int], nn.Module] | None


def _conv_norm_relu(in_channels: int, out_channels: int, kernel_size: int, norm: Norm) -> Conv2d:
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        padding=kernel_size // 2,
        bias=not norm,
        norm=get_norm(norm, out_channels),
        activation=F.relu,
    )
    c2_msra_fill(conv)
    return conv


def _classifier(in_channels: int, num_classes: int) -> Conv2d:
    predictor = Conv2d(in_channels, num_classes, kernel_size=1)
    nn.init.normal_(predictor.weight, 0, 0.001)
    nn.init.constant_(predictor.bias, 0)
    return predictor


class PyramidPoolingModule(nn.Module):
    """Pools a feature map to several grid sizes, reduces, upsamples back and concatenates.

    The output has ``in_channels + len(bins) * (in_channels // len(bins))`` channels (twice the
    input's when ``in_channels`` divides by the number of bins) at the input's size.
    """

    def __init__(self, in_channels: int, bins: Sequence[int], norm: Norm = "BN") -> None:
        """Create the module.

        Args:
            in_channels: channels of the input feature.
            bins: output sizes of the adaptive average poolings, e.g. (1, 2, 3, 6).
            norm: normalization after each 1×1 conv (see :func:`segtron.layers.get_norm`).

        Raises:
            ValueError: when `bins` is empty or not all positive integers.
        """
        super().__init__()
        bins = list(bins)
        if not bins or not all(isinstance(b, int) and b > 0 for b in bins):
            raise ValueError(
                f"PSPNet pyramid bins must be positive integers (MODEL.PSPNET.BINS), got {bins}."
            )
        self.bins = bins
        self.reduction_channels = in_channels // len(bins)
        if self.reduction_channels < 1:
            raise ValueError(
                f"PSPNet needs at least one channel per pyramid level: the input feature has "
                f"{in_channels} channels for {len(bins)} bins (MODEL.PSPNET.BINS)."
            )
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                _conv_norm_relu(in_channels, self.reduction_channels, 1, norm),
            )
            for b in bins
        )
        self.out_channels = in_channels + len(bins) * self.reduction_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate `x` with its pooled, reduced and upsampled versions.

        Args:
            x: (N, C, H, W) features.

        Returns:
            (N, out_channels, H, W) features.
        """
        size = x.shape[-2:]
        pooled = [
            F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False)
            for stage in self.stages
        ]
        return torch.cat([x, *pooled], dim=1)


@SEM_SEG_HEADS_REGISTRY.register()
class PSPNetHead(nn.Module):
    """PSPNet's head: pyramid pooling, fusion conv, classifier; auxiliary FCN head in training.

    Module names: ``ppm``, ``bottleneck``, ``predictor``; ``aux_head`` (conv, dropout,
    classifier) when the auxiliary loss weight is positive. It is used only in training.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        in_feature: str,
        num_classes: int,
        conv_dims: int = 512,
        bins: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
        norm: Norm = "BN",
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        aux_in_feature: str | None = "res4",
        aux_conv_dims: int = 256,
        aux_loss_weight: float = 0.4,
    ) -> None:
        """Create the head.

        Args:
            input_shape: shapes of the backbone's features, by name; must hold `in_feature`
                (and `aux_in_feature` when the auxiliary head is used).
            in_feature: the feature the pyramid pooling module reads ("res5").
            num_classes: number of classes to predict.
            conv_dims: channels of the 3×3 fusion conv.
            bins: output sizes of the pyramid poolings.
            dropout: dropout probability before each classifier.
            norm: normalization of every conv but the classifiers ("BN", "SyncBN", "GN", ...).
            loss_weight: weight of the main cross-entropy loss.
            ignore_value: label that takes no loss.
            aux_in_feature: the feature of the auxiliary FCN head; None for no auxiliary head.
            aux_conv_dims: channels of the auxiliary head's 3×3 conv.
            aux_loss_weight: weight of the auxiliary loss; 0 for no auxiliary head.

        Raises:
            ValueError: when a feature is missing from `input_shape`.
        """
        super().__init__()
        use_aux = bool(aux_in_feature) and aux_loss_weight > 0
        required = {"SEM_SEG_HEAD.IN_FEATURES": in_feature}
        if use_aux:
            required["PSPNET.AUX_IN_FEATURE"] = aux_in_feature
        for key, name in required.items():
            if name not in input_shape:
                raise ValueError(
                    f"PSPNetHead reads the feature {name!r} (MODEL.{key}), which the backbone "
                    f"does not output; it outputs {sorted(input_shape)} "
                    "(MODEL.RESNETS.OUT_FEATURES)."
                )
        self.in_feature = in_feature
        self.common_stride = input_shape[in_feature].stride
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight

        self.ppm = PyramidPoolingModule(input_shape[in_feature].channels, bins, norm)
        self.bottleneck = _conv_norm_relu(self.ppm.out_channels, conv_dims, 3, norm)
        self.dropout = nn.Dropout2d(dropout)
        self.predictor = _classifier(conv_dims, num_classes)

        self.aux_in_feature = aux_in_feature if use_aux else None
        self.aux_loss_weight = aux_loss_weight
        self.aux_head: nn.Sequential | None = None
        if self.aux_in_feature is not None:
            aux_shape = input_shape[self.aux_in_feature]
            self.aux_stride = aux_shape.stride
            self.aux_head = nn.Sequential(
                _conv_norm_relu(aux_shape.channels, aux_conv_dims, 3, norm),
                nn.Dropout2d(dropout),
                _classifier(aux_conv_dims, num_classes),
            )

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Arguments from MODEL.SEM_SEG_HEAD.* and MODEL.PSPNET.* (see ``add_pspnet_config``)."""
        head_cfg, psp_cfg = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.PSPNET
        if len(head_cfg.IN_FEATURES) != 1:
            raise ValueError(
                "PSPNetHead reads one feature: set MODEL.SEM_SEG_HEAD.IN_FEATURES to one name, "
                f'e.g. ["res5"]; got {list(head_cfg.IN_FEATURES)}.'
            )
        return {
            "input_shape": input_shape,
            "in_feature": head_cfg.IN_FEATURES[0],
            "num_classes": head_cfg.NUM_CLASSES,
            "conv_dims": head_cfg.CONVS_DIM,
            "bins": list(psp_cfg.BINS),
            "dropout": psp_cfg.DROPOUT,
            "norm": head_cfg.NORM,
            "loss_weight": head_cfg.LOSS_WEIGHT,
            "ignore_value": head_cfg.IGNORE_VALUE,
            "aux_in_feature": psp_cfg.AUX_IN_FEATURE or None,
            "aux_conv_dims": psp_cfg.AUX_CONVS_DIM,
            "aux_loss_weight": psp_cfg.AUX_LOSS_WEIGHT,
        }

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The main branch's class scores at the stride of `in_feature`."""
        x = self.bottleneck(self.ppm(features[self.in_feature]))
        return self.predictor(self.dropout(x))

    def forward(
        self, features: dict[str, torch.Tensor], targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Predict class scores, or compute the losses in training.

        Args:
            features: the backbone's features, by name.
            targets: (N, H, W) integer labels at the padded input size (training only).

        Returns:
            In training ``(None, {"loss_sem_seg": ..., "loss_sem_seg_aux": ...})`` (the second
            only with an auxiliary head); in inference ``((N, num_classes, H', W') scores, {})``,
            H' and W' being the feature size times its stride (at least the padded input size;
            ``sem_seg_postprocess`` crops the rest).
        """
        x = self.layers(features)
        if not self.training:
            return self._upsample(x, self.common_stride), {}
        if targets is None:
            raise ValueError("PSPNetHead needs targets in training.")
        losses = {"loss_sem_seg": self._loss(x, self.common_stride, targets) * self.loss_weight}
        if self.aux_head is not None:
            aux = self.aux_head(features[self.aux_in_feature])
            losses["loss_sem_seg_aux"] = (
                self._loss(aux, self.aux_stride, targets) * self.aux_loss_weight
            )
        return None, losses

    @staticmethod
    def _upsample(scores: torch.Tensor, stride: int) -> torch.Tensor:
        # In float32: bilinear interpolation of half-precision input is slow or unsupported on
        # some devices.
        return F.interpolate(
            scores.float(), scale_factor=stride, mode="bilinear", align_corners=False
        )

    def _loss(self, scores: torch.Tensor, stride: int, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of `scores` upsampled by `stride` and cropped to the targets' size."""
        height, width = targets.shape[-2:]
        scores = self._upsample(scores, stride)[..., :height, :width]
        return F.cross_entropy(scores, targets, reduction="mean", ignore_index=self.ignore_value)
