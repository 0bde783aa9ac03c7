"""Anchor generators: ``ANCHOR_GENERATOR_REGISTRY`` and :class:`DefaultAnchorGenerator`.

Follows ``detectron2.modeling.anchor_generator``: anchors are laid out location by location
(row-major over the feature map) and, at each location, size by size then aspect ratio by
aspect ratio, the order a Detectron2 RPN head's output channels expect. The cell anchors are
non-persistent buffers, so they move with the module but never appear in checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from fvcore.common.registry import Registry
from torch import nn

from segtron.config import configurable
from segtron.layers import ShapeSpec, move_device_like
from segtron.structures import Boxes

__all__ = ["ANCHOR_GENERATOR_REGISTRY", "DefaultAnchorGenerator", "build_anchor_generator"]

ANCHOR_GENERATOR_REGISTRY = Registry("ANCHOR_GENERATOR")
ANCHOR_GENERATOR_REGISTRY.__doc__ = """
Registry of anchor generators, selected by ``cfg.MODEL.ANCHOR_GENERATOR.NAME``.

A registered object is called as ``obj(cfg, input_shape)``, where ``input_shape`` is the list of
:class:`ShapeSpec` of the feature maps the anchors are made for; it returns an ``nn.Module``.
"""


class BufferList(nn.Module):
    """A list of tensors held as non-persistent buffers (moved by ``.to()``, not saved)."""

    def __init__(self, buffers: list[torch.Tensor]) -> None:
        """Register ``buffers`` under the names ``"0"``, ``"1"``, ...

        Args:
            buffers: The tensors to hold.
        """
        super().__init__()
        for i, buffer in enumerate(buffers):
            self.register_buffer(str(i), buffer, persistent=False)

    def __len__(self) -> int:
        return len(self._buffers)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self._buffers.values())


def _create_grid_offsets(
    size: Sequence[int], stride: int, offset: float, target_device_tensor: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened x and y shifts of the cells of a ``size = (H, W)`` grid of step ``stride``."""
    grid_height, grid_width = int(size[0]), int(size[1])
    shifts_x = move_device_like(
        torch.arange(offset * stride, grid_width * stride, step=stride, dtype=torch.float32),
        target_device_tensor,
    )
    shifts_y = move_device_like(
        torch.arange(offset * stride, grid_height * stride, step=stride, dtype=torch.float32),
        target_device_tensor,
    )
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    return shift_x.reshape(-1), shift_y.reshape(-1)


def _broadcast_params(params: Sequence[Any], num_features: int, name: str) -> list[Any]:
    """Expand a per-feature parameter given once (flat, or as a one-element list) to all features.

    Args:
        params: A flat list of values for every feature, a list with one such list, or one list
            per feature.
        num_features: The number of feature maps.
        name: The parameter's name, for error messages.

    Returns:
        A list of ``num_features`` lists.

    Raises:
        ValueError: if ``params`` is empty or has a number of lists other than 1 or
            ``num_features``.
    """
    if not isinstance(params, Sequence) or len(params) == 0:
        raise ValueError(f"Anchor generator {name} must be a non-empty list, got {params!r}.")
    if not isinstance(params[0], Sequence):
        return [list(params)] * num_features
    if len(params) == 1:
        return [list(params[0])] * num_features
    if len(params) != num_features:
        raise ValueError(
            f"Anchor generator has {num_features} feature maps but {len(params)} lists of {name}."
        )
    return [list(p) for p in params]


