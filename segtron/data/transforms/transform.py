"""Deterministic transforms that fvcore does not provide.

Everything else (crop, pad, flips, blend, no-op, lists of transforms) comes from
``fvcore.transforms`` and is re-exported by ``segtron.data.transforms``. Mirrors
``detectron2.data.transforms.transform`` for the transforms listed in ``__all__``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from fvcore.transforms.transform import Transform
from PIL import Image

__all__ = ["ResizeTransform"]

# PIL resampling filters and the matching torch interpolation modes (for non-uint8 images).
_TORCH_MODES = {
    Image.NEAREST: "nearest",
    Image.BILINEAR: "bilinear",
    Image.BICUBIC: "bicubic",
}


class ResizeTransform(Transform):
    """Resize an image from (h, w) to (new_h, new_w).

    uint8 images are resized with PIL; other dtypes with ``torch.nn.functional.interpolate``
    (nearest, bilinear or bicubic only). Segmentation maps always use nearest interpolation.
    """

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp: int | None = None) -> None:
        """Create the transform.

        Args:
            h: input height.
            w: input width.
            new_h: output height.
            new_w: output width.
            interp: a PIL resampling filter; bilinear when None.
        """
        super().__init__()
        if interp is None:
            interp = Image.BILINEAR
        self._set_attributes(locals())

    def _check_input(self, img: np.ndarray) -> None:
        if tuple(img.shape[:2]) != (self.h, self.w):
            raise ValueError(
                f"ResizeTransform expects an image of size {(self.h, self.w)}, "
                f"got {tuple(img.shape[:2])}."
            )

    def apply_image(self, img: np.ndarray, interp: int | None = None) -> np.ndarray:
        """Resize an H×W or H×W×C image; `interp` overrides the transform's filter."""
        self._check_input(img)
        interp_method = interp if interp is not None else self.interp
        if img.dtype == np.uint8:
            single_channel = img.ndim == 3 and img.shape[2] == 1
            pil_image = Image.fromarray(img[:, :, 0] if single_channel else img)
            resized = np.asarray(pil_image.resize((self.new_w, self.new_h), interp_method))
            return resized[:, :, None] if single_channel else resized
        if interp_method not in _TORCH_MODES:
            raise ValueError(
                f"ResizeTransform cannot resize a {img.dtype} image with PIL filter "
                f"{interp_method}; use nearest, bilinear or bicubic."
            )
        tensor = torch.from_numpy(np.ascontiguousarray(img))
        shape = list(tensor.shape)
        # Bring the tensor to N×C×H×W for interpolate, then restore the input layout.
        as_nchw = tensor.view(shape[:2] + [-1]).permute(2, 0, 1).unsqueeze(0)
        mode = _TORCH_MODES[interp_method]
        align_corners = None if mode == "nearest" else False
        if as_nchw.dtype not in (torch.float32, torch.float64):
            as_nchw = as_nchw.float()
        resized = F.interpolate(
            as_nchw, (self.new_h, self.new_w), mode=mode, align_corners=align_corners
        )
        shape[:2] = (self.new_h, self.new_w)
        out = resized.squeeze(0).permute(1, 2, 0).reshape(shape)
        return out.numpy().astype(img.dtype, copy=False)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """Scale N×2 (x, y) coordinates to the resized image."""
        coords = np.asarray(coords, dtype=np.float64).copy()
        coords[:, 0] = coords[:, 0] * (self.new_w * 1.0 / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h * 1.0 / self.h)
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """Resize a label map with nearest interpolation."""
        return self.apply_image(segmentation, interp=Image.NEAREST)

    def inverse(self) -> Transform:
        """The resize back to the input size."""
        return ResizeTransform(self.new_h, self.new_w, self.h, self.w, self.interp)
