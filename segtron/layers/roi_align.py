"""``ROIAlign``: a module over ``torchvision.ops.roi_align`` with Detectron2's defaults."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import roi_align

__all__ = ["ROIAlign"]


class ROIAlign(nn.Module):
    """Bilinear pooling of each region of interest to a fixed-size grid.

    Unlike torchvision's ``RoIAlign``, ``aligned`` defaults to True: box coordinates are
    shifted by -0.5 pixel after scaling so that a continuous coordinate ``c`` is interpolated
    from the pixels whose centres are ``floor(c - 0.5) + 0.5`` and ``ceil(c - 0.5) + 0.5``.

    Args:
        output_size: (height, width) of the output grid, or one int for a square grid.
        spatial_scale: factor mapping box coordinates to input coordinates (1 / stride).
        sampling_ratio: sampling points per output bin along each axis; 0 for adaptive.
        aligned: use the half-pixel shift described above (False gives the legacy Detectron
            behaviour).
    """

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = True,
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """Pool each region of interest.

        Args:
            input: (N, C, H, W) features.
            rois: (R, 5) regions: index into the batch, then x0, y0, x1, y1.

        Returns:
            (R, C, output_height, output_width) pooled features.
        """
        if rois.dim() != 2 or rois.shape[1] != 5:
            raise ValueError(f"ROIAlign expects (R, 5) rois, got {tuple(rois.shape)}")
        return roi_align(
            input,
            rois.to(dtype=input.dtype),
            self.output_size,
            self.spatial_scale,
            self.sampling_ratio,
            self.aligned,
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
