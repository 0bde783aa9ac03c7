"""`ImageList`: a batch of images of different sizes, padded into one tensor.

Mirrors ``detectron2.structures.image_list``. Scripting and tracing are not special-cased:
image sizes are always plain ``(int, int)`` tuples.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F


class ImageList:
    """Images of possibly different sizes, padded (bottom/right) into a single tensor.

    Attributes:
        tensor (torch.Tensor): the padded batch, of shape (N, H, W) or (N, C_1, ..., C_K, H, W).
        image_sizes (list[tuple[int, int]]): the (height, width) of each image before padding.
    """

    def __init__(self, tensor: torch.Tensor, image_sizes: list[tuple[int, int]]) -> None:
        """Wrap an already padded batch.

        Args:
            tensor: of shape (N, H, W) or (N, C_1, ..., C_K, H, W).
            image_sizes: (h, w) of each image; each may be smaller than (H, W).
        """
        self.tensor = tensor
        self.image_sizes = image_sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> torch.Tensor:
        """Return image `idx` without its padding.

        Args:
            idx: the image index.

        Returns:
            A tensor of shape (h, w) or (C_1, ..., C_K, h, w).
        """
        height, width = self.image_sizes[idx]
        return self.tensor[idx, ..., :height, :width]

    def to(self, *args: Any, **kwargs: Any) -> ImageList:
        """Return the ImageList with its tensor moved or cast by `Tensor.to(*args, **kwargs)`."""
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    @property
    def device(self) -> torch.device:
        """The device of the batch tensor."""
        return self.tensor.device

    @staticmethod
    def from_tensors(
        tensors: list[torch.Tensor] | tuple[torch.Tensor, ...],
        size_divisibility: int = 0,
        pad_value: float = 0.0,
        padding_constraints: dict[str, int] | None = None,
    ) -> ImageList:
        """Pad images to a common size and batch them.

        Args:
            tensors: images of shape (H_i, W_i) or (C_1, ..., C_K, H_i, W_i); all dimensions
                but the last two must agree.
            size_divisibility: if > 1, the padded height and width are rounded up to multiples
                of it (many backbones need 32).
            pad_value: the value of the padding.
            padding_constraints: optional dict; ``"size_divisibility"`` overrides the argument
                of that name, and ``"square_size"`` > 0 pads to a square of that side (before
                rounding up to the divisibility).

        Returns:
            The ImageList; images keep their top-left corner and are padded bottom/right.

        Raises:
            ValueError: for an empty list, non-tensor inputs, mismatched leading dimensions, or
                a square size smaller than an image (Detectron2 would crop or fail there).
        """
        if not isinstance(tensors, (list, tuple)) or len(tensors) == 0:
            raise ValueError("ImageList.from_tensors needs a non-empty list of tensors.")
        for image in tensors:
            if not isinstance(image, torch.Tensor) or image.dim() < 2:
                raise ValueError(
                    f"ImageList.from_tensors needs tensors of shape (..., H, W); got {image!r:.80}."
                )
        leading_shape = tensors[0].shape[:-2]
        for image in tensors:
            if image.shape[:-2] != leading_shape:
                raise ValueError(
                    "ImageList.from_tensors needs images with the same leading dimensions; got "
                    f"{tuple(tensors[0].shape)} and {tuple(image.shape)}."
                )

        image_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in tensors]
        max_height = max(height for height, _ in image_sizes)
        max_width = max(width for _, width in image_sizes)
        if padding_constraints is not None:
            square_size = padding_constraints.get("square_size", 0)
            if square_size > 0:
                if square_size < max(max_height, max_width):
                    raise ValueError(
                        f"square_size={square_size} is smaller than the largest image "
                        f"({max_height}x{max_width})."
                    )
                max_height = max_width = square_size
            size_divisibility = padding_constraints.get("size_divisibility", size_divisibility)
        if size_divisibility > 1:
            max_height = -(-max_height // size_divisibility) * size_divisibility
            max_width = -(-max_width // size_divisibility) * size_divisibility

        if len(tensors) == 1:
            height, width = image_sizes[0]
            padding = [0, max_width - width, 0, max_height - height]
            batched = F.pad(tensors[0], padding, value=pad_value).unsqueeze(0)
        else:
            batch_shape = (len(tensors), *leading_shape, max_height, max_width)
            batched = tensors[0].new_full(batch_shape, pad_value)
            for image, padded in zip(tensors, batched):
                padded[..., : image.shape[-2], : image.shape[-1]].copy_(image)
        return ImageList(batched.contiguous(), image_sizes)
