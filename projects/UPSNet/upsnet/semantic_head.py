"""UPSNet's semantic head (:class:`UPSNetSemanticHead`, in ``SEM_SEG_HEADS_REGISTRY``).

One subnet of 3×3 convolutions (deformable by default) is shared by every FPN level; its
outputs are upsampled to the finest level (stride 4), concatenated and classified by a 1×1
convolution into all semantic classes, stuff channels first, then thing channels. An optional
RoI loss classifies the RoI-aligned concatenated features of ground-truth boxes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from segtron.config import configurable
from segtron.layers import Conv2d, DeformConv, ROIAlign, ShapeSpec, get_norm
from segtron.modeling.meta_arch import SEM_SEG_HEADS_REGISTRY
from segtron.structures import Boxes

__all__ = ["DeformConvWithOffset", "UPSNetSemanticHead"]


class DeformConvWithOffset(nn.Module):
    """A 3×3 deformable convolution whose offsets come from a zero-initialized 3×3 convolution.

    At initialization the offsets are zero, so it starts as a plain convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm: nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Create the layer.

        Args:
            in_channels: input channels.
            out_channels: output channels.
            norm: normalization after the convolution.
            activation: applied last.
        """
        super().__init__()
        self.conv_offset = Conv2d(in_channels, 18, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        self.conv = DeformConv(
            in_channels,
            out_channels,
            kernel_size=3,
            padding=1,
            bias=norm is None,
            norm=norm,
            activation=activation,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve (N, C, H, W) features with learned offsets."""
        return self.conv(x, self.conv_offset(x))


