"""Export of SOLOv2 inference (through Matrix NMS) to TorchScript at a fixed input size.

The traced module takes one (3, H, W) float image, 0–255 in the config's INPUT.FORMAT, of the
size given at export, and returns ``(masks, scores, classes, boxes)``: (K, H, W) bool masks,
(K,) scores in decreasing order, (K,) int64 classes and (K, 4) XYXY boxes around the masks.
The number K of detections varies from image to image; the input size does not.

ONNX is not offered: the ``onnx`` package is not a dependency of segtron.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from .solov2 import SOLOv2

__all__ = ["SOLOv2ExportWrapper", "export_torchscript"]


class SOLOv2ExportWrapper(nn.Module):
    """A SOLOv2 (or SOLO) model as a function of one fixed-size image tensor.

    Args:
        model: the model, in eval mode.
        height: input height.
        width: input width.
    """

    def __init__(self, model: SOLOv2, height: int, width: int) -> None:
        super().__init__()
        self.model = model
        self.height, self.width = int(height), int(width)
        divisibility = max(model.backbone.size_divisibility, 1)
        self.pad_h = -self.height % divisibility
        self.pad_w = -self.width % divisibility

    def forward(
        self, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Segment one image; see the module docstring for the outputs."""
        if not torch.jit.is_tracing() and tuple(image.shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"This export takes {self.height}x{self.width} images; got "
                f"{tuple(image.shape)}. Resize the image or export again at its size."
            )
        model = self.model
        x = (image.to(model.pixel_mean.dtype) - model.pixel_mean) / model.pixel_std
        x = F.pad(x, (0, self.pad_w, 0, self.pad_h))[None]
        cate_preds, kernel_preds, mask_out = model._network(x)
        size = (self.height, self.width)
        return model.inference_single(0, cate_preds, kernel_preds, mask_out, size, size)


def export_torchscript(
    model: SOLOv2, height: int, width: int, path: str | os.PathLike | None = None
) -> torch.jit.ScriptModule:
    """Trace SOLOv2 inference, Matrix NMS included, for (3, height, width) inputs.

    Args:
        model: a :class:`SOLOv2` or :class:`SOLO` model (switched to eval mode).
        height: input height of the export.
        width: input width of the export.
        path: where to save the TorchScript module (``torch.jit.save``); None saves nothing.

    Returns:
        The traced module; call it as ``masks, scores, classes, boxes = module(image)``.

    Raises:
        ValueError: the model uses greedy mask NMS (``MODEL.SOLOV2.NMS_TYPE "mask"``), whose
            loop over candidates cannot be traced.
    """
    if model.inference_params.nms_type != "matrix":
        raise ValueError(
            "Export needs Matrix NMS: set MODEL.SOLOV2.NMS_TYPE 'matrix' (got "
            f"{model.inference_params.nms_type!r})."
        )
    model.eval()
    wrapper = SOLOv2ExportWrapper(model, height, width).eval()
    example = torch.full((3, height, width), 128.0, device=model.device)
    with torch.no_grad(), warnings.catch_warnings():
        # Sizes recorded as constants: intended, the export is for one input size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
    if path is not None:
        torch.jit.save(traced, os.fspath(path))
    return traced
