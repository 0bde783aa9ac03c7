"""Instance masks: `BitMasks` (dense N×H×W), `PolygonMasks` (COCO-style polygons) and helpers.

Mirrors ``detectron2.structures.masks`` (without ``ROIMasks``). Polygons are rasterized with
pycocotools and masks are cropped with torchvision's ``roi_align``. Where the behaviour differs
on purpose (clearer exceptions, boxes of instances without polygons), the docstrings say so.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from torchvision.ops import roi_align

from segtron.structures.boxes import Boxes

_POLYGON_FIX = (
    "Each polygon must be a flat list [x0, y0, x1, y1, ...] of at least 3 points; drop "
    "degenerate polygons (and instances left without any) from the annotations first."
)


def _to_polygon_array(polygon: Any, where: str) -> np.ndarray:
    """Return `polygon` as a flat float64 array, or raise a ValueError naming `where`."""
    if isinstance(polygon, torch.Tensor):
        polygon = polygon.detach().cpu().numpy()
    array = np.asarray(polygon, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{where} has shape {array.shape}, not a flat list. {_POLYGON_FIX}")
    if array.size % 2 != 0:
        raise ValueError(f"{where} has an odd number of coordinates ({array.size}). {_POLYGON_FIX}")
    if array.size < 6:
        raise ValueError(
            f"{where} has {array.size // 2} points ({array.size} coordinates); a polygon "
            f"needs at least 3 points (6 coordinates). {_POLYGON_FIX}"
        )
    return array


def polygons_to_bitmask(polygons: Sequence[Any], height: int, width: int) -> np.ndarray:
    """Rasterize the union of polygons into a boolean mask.

    Args:
        polygons: flat [x0, y0, x1, y1, ...] polygons (arrays or lists) of one instance.
        height: mask height.
        width: mask width.

    Returns:
        A bool ndarray of shape (height, width); all False when there are no polygons.

    Raises:
        ValueError: for a polygon with fewer than 3 points or an odd number of coordinates
            (pycocotools would silently read a 4-number polygon as a box).
    """
    if len(polygons) == 0:
        return np.zeros((height, width), dtype=bool)
    arrays = [_to_polygon_array(p, f"Polygon {i}") for i, p in enumerate(polygons)]
    rles = mask_util.frPyObjects(arrays, int(height), int(width))
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def rasterize_polygons_within_box(
    polygons: Sequence[np.ndarray], box: np.ndarray, mask_size: int
) -> torch.Tensor:
    """Rasterize an instance's polygons into a mask_size × mask_size mask covering `box`.

    The polygons are shifted so the box's top-left corner is the origin and scaled so the box
    spans the mask (a side shorter than 0.1 counts as 0.1), then rasterized.

    Args:
        polygons: flat [x0, y0, x1, y1, ...] polygons of one instance, in image coordinates.
        box: (x0, y0, x1, y1) in image coordinates.
        mask_size: side of the output mask.

    Returns:
        A bool tensor of shape (mask_size, mask_size).
    """
    box = np.asarray(box, dtype=np.float64)
    origin = box[:2]
    scale = mask_size / np.maximum(box[2:] - box[:2], 0.1)
    transformed = [
        ((np.asarray(p, dtype=np.float64).reshape(-1, 2) - origin) * scale).ravel()
        for p in polygons
    ]
    return torch.from_numpy(polygons_to_bitmask(transformed, mask_size, mask_size))


def polygon_area(x: np.ndarray, y: np.ndarray) -> float:
    """Area of a simple polygon by the shoelace formula.

    Args:
        x: x coordinates of the vertices, in order.
        y: y coordinates of the vertices, in order.

    Returns:
        The (non-negative) area.
    """
    return 0.5 * np.abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


class BitMasks:
    """Dense instance masks stored as an N×H×W bool tensor.

    Attributes:
        tensor (torch.Tensor): bool tensor of shape (N, H, W).
        image_size (torch.Size): (H, W).
    """

    def __init__(self, tensor: torch.Tensor | np.ndarray) -> None:
        """Create masks.

        Args:
            tensor: an N×H×W tensor or array; it is converted to bool.

        Raises:
            ValueError: if the input is not three-dimensional.
        """
        if isinstance(tensor, torch.Tensor):
            tensor = tensor.to(torch.bool)
        else:
            tensor = torch.as_tensor(tensor, dtype=torch.bool, device=torch.device("cpu"))
        if tensor.dim() != 3:
            raise ValueError(f"BitMasks needs an N×H×W tensor; got shape {tuple(tensor.shape)}.")
        self.image_size = tensor.shape[1:]
        self.tensor = tensor

    def to(self, *args: Any, **kwargs: Any) -> BitMasks:
        """Return the masks with their tensor moved by `Tensor.to(*args, **kwargs)`."""
        return BitMasks(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        """The device of the mask tensor."""
        return self.tensor.device

    def __getitem__(self, item: int | slice | torch.Tensor) -> BitMasks:
        """Select masks.

        Args:
            item: an int (gives BitMasks of one mask), a slice, a bool mask or index tensor.

        Returns:
            The selected BitMasks, possibly sharing storage with these.
        """
        if isinstance(item, int):
            return BitMasks(self.tensor[item].unsqueeze(0))
        selected = self.tensor[item]
        if selected.dim() != 3:
            raise IndexError(f"Indexing BitMasks with {item!r} did not give an N×H×W tensor.")
        return BitMasks(selected)

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield each mask as an H×W bool tensor."""
        yield from self.tensor

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_instances={len(self.tensor)})"

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def nonempty(self) -> torch.Tensor:
        """Return a bool tensor of shape (N,), True for masks with at least one pixel set."""
        return self.tensor.flatten(1).any(dim=1)

    @staticmethod
    def from_polygon_masks(
        polygon_masks: PolygonMasks | list[list[np.ndarray]], height: int, width: int
    ) -> BitMasks:
        """Rasterize polygon masks.

        Args:
            polygon_masks: a PolygonMasks or its list of polygons per instance.
            height: image height.
            width: image width.

        Returns:
            BitMasks of shape (N, height, width).
        """
        if isinstance(polygon_masks, PolygonMasks):
            polygon_masks = polygon_masks.polygons
        masks = [torch.from_numpy(polygons_to_bitmask(p, height, width)) for p in polygon_masks]
        if len(masks) == 0:
            return BitMasks(torch.empty(0, height, width, dtype=torch.bool))
        return BitMasks(torch.stack(masks))

    def crop_and_resize(self, boxes: torch.Tensor, mask_size: int) -> torch.Tensor:
        """Crop mask i to box i and resize it to mask_size × mask_size.

        Uses ROIAlign (aligned=True, adaptive sampling) on the masks as floats and keeps the
        values >= 0.5, as Detectron2 does.

        Args:
            boxes: an N×4 tensor of (x0, y0, x1, y1), one box per mask.
            mask_size: side of the output masks.

        Returns:
            A bool tensor of shape (N, mask_size, mask_size) on the masks' device.

        Raises:
            ValueError: if the number of boxes differs from the number of masks.
        """
        if len(boxes) != len(self):
            raise ValueError(f"crop_and_resize got {len(boxes)} boxes for {len(self)} masks.")
        device = self.tensor.device
        boxes = boxes.to(device=device, dtype=torch.float32)
        batch_index = torch.arange(len(boxes), device=device, dtype=boxes.dtype)[:, None]
        rois = torch.cat([batch_index, boxes], dim=1)
        output = roi_align(
            self.tensor[:, None].to(torch.float32),
            rois,
            output_size=(mask_size, mask_size),
            spatial_scale=1.0,
            sampling_ratio=0,
            aligned=True,
        )
        return output.squeeze(1) >= 0.5

    def get_bounding_boxes(self) -> Boxes:
        """Tight boxes around the masks; a mask with no pixel set gets a box of zeros.

        Returns:
            Boxes of (x0, y0, x1, y1) where x1/y1 are one past the last set column/row.
        """
        num, height, width = self.tensor.shape
        if num == 0 or height == 0 or width == 0:
            return Boxes(torch.zeros(num, 4, dtype=torch.float32, device=self.device))
        columns = self.tensor.any(dim=1).to(torch.uint8)
        rows = self.tensor.any(dim=2).to(torch.uint8)
        x0 = columns.argmax(dim=1)
        y0 = rows.argmax(dim=1)
        x1 = width - columns.flip(1).argmax(dim=1)
        y1 = height - rows.flip(1).argmax(dim=1)
        boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.float32)
        return Boxes(boxes * self.nonempty()[:, None])

    @staticmethod
    def cat(bitmasks_list: list[BitMasks]) -> BitMasks:
        """Concatenate a non-empty list of BitMasks of the same image size.

        Args:
            bitmasks_list: the BitMasks to concatenate.

        Returns:
            New BitMasks (of the type of the first element).

        Raises:
            ValueError: if the list is empty.
            TypeError: if an element is not BitMasks.
        """
        if len(bitmasks_list) == 0:
            raise ValueError("BitMasks.cat needs at least one BitMasks.")
        if not all(isinstance(masks, BitMasks) for masks in bitmasks_list):
            raise TypeError("BitMasks.cat takes a list of BitMasks.")
        return type(bitmasks_list[0])(torch.cat([masks.tensor for masks in bitmasks_list]))