@SEM_SEG_HEADS_REGISTRY.register()
class UPSNetSemanticHead(nn.Module):
    """The semantic head of UPSNet (Xiong et al., 2019).

    Called as ``head(features, targets)`` it follows the ``SEM_SEG_HEADS_REGISTRY`` contract;
    :class:`UPSNet` calls :meth:`layers` and the loss methods directly, since it also needs the
    logits in training.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        conv_dims: int,
        num_convs: int,
        deformable: bool = True,
        norm: str | Callable[[int], nn.Module] | None = "GN",
        loss_weight: float = 1.0,
        roi_loss_weight: float = 0.0,
        roi_size: int = 28,
        ignore_value: int = 255,
    ) -> None:
        """Create the head.

        Args:
            input_shape: the FPN levels it reads, by name; they must share one channel count.
            num_classes: output channels (stuff classes, then thing classes).
            conv_dims: channels of the subnet's last convolutions (128 in the paper).
            num_convs: depth of the subnet; the first ``num_convs - 2`` keep the input's
                channels, the others have ``conv_dims``.
            deformable: deformable convolutions (else plain ones).
            norm: normalization of the subnet's convolutions ("", "GN", "BN", ...).
            loss_weight: weight of the per-pixel cross-entropy.
            roi_loss_weight: weight of the RoI cross-entropy; 0 disables it.
            roi_size: side of the RoI grid.
            ignore_value: label without loss.

        Raises:
            ValueError: no input, levels of different widths, or ``num_convs < 1``.
        """
        super().__init__()
        shapes = sorted(input_shape.items(), key=lambda item: item[1].stride)
        if not shapes:
            raise ValueError("UPSNetSemanticHead needs at least one input feature.")
        channels = {shape.channels for _, shape in shapes}
        if len(channels) != 1:
            raise ValueError(
                f"UPSNetSemanticHead shares one subnet over its inputs, which need one width; "
                f"got {dict((name, s.channels) for name, s in shapes)}."
            )
        if num_convs < 1:
            raise ValueError(f"MODEL.UPSNET.SEM_SEG_NUM_CONVS must be >= 1, got {num_convs}.")
        self.in_features = [name for name, _ in shapes]
        self.common_stride = shapes[0][1].stride
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.roi_loss_weight = roi_loss_weight
        in_channels = channels.pop()
        layers = []
        for k in range(num_convs):
            out_channels = in_channels if k < num_convs - 2 else conv_dims
            conv_norm = get_norm(norm, out_channels)
            if deformable:
                layers.append(DeformConvWithOffset(in_channels, out_channels, conv_norm, F.relu))
            else:
                layers.append(
                    Conv2d(
                        in_channels,
                        out_channels,
                        kernel_size=3,
                        padding=1,
                        bias=conv_norm is None,
                        norm=conv_norm,
                        activation=F.relu,
                    )
                )
            in_channels = out_channels
        self.subnet = nn.Sequential(*layers)
        self.score = Conv2d(conv_dims * len(shapes), num_classes, kernel_size=1)
        nn.init.normal_(self.score.weight, std=0.01)
        nn.init.zeros_(self.score.bias)
        self.roi_align = ROIAlign(roi_size, 1.0 / self.common_stride, sampling_ratio=2)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """Arguments from MODEL.SEM_SEG_HEAD, MODEL.UPSNET and MODEL.ROI_HEADS.NUM_CLASSES.

        The number of outputs is ``SEM_SEG_HEAD.NUM_CLASSES - 1`` stuff classes plus
        ``ROI_HEADS.NUM_CLASSES`` thing classes.
        """
        head = cfg.MODEL.SEM_SEG_HEAD
        missing = [name for name in head.IN_FEATURES if name not in input_shape]
        if missing:
            raise ValueError(
                f"cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES names {missing}, which the backbone does "
                f"not output; it outputs {sorted(input_shape)}."
            )
        return {
            "input_shape": {k: input_shape[k] for k in head.IN_FEATURES},
            "num_classes": head.NUM_CLASSES - 1 + cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dims": head.CONVS_DIM,
            "num_convs": cfg.MODEL.UPSNET.SEM_SEG_NUM_CONVS,
            "deformable": cfg.MODEL.UPSNET.SEM_SEG_DEFORMABLE,
            "norm": head.NORM,
            "loss_weight": head.LOSS_WEIGHT,
            "roi_loss_weight": cfg.MODEL.UPSNET.SEM_SEG_ROI_LOSS_WEIGHT,
            "roi_size": cfg.MODEL.UPSNET.SEM_SEG_ROI_SIZE,
            "ignore_value": head.IGNORE_VALUE,
        }

    def layers(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and the concatenated features, at the finest input's stride.

        Args:
            features: backbone features by name.

        Returns:
            ``(logits, feats)``: (N, num_classes, h, w) and (N, conv_dims * levels, h, w).
        """
        finest = features[self.in_features[0]]
        size = finest.shape[-2:]
        outputs = []
        for name in self.in_features:
            x = self.subnet(features[name])
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            outputs.append(x)
        feats = torch.cat(outputs, dim=1)
        return self.score(feats), feats

    def forward(
        self, features: dict[str, torch.Tensor], targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Predict class scores at the input resolution, or the pixel loss in training.

        Args:
            features: backbone features by name.
            targets: (N, H, W) labels of the head's classes at the padded input size.

        Returns:
            ``(None, {"loss_sem_seg"})`` in training, ``((N, C, H, W) logits, {})`` otherwise.
        """
        logits, _ = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError("UPSNetSemanticHead needs targets in training.")
            return None, self.losses(logits, targets)
        return self.upsample(logits), {}

    def upsample(self, logits: torch.Tensor) -> torch.Tensor:
        """Bilinearly upsample logits from the head's stride to the input resolution."""
        return F.interpolate(
            logits.float(), scale_factor=self.common_stride, mode="bilinear", align_corners=False
        )

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted cross-entropy of the upsampled logits against (N, H, W) labels."""
        loss = F.cross_entropy(
            self.upsample(logits), targets, ignore_index=self.ignore_value, reduction="mean"
        )
        return {"loss_sem_seg": loss * self.loss_weight}

    def roi_losses(
        self, feats: torch.Tensor, boxes: list[Boxes], targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy of the classified RoI features of ground-truth boxes.

        Each box's target is the label map sampled (nearest) at the centres of its
        ``roi_size`` × ``roi_size`` bins.

        Args:
            feats: the concatenated features of :meth:`layers`.
            boxes: per image, boxes in input pixels.
            targets: (N, H, W) labels at the padded input size.

        Returns:
            ``{"loss_sem_seg_roi"}``; empty when the weight is 0.
        """
        if self.roi_loss_weight <= 0:
            return {}
        rois = torch.cat(
            [
                torch.cat([b.tensor.new_full((len(b), 1), float(i)), b.tensor], dim=1)
                for i, b in enumerate(boxes)
            ]
        )
        if len(rois) == 0:
            return {"loss_sem_seg_roi": feats.sum() * 0.0}
        logits = self.score(self.roi_align(feats, rois))
        roi_targets = _sample_labels_in_boxes(targets, rois, logits.shape[-1])
        loss = F.cross_entropy(logits, roi_targets, ignore_index=self.ignore_value)
        if not torch.isfinite(loss):  # every RoI pixel ignored
            loss = logits.sum() * 0.0
        return {"loss_sem_seg_roi": loss * self.roi_loss_weight}


def _sample_labels_in_boxes(labels: torch.Tensor, rois: torch.Tensor, size: int) -> torch.Tensor:
    """(R, size, size) labels at the bin centres of each (batch index, x0, y0, x1, y1) roi."""
    steps = (torch.arange(size, device=rois.device, dtype=torch.float32) + 0.5) / size
    x0, y0, x1, y1 = (rois[:, k : k + 1].float() for k in range(1, 5))
    xs = (x0 + steps * (x1 - x0)).floor().long().clamp(0, labels.shape[-1] - 1)
    ys = (y0 + steps * (y1 - y0)).floor().long().clamp(0, labels.shape[-2] - 1)
    batch = rois[:, 0].long()
    return labels[batch[:, None, None], ys[:, :, None], xs[:, None, :]]