@ANCHOR_GENERATOR_REGISTRY.register()
class DefaultAnchorGenerator(nn.Module):
    """Axis-aligned anchors of several sizes and aspect ratios at every feature-map location."""

    box_dim: int = 4
    """Number of coordinates of a box (XYXY)."""

    @configurable
    def __init__(
        self,
        *,
        sizes: list[list[float]] | list[float],
        aspect_ratios: list[list[float]] | list[float],
        strides: list[int],
        offset: float = 0.5,
    ) -> None:
        """Create the generator.

        Args:
            sizes: Anchor sizes (square root of the area, in input pixels): one list per feature
                map, or one list shared by all.
            aspect_ratios: Anchor aspect ratios (height / width), given like ``sizes``.
            strides: The stride of each feature map, in input pixels.
            offset: Position of the first anchor centre from the image corner, in units of the
                stride, in ``[0, 1)``; Detectron2 configs use 0.0 (its class default is 0.5).

        Raises:
            ValueError: if ``offset`` is outside ``[0, 1)`` or the parameter lists disagree.
        """
        super().__init__()
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"Anchor offset must be in [0, 1), got {offset}.")
        self.strides = list(strides)
        self.num_features = len(self.strides)
        sizes = _broadcast_params(sizes, self.num_features, "sizes")
        aspect_ratios = _broadcast_params(aspect_ratios, self.num_features, "aspect_ratios")
        self.cell_anchors = BufferList(
            [
                self.generate_cell_anchors(s, a).float()
                for s, a in zip(sizes, aspect_ratios, strict=True)
            ]
        )
        self.offset = offset

    @classmethod
    def from_config(cls, cfg: Any, input_shape: list[ShapeSpec]) -> dict[str, Any]:
        """Arguments from MODEL.ANCHOR_GENERATOR.* and the strides of ``input_shape``."""
        return {
            "sizes": cfg.MODEL.ANCHOR_GENERATOR.SIZES,
            "aspect_ratios": cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS,
            "strides": [shape.stride for shape in input_shape],
            "offset": cfg.MODEL.ANCHOR_GENERATOR.OFFSET,
        }

    @property
    def num_cell_anchors(self) -> list[int]:
        """Alias of :attr:`num_anchors`, kept for Detectron2 compatibility."""
        return self.num_anchors

    @property
    def num_anchors(self) -> list[int]:
        """The number of anchors at each location, for each feature map."""
        return [len(cell_anchors) for cell_anchors in self.cell_anchors]

    def generate_cell_anchors(
        self,
        sizes: Sequence[float] = (32, 64, 128, 256, 512),
        aspect_ratios: Sequence[float] = (0.5, 1, 2),
    ) -> torch.Tensor:
        """The anchors of one location, centred on the origin.

        Args:
            sizes: Anchor sizes (square root of the area).
            aspect_ratios: Anchor aspect ratios (height / width).

        Returns:
            ``(len(sizes) * len(aspect_ratios), 4)`` XYXY boxes, sizes in the outer order.
        """
        anchors = []
        for size in sizes:
            area = float(size) ** 2
            for aspect_ratio in aspect_ratios:
                w = math.sqrt(area / aspect_ratio)
                h = aspect_ratio * w
                anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(anchors)

    def _grid_anchors(self, grid_sizes: list[Sequence[int]]) -> list[torch.Tensor]:
        """The ``(H * W * A, 4)`` anchors of each feature map, for grids of ``(H, W)``."""
        anchors = []
        for size, stride, base_anchors in zip(
            grid_sizes, self.strides, self.cell_anchors, strict=True
        ):
            shift_x, shift_y = _create_grid_offsets(size, stride, self.offset, base_anchors)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            anchors.append((shifts.view(-1, 1, 4) + base_anchors.view(1, -1, 4)).reshape(-1, 4))
        return anchors

    def forward(self, features: list[torch.Tensor]) -> list[Boxes]:
        """Anchors for the given feature maps.

        Args:
            features: One ``(N, C, H, W)`` feature map per stride, in the order of ``strides``.

        Returns:
            One :class:`Boxes` of ``H * W * A`` anchors per feature map (the same for every
            image of the batch).
        """
        grid_sizes = [feature_map.shape[-2:] for feature_map in features]
        return [Boxes(x) for x in self._grid_anchors(grid_sizes)]


def build_anchor_generator(cfg: Any, input_shape: list[ShapeSpec]) -> nn.Module:
    """Build the anchor generator named by ``cfg.MODEL.ANCHOR_GENERATOR.NAME``.

    Args:
        cfg: The config.
        input_shape: The shapes of the feature maps the anchors are for.

    Returns:
        The anchor generator module.
    """
    name = cfg.MODEL.ANCHOR_GENERATOR.NAME
    return ANCHOR_GENERATOR_REGISTRY.get(name)(cfg, input_shape)
