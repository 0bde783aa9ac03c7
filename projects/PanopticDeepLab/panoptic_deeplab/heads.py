"""The two decoders of Panoptic-DeepLab, built on DeepLab's `DeepLabV3PlusHead` (decoder only).

:class:`PanopticDeepLabSemSegHead` (``SEM_SEG_HEADS_REGISTRY``) adds two convs and a class
predictor, trained with DeepLabCE on per-pixel weights; :class:`PanopticDeepLabInsEmbedHead`
(``INS_EMBED_BRANCHES_REGISTRY``, built by :func:`build_ins_embed_branch`) adds a center branch
(masked MSE) and an offset branch (masked L1, offsets predicted at ``common_stride`` and scaled
by it when upsampled). Module and parameter names are Detectron2's (``head``, ``predictor``,
``center_head``, ``center_predictor``, ``offset_head``, ``offset_predictor``; the decoder's
``decoder.<feature>.{project_conv,fuse_conv}``), so its checkpoints load unchanged.

With ``use_depthwise_separable_conv`` the semantic ``head`` and the ``offset_head`` are one 5×5
depthwise-separable conv instead of two 3×3 convs, as in Detectron2 (the ``center_head`` keeps
its two convs there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from fvcore.common.registry import Registry
from torch import nn
from torch.nn import functional as F

from segtron.config import configurable
from segtron.layers import Conv2d, DepthwiseSeparableConv2d, ShapeSpec, get_norm
from segtron.layers.weight_init import c2_xavier_fill
from segtron.modeling import SEM_SEG_HEADS_REGISTRY
from segtron.projects.deeplab import DeepLabCE, DeepLabV3PlusHead, upsample_by_stride

__all__ = [
    "INS_EMBED_BRANCHES_REGISTRY",
    "PanopticDeepLabInsEmbedHead",
    "PanopticDeepLabSemSegHead",
    "build_ins_embed_branch",
]

NormSpec = str | Callable[[int], nn.Module] | None

INS_EMBED_BRANCHES_REGISTRY = Registry("INS_EMBED_BRANCHES")
INS_EMBED_BRANCHES_REGISTRY.__doc__ = """
Registry of instance embedding branches (``cfg.MODEL.INS_EMBED_HEAD.NAME``), called as
``obj(cfg, input_shape)``; the module predicts instance embeddings from the backbone features.
"""


def _two_convs(channels: int, out_channels: int, norm: NormSpec) -> nn.Sequential:
    """Two 3×3 conv + norm + ReLU: ``channels`` → ``channels`` → ``out_channels``."""
    convs = []
    for cout in (channels, out_channels):
        conv = Conv2d(
            channels,
            cout,
            kernel_size=3,
            padding=1,
            bias=norm == "",
            norm=get_norm(norm, cout),
            activation=F.relu,
        )
        c2_xavier_fill(conv)
        convs.append(conv)
    return nn.Sequential(*convs)


def _head(channels: int, out_channels: int, norm: NormSpec, depthwise_separable: bool):
    """Two 3×3 convs, or one 5×5 depthwise-separable conv (the same receptive field)."""
    if not depthwise_separable:
        return _two_convs(channels, out_channels, norm)
    return DepthwiseSeparableConv2d(
        channels,
        out_channels,
        kernel_size=5,
        padding=2,
        norm1=norm,
        activation1=F.relu,
        norm2=norm,
        activation2=F.relu,
    )


def _predictor(in_channels: int, out_channels: int) -> Conv2d:
    predictor = Conv2d(in_channels, out_channels, kernel_size=1)
    nn.init.normal_(predictor.weight, 0, 0.001)
    nn.init.constant_(predictor.bias, 0)
    return predictor


def _masked_mean(loss: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(loss * weights) / sum(weights)``; 0 (with gradient) when the weights are all 0."""
    loss = loss * weights
    total = weights.sum()
    return loss.sum() / total if total > 0 else loss.sum() * 0


