"""Axis-aligned boxes: the `BoxMode` enum, the `Boxes` container and pairwise box metrics.

Mirrors ``detectron2.structures.boxes``. Where the results differ on purpose (no NaN for boxes
with an empty union, clearer exception types), the docstrings say so.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from enum import IntEnum, unique
from typing import Any

import numpy as np
import torch

_RawBoxType = list[float] | tuple[float, ...] | torch.Tensor | np.ndarray

_RELATIVE_MODES_ERROR = (
    "BoxMode.XYXY_REL and BoxMode.XYWH_REL are not supported (as in Detectron2); "
    "multiply by the image size to get absolute coordinates first."
)


@unique
class BoxMode(IntEnum):
    """How the numbers of a box are laid out.

    Attributes:
        XYXY_ABS: (x0, y0, x1, y1) in absolute pixel coordinates.
        XYWH_ABS: (x0, y0, width, height) in absolute pixel coordinates.
        XYXY_REL: (x0, y0, x1, y1) relative to the image size. Not supported by `convert`.
        XYWH_REL: (x0, y0, width, height) relative to the image size. Not supported by `convert`.
        XYWHA_ABS: (x_center, y_center, width, height, angle) with the angle in degrees,
            counter-clockwise.
    """

    XYXY_ABS = 0
    XYWH_ABS = 1
    XYXY_REL = 2
    XYWH_REL = 3
    XYWHA_ABS = 4

    @staticmethod
    def convert(box: _RawBoxType, from_mode: BoxMode, to_mode: BoxMode) -> _RawBoxType:
        """Convert boxes from one mode to another.

        Supported conversions: XYXY_ABS <-> XYWH_ABS, XYWH_ABS -> XYWHA_ABS and
        XYWHA_ABS -> XYXY_ABS (the axis-aligned rectangle enclosing the rotated box).

        Args:
            box: a single box as a list/tuple of 4 or 5 numbers, or an array/tensor whose last
                dimension holds the 4 or 5 numbers of each box (typically Nxk).
            from_mode: the mode `box` is in.
            to_mode: the mode to convert to.

        Returns:
            The converted box(es), of the same type as `box` (list, tuple, ndarray or Tensor).
            The input is never modified.

        Raises:
            ValueError: if a list/tuple does not have 4 or 5 elements, or the last dimension
                does not match `from_mode`.
            NotImplementedError: for relative modes (Detectron2 raises AssertionError there)
                and unsupported mode pairs.
        """
        if from_mode == to_mode:
            return box
        if from_mode in _RELATIVE_MODES or to_mode in _RELATIVE_MODES:
            raise NotImplementedError(_RELATIVE_MODES_ERROR)

        if isinstance(box, (list, tuple)):
            if len(box) not in (4, 5):
                raise ValueError(
                    "BoxMode.convert takes a list/tuple of 4 or 5 numbers, or an array/tensor of "
                    f"shape (..., 4 or 5); got a {type(box).__name__} of length {len(box)}."
                )
            arr = torch.tensor(box)[None, :]
        elif isinstance(box, np.ndarray):
            arr = torch.from_numpy(np.array(box))
        else:
            arr = box.clone()
        lead_shape = arr.shape[:-1]
        arr = arr.reshape(-1, arr.shape[-1])
        out = _convert_rows(arr, BoxMode(from_mode), BoxMode(to_mode))

        if isinstance(box, (list, tuple)):
            return type(box)(out.flatten().tolist())
        out = out.reshape(*lead_shape, out.shape[-1])
        return out.numpy() if isinstance(box, np.ndarray) else out


_RELATIVE_MODES = (BoxMode.XYXY_REL, BoxMode.XYWH_REL)


def _convert_rows(arr: torch.Tensor, from_mode: BoxMode, to_mode: BoxMode) -> torch.Tensor:
    """Convert an Nxk tensor (which the caller owns) between two absolute box modes."""
    expected = 5 if from_mode == BoxMode.XYWHA_ABS else 4
    if arr.shape[-1] != expected:
        raise ValueError(
            f"Boxes in {from_mode.name} need {expected} numbers each; got shape {tuple(arr.shape)}."
        )
    if from_mode == BoxMode.XYWHA_ABS and to_mode == BoxMode.XYXY_ABS:
        dtype = arr.dtype
        arr = arr.double()
        width, height = arr[:, 2], arr[:, 3]
        radians = arr[:, 4] * (math.pi / 180.0)
        cos, sin = radians.cos().abs(), radians.sin().abs()
        enclosing_w = cos * width + sin * height
        enclosing_h = sin * width + cos * height
        x0 = arr[:, 0] - enclosing_w / 2.0
        y0 = arr[:, 1] - enclosing_h / 2.0
        out = torch.stack([x0, y0, x0 + enclosing_w, y0 + enclosing_h], dim=1)
        return out.to(dtype)
    if from_mode == BoxMode.XYWH_ABS and to_mode == BoxMode.XYWHA_ABS:
        dtype = arr.dtype
        arr = arr.double()
        centers = arr[:, :2] + arr[:, 2:] / 2.0
        angles = arr.new_zeros((arr.shape[0], 1))
        return torch.cat([centers, arr[:, 2:], angles], dim=1).to(dtype)
    if from_mode == BoxMode.XYWH_ABS and to_mode == BoxMode.XYXY_ABS:
        arr[:, 2:] += arr[:, :2]
        return arr
    if from_mode == BoxMode.XYXY_ABS and to_mode == BoxMode.XYWH_ABS:
        arr[:, 2:] -= arr[:, :2]
        return arr
    raise NotImplementedError(
        f"Conversion from BoxMode.{from_mode.name} to BoxMode.{to_mode.name} is not supported."
    )


class Boxes:
    """A list of N axis-aligned boxes stored as an Nx4 float32 tensor of (x0, y0, x1, y1).

    Behaves like a tensor for indexing, `to(device)`, `device`, `len` and iteration.

    Attributes:
        tensor (torch.Tensor): Nx4 float32 matrix; each row is (x0, y0, x1, y1).
    """

    def __init__(self, tensor: torch.Tensor | np.ndarray | list[Any]) -> None:
        """Create boxes.

        Args:
            tensor: an Nx4 tensor, array or nested list of (x0, y0, x1, y1) rows. Any empty
                input gives a (0, 4) tensor.

        Raises:
            ValueError: if the input is not empty and not of shape Nx4.
        """
        if isinstance(tensor, torch.Tensor):
            tensor = tensor.to(torch.float32)
        else:
            tensor = torch.as_tensor(tensor, dtype=torch.float32, device=torch.device("cpu"))
        if tensor.numel() == 0:
            tensor = tensor.reshape((0, 4))
        if tensor.dim() != 2 or tensor.shape[-1] != 4:
            raise ValueError(f"Boxes needs an Nx4 tensor; got shape {tuple(tensor.shape)}.")
        self.tensor = tensor

    def clone(self) -> Boxes:
        """Return a copy whose tensor does not share storage with this one."""
        return Boxes(self.tensor.clone())

    def to(self, device: torch.device | str) -> Boxes:
        """Return the boxes on `device` (boxes are always float32, so no dtype argument)."""
        return Boxes(self.tensor.to(device=device))

    def area(self) -> torch.Tensor:
        """Return the area of each box as a tensor of shape (N,)."""
        box = self.tensor
        return (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])

    def clip(self, box_size: tuple[int, int]) -> None:
        """Clip the boxes in place to x in [0, width] and y in [0, height].

        Args:
            box_size: (height, width) of the clipping region.

        Raises:
            ValueError: if a coordinate is infinite or NaN.
        """
        if not torch.isfinite(self.tensor).all():
            raise ValueError("Boxes.clip: the box tensor contains infinite or NaN values.")
        height, width = box_size
        self.tensor[:, 0::2].clamp_(min=0, max=width)
        self.tensor[:, 1::2].clamp_(min=0, max=height)

    def nonempty(self, threshold: float = 0.0) -> torch.Tensor:
        """Find the boxes whose width and height are both larger than `threshold`.

        Args:
            threshold: a box is empty when either side is no larger than this.

        Returns:
            A bool tensor of shape (N,), True for the non-empty boxes.
        """
        box = self.tensor
        widths = box[:, 2] - box[:, 0]
        heights = box[:, 3] - box[:, 1]
        return (widths > threshold) & (heights > threshold)

    def __getitem__(self, item: int | slice | torch.Tensor) -> Boxes:
        """Select boxes.

        Args:
            item: an int (gives Boxes of one row), a slice, a bool mask of length N or a
                tensor of indices.

        Returns:
            The selected Boxes; they may share storage with these, as tensor indexing does.
        """
        if isinstance(item, int):
            return Boxes(self.tensor[item].view(1, -1))
        selected = self.tensor[item]
        if selected.dim() != 2:
            raise IndexError(f"Indexing Boxes with {item!r} did not give an Nx4 matrix.")
        return Boxes(selected)

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __repr__(self) -> str:
        return f"Boxes({self.tensor})"

    def inside_box(self, box_size: tuple[int, int], boundary_threshold: int = 0) -> torch.Tensor:
        """Find the boxes that lie inside a reference box anchored at the origin.

        Args:
            box_size: (height, width) of the reference box.
            boundary_threshold: boxes going beyond the reference box by more than this are
                outside.

        Returns:
            A bool tensor of shape (N,), True for boxes inside.
        """
        height, width = box_size
        box = self.tensor
        return (
            (box[:, 0] >= -boundary_threshold)
            & (box[:, 1] >= -boundary_threshold)
            & (box[:, 2] < width + boundary_threshold)
            & (box[:, 3] < height + boundary_threshold)
        )

    def get_centers(self) -> torch.Tensor:
        """Return the box centers as an Nx2 tensor of (x, y)."""
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Scale the boxes in place: x coordinates by `scale_x`, y coordinates by `scale_y`."""
        self.tensor[:, 0::2] *= scale_x
        self.tensor[:, 1::2] *= scale_y

    @classmethod
    def cat(cls, boxes_list: list[Boxes] | tuple[Boxes, ...]) -> Boxes:
        """Concatenate several Boxes into new Boxes (never sharing storage with the inputs).

        Args:
            boxes_list: the Boxes to concatenate; an empty list gives empty Boxes.

        Returns:
            The concatenated Boxes.

        Raises:
            TypeError: if `boxes_list` is not a list/tuple of Boxes.
        """
        if not isinstance(boxes_list, (list, tuple)):
            raise TypeError(f"Boxes.cat takes a list of Boxes; got {type(boxes_list).__name__}.")
        if len(boxes_list) == 0:
            return cls(torch.empty(0))
        if not all(isinstance(boxes, Boxes) for boxes in boxes_list):
            raise TypeError("Boxes.cat takes a list of Boxes; some elements are not Boxes.")
        return cls(torch.cat([boxes.tensor for boxes in boxes_list], dim=0))

    @property
    def device(self) -> torch.device:
        """The device of the box tensor."""
        return self.tensor.device

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield each box as a tensor of shape (4,)."""
        yield from self.tensor


def _safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """Divide where `numerator > 0` and give 0 elsewhere, without NaN values or gradients."""
    positive = numerator > 0
    denominator = torch.where(positive, denominator, torch.ones_like(denominator))
    return torch.where(positive, numerator / denominator, torch.zeros_like(numerator))


def pairwise_intersection(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection areas between all N x M pairs of boxes.

    Args:
        boxes1: N boxes in XYXY_ABS.
        boxes2: M boxes in XYXY_ABS.

    Returns:
        An NxM tensor of intersection areas.
    """
    a, b = boxes1.tensor, boxes2.tensor
    top_left = torch.max(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.min(a[:, None, 2:], b[None, :, 2:])
    return (bottom_right - top_left).clamp(min=0).prod(dim=2)


def pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection over union of all N x M pairs of boxes.

    Pairs that do not overlap, including those with zero-area boxes, get an IoU of 0 (never
    NaN, unlike torchvision's box_iou).

    Args:
        boxes1: N boxes in XYXY_ABS.
        boxes2: M boxes in XYXY_ABS.

    Returns:
        An NxM tensor of IoU values.
    """
    inter = pairwise_intersection(boxes1, boxes2)
    union = boxes1.area()[:, None] + boxes2.area()[None, :] - inter
    return _safe_divide(inter, union)


def pairwise_ioa(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection over the area of the second box, for all N x M pairs of boxes.

    Args:
        boxes1: N boxes in XYXY_ABS.
        boxes2: M boxes in XYXY_ABS, whose areas are the denominators.

    Returns:
        An NxM tensor of IoA values; 0 where the boxes do not overlap.
    """
    inter = pairwise_intersection(boxes1, boxes2)
    return _safe_divide(inter, boxes2.area()[None, :].expand_as(inter))


def pairwise_point_box_distance(points: torch.Tensor, boxes: Boxes) -> torch.Tensor:
    """Distances from N points to the four sides of M boxes.

    Args:
        points: an Nx2 tensor of (x, y).
        boxes: M boxes in XYXY_ABS.

    Returns:
        An NxMx4 tensor of (x - x0, y - y0, x1 - x, y1 - y); all four are positive exactly when
        the point is strictly inside the box.
    """
    x, y = points[:, None, 0], points[:, None, 1]
    x0, y0, x1, y1 = boxes.tensor[None, :, :].unbind(dim=2)
    return torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)


def matched_pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """IoU of the i-th box of `boxes1` with the i-th box of `boxes2`, for every i.

    Unlike Detectron2, which gives NaN for two zero-area boxes, such pairs get 0.

    Args:
        boxes1: N boxes in XYXY_ABS.
        boxes2: N boxes in XYXY_ABS.

    Returns:
        A tensor of shape (N,) of IoU values.

    Raises:
        ValueError: if the two sets have different lengths.
    """
    if len(boxes1) != len(boxes2):
        raise ValueError(
            "matched_pairwise_iou needs the same number of boxes on both sides; got "
            f"{len(boxes1)} and {len(boxes2)}."
        )
    a, b = boxes1.tensor, boxes2.tensor
    top_left = torch.max(a[:, :2], b[:, :2])
    bottom_right = torch.min(a[:, 2:], b[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    union = boxes1.area() + boxes2.area() - inter
    return _safe_divide(inter, union)