class PolygonMasks:
    """Instance masks as COCO-style polygons: for each instance, a list of flat polygons.

    Attributes:
        polygons (list[list[np.ndarray]]): for each instance, its polygons as float64 arrays
            [x0, y0, x1, y1, ...].
    """

    def __init__(self, polygons: list[list[Any]]) -> None:
        """Create polygon masks, validating every polygon.

        Args:
            polygons: one list per instance of flat polygons (lists, arrays or tensors of
                x0, y0, x1, y1, ... with at least 3 points).

        Raises:
            ValueError: if `polygons` or an instance's entry is not a list, or a polygon is not
                flat, has an odd number of coordinates or fewer than 3 points. Detectron2
                raises AssertionError for the polygon checks.
        """
        if not isinstance(polygons, list):
            raise ValueError(
                "Cannot create PolygonMasks: expected a list (one entry per instance) of lists "
                f"of polygons; got {type(polygons).__name__}."
            )
        self.polygons: list[list[np.ndarray]] = []
        for index, instance in enumerate(polygons):
            if not isinstance(instance, list):
                raise ValueError(
                    f"Cannot create PolygonMasks: instance {index} should be a list of polygons; "
                    f"got {type(instance).__name__}. Wrap a single polygon as [polygon]."
                )
            self.polygons.append(
                [
                    _to_polygon_array(p, f"Instance {index}, polygon {j}")
                    for j, p in enumerate(instance)
                ]
            )

    def to(self, *args: Any, **kwargs: Any) -> PolygonMasks:
        """Return self: polygons always live on the CPU."""
        return self

    @property
    def device(self) -> torch.device:
        """Always the CPU."""
        return torch.device("cpu")

    def get_bounding_boxes(self) -> Boxes:
        """Boxes enclosing each instance's polygons.

        Returns:
            Boxes of (min x, min y, max x, max y). An instance without polygons gets zeros
            (Detectron2 gives (inf, inf, 0, 0) there).
        """
        boxes = torch.zeros(len(self.polygons), 4, dtype=torch.float32)
        for index, instance in enumerate(self.polygons):
            if instance:
                points = np.concatenate(instance).reshape(-1, 2)
                boxes[index, :2] = torch.from_numpy(points.min(axis=0))
                boxes[index, 2:] = torch.from_numpy(points.max(axis=0))
        return Boxes(boxes)

    def nonempty(self) -> torch.Tensor:
        """Return a bool tensor of shape (N,), True for instances with at least one polygon."""
        return torch.tensor([len(instance) > 0 for instance in self.polygons], dtype=torch.bool)

    def __getitem__(self, item: int | slice | list[int] | torch.Tensor) -> PolygonMasks:
        """Select instances.

        Args:
            item: an int, a slice, a list of ints, a bool mask tensor or an int index tensor.

        Returns:
            The selected PolygonMasks (sharing the polygon arrays).

        Raises:
            ValueError: for a tensor that is neither bool nor integer.
        """
        if isinstance(item, int):
            selected = [self.polygons[item]]
        elif isinstance(item, slice):
            selected = self.polygons[item]
        elif isinstance(item, list):
            selected = [self.polygons[i] for i in item]
        elif isinstance(item, torch.Tensor):
            if item.dtype == torch.bool:
                indices = item.nonzero().flatten().tolist()
            elif item.dtype in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8):
                indices = item.flatten().tolist()
            else:
                raise ValueError(f"Unsupported tensor dtype={item.dtype} for indexing!")
            selected = [self.polygons[i] for i in indices]
        else:
            raise TypeError(f"Cannot index PolygonMasks with {type(item).__name__}.")
        return PolygonMasks(selected)

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        """Yield each instance's list of polygon arrays."""
        yield from self.polygons

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_instances={len(self.polygons)})"

    def __len__(self) -> int:
        return len(self.polygons)

    def crop_and_resize(self, boxes: torch.Tensor, mask_size: int) -> torch.Tensor:
        """Rasterize instance i inside box i at mask_size × mask_size.

        Args:
            boxes: an N×4 tensor of (x0, y0, x1, y1), one box per instance.
            mask_size: side of the output masks.

        Returns:
            A bool tensor of shape (N, mask_size, mask_size) on the device of `boxes`.

        Raises:
            ValueError: if the number of boxes differs from the number of instances.
        """
        if len(boxes) != len(self):
            raise ValueError(f"crop_and_resize got {len(boxes)} boxes for {len(self)} masks.")
        device = boxes.device
        boxes_np = boxes.detach().to("cpu", torch.float64).numpy()
        results = [
            rasterize_polygons_within_box(instance, box, mask_size)
            for instance, box in zip(self.polygons, boxes_np)
        ]
        if len(results) == 0:
            return torch.empty(0, mask_size, mask_size, dtype=torch.bool, device=device)
        return torch.stack(results).to(device=device)

    def area(self) -> torch.Tensor:
        """Area of each instance: the sum of its polygons' shoelace areas (overlaps count twice).

        Returns:
            A float64 tensor of shape (N,).
        """
        areas = [
            sum(float(polygon_area(p[0::2], p[1::2])) for p in instance)
            for instance in self.polygons
        ]
        return torch.tensor(areas, dtype=torch.float64)

    @staticmethod
    def cat(polymasks_list: list[PolygonMasks]) -> PolygonMasks:
        """Concatenate a non-empty list of PolygonMasks.

        Args:
            polymasks_list: the PolygonMasks to concatenate.

        Returns:
            New PolygonMasks (of the type of the first element).

        Raises:
            ValueError: if the list is empty.
            TypeError: if an element is not PolygonMasks.
        """
        if len(polymasks_list) == 0:
            raise ValueError("PolygonMasks.cat needs at least one PolygonMasks.")
        if not all(isinstance(masks, PolygonMasks) for masks in polymasks_list):
            raise TypeError("PolygonMasks.cat takes a list of PolygonMasks.")
        return type(polymasks_list[0])(
            list(itertools.chain.from_iterable(masks.polygons for masks in polymasks_list))
        )