@SEM_SEG_HEADS_REGISTRY.register()
class PanopticDeepLabSemSegHead(DeepLabV3PlusHead):
    """The semantic decoder of Panoptic-DeepLab (Cheng et al., 2020).

    A decoder-only `DeepLabV3PlusHead`, then ``head`` (two 3×3 convs, the second to
    ``head_channels``, or one 5×5 depthwise-separable conv) and a 1×1 ``predictor``.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        decoder_channels: Sequence[int],
        norm: NormSpec,
        head_channels: int,
        loss_weight: float,
        loss_type: str,
        loss_top_k: float,
        ignore_value: int,
        num_classes: int,
        **kwargs: Any,
    ) -> None:
        """Create the head.

        Args:
            input_shape: the features (see `DeepLabV3PlusHead`).
            decoder_channels: channels of each decoder stage, finest first, ASPP's last.
            norm: normalization of every conv but the predictor.
            head_channels: output channels of ``head``.
            loss_weight: factor of the loss.
            loss_type: "hard_pixel_mining" (DeepLabCE over the `loss_top_k` hardest pixels)
                or "cross_entropy" (weighted mean over the labelled pixels).
            loss_top_k: fraction of the pixels DeepLabCE averages.
            ignore_value: label that takes no loss.
            num_classes: number of classes.
            **kwargs: the other arguments of `DeepLabV3PlusHead` (``project_channels``,
                ``aspp_dilations``, ``aspp_dropout``, ``common_stride``, ``train_size``,
                ``use_depthwise_separable_conv``).
        """
        super().__init__(
            input_shape,
            decoder_channels=decoder_channels,
            norm=norm,
            ignore_value=ignore_value,
            **kwargs,
        )
        if loss_type not in ("hard_pixel_mining", "cross_entropy"):
            raise ValueError(
                f"cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = {loss_type!r} is not supported: use "
                "'hard_pixel_mining' or 'cross_entropy'."
            )
        self.loss_weight = loss_weight
        self.loss_type = loss_type
        self.head = _head(
            decoder_channels[0], head_channels, norm, self.use_depthwise_separable_conv
        )
        self.predictor = _predictor(head_channels, num_classes)
        top_k = loss_top_k if loss_type == "hard_pixel_mining" else 1.0
        self.loss = DeepLabCE(ignore_label=ignore_value, top_k_percent_pixels=top_k)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """`DeepLabV3PlusHead`'s arguments plus MODEL.SEM_SEG_HEAD.{HEAD_CHANNELS, LOSS_TOP_K}."""
        ret = super().from_config(cfg, input_shape)
        ret["head_channels"] = cfg.MODEL.SEM_SEG_HEAD.HEAD_CHANNELS
        ret["loss_top_k"] = cfg.MODEL.SEM_SEG_HEAD.LOSS_TOP_K
        return ret

    def forward(
        self,
        features: dict[str, torch.Tensor],
        targets: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Predict class scores, or compute the loss in training.

        Args:
            features: the backbone's features, by name.
            targets: (N, H, W) labels at the padded input size (training).
            weights: optional (N, H, W) per-pixel loss weights (training).

        Returns:
            ``(None, {"loss_sem_seg": ...})`` in training; else ``((N, C, H', W') scores at
            ``common_stride`` × the feature size, {})``.
        """
        y = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError("PanopticDeepLabSemSegHead needs targets in training.")
            return None, self.losses(y, targets, weights)
        return upsample_by_stride(y, self.common_stride), {}

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class scores at ``common_stride``."""
        return self.predictor(self.head(super().layers(features)))

    def losses(
        self,
        predictions: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The weighted loss of the upsampled predictions.

        With "cross_entropy" the weighted losses are averaged over the labelled pixels (the
        Detectron2 head would fail to pass weights to ``nn.CrossEntropyLoss``).
        """
        predictions = upsample_by_stride(
            predictions.float(), self.common_stride, targets.shape[-2:]
        )
        loss = self.loss(predictions, targets, weights)
        if self.loss_type == "cross_entropy":
            # DeepLabCE with top-k 1 averages over every pixel; rescale to the labelled ones.
            labelled = (targets != self.ignore_value).sum().clamp(min=1)
            loss = loss * targets.numel() / labelled
        return {"loss_sem_seg": loss * self.loss_weight}


def build_ins_embed_branch(cfg: Any, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """Build the instance embedding branch named by ``cfg.MODEL.INS_EMBED_HEAD.NAME``."""
    return INS_EMBED_BRANCHES_REGISTRY.get(cfg.MODEL.INS_EMBED_HEAD.NAME)(cfg, input_shape)


@INS_EMBED_BRANCHES_REGISTRY.register()
class PanopticDeepLabInsEmbedHead(DeepLabV3PlusHead):
    """The instance decoder of Panoptic-DeepLab: center heatmap and center offsets.

    A decoder-only `DeepLabV3PlusHead`; ``center_head`` (two 3×3 convs) and a 1×1
    ``center_predictor`` (1 channel); ``offset_head`` (two 3×3 convs or one 5×5
    depthwise-separable conv) and a 1×1 ``offset_predictor`` (2 channels, (dy, dx)).
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        decoder_channels: Sequence[int],
        norm: NormSpec,
        head_channels: int,
        center_loss_weight: float,
        offset_loss_weight: float,
        **kwargs: Any,
    ) -> None:
        """Create the head.

        Args:
            input_shape: the features (see `DeepLabV3PlusHead`).
            decoder_channels: channels of each decoder stage, finest first, ASPP's last.
            norm: normalization of every conv but the predictors.
            head_channels: output channels of the center and offset heads.
            center_loss_weight: factor of the center loss (masked MSE).
            offset_loss_weight: factor of the offset loss (masked L1).
            **kwargs: the other arguments of `DeepLabV3PlusHead` (``project_channels``,
                ``aspp_dilations``, ``aspp_dropout``, ``common_stride``, ``train_size``,
                ``use_depthwise_separable_conv``).
        """
        super().__init__(input_shape, decoder_channels=decoder_channels, norm=norm, **kwargs)
        self.center_loss_weight = center_loss_weight
        self.offset_loss_weight = offset_loss_weight
        self.center_head = _two_convs(decoder_channels[0], head_channels, norm)
        self.center_predictor = _predictor(head_channels, 1)
        self.offset_head = _head(
            decoder_channels[0], head_channels, norm, self.use_depthwise_separable_conv
        )
        self.offset_predictor = _predictor(head_channels, 2)
        self.center_loss = nn.MSELoss(reduction="none")
        self.offset_loss = nn.L1Loss(reduction="none")

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Arguments from MODEL.INS_EMBED_HEAD.*, INPUT.CROP.* and
        MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV (shared by both heads)."""
        head = cfg.MODEL.INS_EMBED_HEAD
        missing = [name for name in head.IN_FEATURES if name not in input_shape]
        if missing:
            raise ValueError(
                f"cfg.MODEL.INS_EMBED_HEAD.IN_FEATURES names {missing}, which the backbone does "
                f"not output; it outputs {sorted(input_shape)} (see MODEL.RESNETS.OUT_FEATURES)."
            )
        crop = cfg.INPUT.CROP
        # Fixed-size training crops set ASPP's pooling window, as in Detectron2.
        train_size = list(crop.SIZE) if crop.ENABLED and crop.TYPE == "absolute" else None
        return {
            "input_shape": {name: input_shape[name] for name in head.IN_FEATURES},
            "project_channels": head.PROJECT_CHANNELS,
            "aspp_dilations": head.ASPP_DILATIONS,
            "aspp_dropout": head.ASPP_DROPOUT,
            "decoder_channels": [head.CONVS_DIM] * (len(head.IN_FEATURES) - 1)
            + [head.ASPP_CHANNELS],
            "common_stride": head.COMMON_STRIDE,
            "norm": head.NORM,
            "train_size": train_size,
            "head_channels": head.HEAD_CHANNELS,
            "center_loss_weight": head.CENTER_LOSS_WEIGHT,
            "offset_loss_weight": head.OFFSET_LOSS_WEIGHT,
            "use_depthwise_separable_conv": cfg.MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV,
        }

    def forward(
        self,
        features: dict[str, torch.Tensor],
        center_targets: torch.Tensor | None = None,
        center_weights: torch.Tensor | None = None,
        offset_targets: torch.Tensor | None = None,
        offset_weights: torch.Tensor | None = None,
    ) -> tuple[Any, Any, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Predict centers and offsets, or compute their losses in training.

        Args:
            features: the backbone's features, by name.
            center_targets, center_weights: (N, 1, H, W) heatmaps and weights (training).
            offset_targets: (N, 2, H, W) (dy, dx) offsets (training).
            offset_weights: (N, 1, H, W) weights (training).

        Returns:
            In training ``(None, None, {"loss_center": ...}, {"loss_offset": ...})``; else
            ``(centers (N, 1, H', W'), offsets (N, 2, H', W') in input pixels, {}, {})`` at
            ``common_stride`` × the feature size.
        """
        center, offset = self.layers(features)
        if self.training:
            if center_targets is None or offset_targets is None:
                raise ValueError("PanopticDeepLabInsEmbedHead needs targets in training.")
            return (
                None,
                None,
                self.center_losses(center, center_targets, center_weights),
                self.offset_losses(offset, offset_targets, offset_weights),
            )
        center = upsample_by_stride(center, self.common_stride)
        offset = upsample_by_stride(offset, self.common_stride) * self.common_stride
        return center, offset, {}, {}

    def layers(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Center heatmap and offsets (in units of ``common_stride``) at ``common_stride``."""
        y = super().layers(features)
        center = self.center_predictor(self.center_head(y))
        offset = self.offset_predictor(self.offset_head(y))
        return center, offset

    def center_losses(
        self, predictions: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Masked MSE of the upsampled heatmap: ``{"loss_center": ...}``."""
        predictions = upsample_by_stride(
            predictions.float(), self.common_stride, targets.shape[-2:]
        )
        loss = _masked_mean(self.center_loss(predictions, targets), weights)
        return {"loss_center": loss * self.center_loss_weight}

    def offset_losses(
        self, predictions: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Masked L1 of the upsampled offsets, in pixels: ``{"loss_offset": ...}``."""
        predictions = (
            upsample_by_stride(predictions.float(), self.common_stride, targets.shape[-2:])
            * self.common_stride
        )
        loss = _masked_mean(self.offset_loss(predictions, targets), weights)
        return {"loss_offset": loss * self.offset_loss_weight}
