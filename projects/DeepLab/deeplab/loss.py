"""Losses of the DeepLab heads: :class:`DeepLabCE` (cross-entropy with hard pixel mining)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DeepLabCE", "build_sem_seg_loss"]


class DeepLabCE(nn.Module):
    """Cross-entropy averaged over the hardest pixels only (hard pixel mining).

    The loss of every pixel is computed (0 for ``ignore_label`` pixels), optionally multiplied by
    a per-pixel weight, and the mean of the ``top_k_percent_pixels`` fraction of largest losses
    is returned; with 1.0, the mean over all pixels. As in Detectron2 (DeeperLab's loss), the
    fraction counts every pixel, ignored ones included, and the mean is over that many pixels,
    so ignored pixels (loss 0) are only picked when fewer valid pixels than k remain. At least
    one pixel is kept (Detectron2 takes none, and returns NaN, when the fraction rounds to 0).

    Args:
        ignore_label: label of pixels that take no loss.
        top_k_percent_pixels: fraction, in (0, 1], of the pixels to average the loss over.
        weight: optional per-class weights of the cross-entropy (C,).
    """

    def __init__(
        self,
        ignore_label: int = -1,
        top_k_percent_pixels: float = 1.0,
        weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < top_k_percent_pixels <= 1.0:
            raise ValueError(
                f"DeepLabCE: top_k_percent_pixels must be in (0, 1], got {top_k_percent_pixels}."
            )
        self.top_k_percent_pixels = top_k_percent_pixels
        self.ignore_label = ignore_label
        self.criterion = nn.CrossEntropyLoss(
            weight=weight, ignore_index=ignore_label, reduction="none"
        )

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The mean loss of the hardest pixels.

        Args:
            logits: (N, C, H, W) class scores.
            labels: (N, H, W) integer labels.
            weights: optional (N, H, W) per-pixel loss weights, applied before the selection.

        Returns:
            A scalar.
        """
        pixel_losses = self.criterion(logits, labels)
        if weights is not None:
            pixel_losses = pixel_losses * weights
        pixel_losses = pixel_losses.reshape(-1)
        if self.top_k_percent_pixels < 1.0:
            top_k = max(1, int(self.top_k_percent_pixels * pixel_losses.numel()))
            pixel_losses, _ = torch.topk(pixel_losses, top_k)
        return pixel_losses.mean()


def build_sem_seg_loss(loss_type: str, ignore_value: int) -> nn.Module:
    """The loss of a DeepLab head from ``MODEL.SEM_SEG_HEAD.LOSS_TYPE``.

    Args:
        loss_type: "cross_entropy" (mean over the non-ignored pixels) or "hard_pixel_mining"
            (:class:`DeepLabCE` over the 20% hardest pixels, as in Detectron2).
        ignore_value: label that takes no loss.

    Returns:
        A module called as ``loss(logits, labels)``.

    Raises:
        ValueError: for another `loss_type`.
    """
    if loss_type == "cross_entropy":
        return nn.CrossEntropyLoss(reduction="mean", ignore_index=ignore_value)
    if loss_type == "hard_pixel_mining":
        return DeepLabCE(ignore_label=ignore_value, top_k_percent_pixels=0.2)
    raise ValueError(
        f"cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = {loss_type!r} is not supported: use "
        "'cross_entropy' or 'hard_pixel_mining'."
    )
