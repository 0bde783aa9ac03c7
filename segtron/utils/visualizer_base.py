"""Building blocks of the visualizer: `ColorMode`, `VisImage` (the matplotlib canvas),
`GenericMask`, panoptic outputs split into segments, label texts and colours, and conversions of
boxes and masks from every form a model or a dataset gives them in.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterator, Sequence
from enum import Enum, unique
from typing import Any

import cv2
import matplotlib.colors as mplc
import matplotlib.figure as mplfigure
import numpy as np
import pycocotools.mask as mask_util
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from PIL import Image

from segtron.structures import BitMasks, Boxes, BoxMode, PolygonMasks
from segtron.utils.colormap import colormap
from segtron.utils.file_io import PathManager

__all__ = [
    "DISTINCT_COLORS",
    "Color",
    "ColorMode",
    "GenericMask",
    "PanopticSegments",
    "VisImage",
    "change_brightness",
    "contrasting",
    "convert_boxes",
    "convert_dataset_boxes",
    "convert_masks",
    "drop_small_components",
    "jitter",
    "label_points",
    "outline_polygons",
    "create_text_labels",
    "to_numpy",
]

Color = tuple[float, float, float]
# The colours of the table that are not grey, black or white.
DISTINCT_COLORS: list[Color] = [
    tuple(float(v) for v in c) for c in colormap(rgb=True, maximum=1) if c.max() - c.min() > 0.25
]
_TEXT_PAD = 0.25  # padding of a label's box, as a fraction of the font size


@unique
class ColorMode(Enum):
    """How instances are coloured.

    Attributes:
        IMAGE: each instance its own shade of its class colour.
        SEGMENTATION: every instance of a class in the class colour, more opaque.
        IMAGE_BW: like IMAGE, on a grey image where only the instances keep their colours.
    """

    IMAGE = 0
    SEGMENTATION = 1
    IMAGE_BW = 2


class VisImage:
    """An image with a matplotlib figure of its size (times ``scale``) to draw on.

    Attributes:
        img (np.ndarray): the RGB image.
        scale (float): output size / image size.
        width (int): image width; drawing coordinates are image pixels.
        height (int): image height.
        fig, ax, canvas: the matplotlib figure, its full-size axes and its Agg canvas.
    """

    def __init__(self, img: np.ndarray, scale: float = 1.0) -> None:
        """Set up a figure showing ``img`` (H×W×3 RGB uint8) at ``scale`` times its size."""
        self.img = img
        self.scale = scale
        self.width, self.height = img.shape[1], img.shape[0]
        self._label_extents: list[Bbox] = []  # display extents of the labels written
        self._setup_figure(img)

    def _setup_figure(self, img: np.ndarray) -> None:
        fig = mplfigure.Figure(frameon=False)
        self.dpi = fig.get_dpi()
        # The 1e-2 keeps a size like 159.99999 from being rounded down to 159 pixels.
        fig.set_size_inches(
            (self.width * self.scale + 1e-2) / self.dpi,
            (self.height * self.scale + 1e-2) / self.dpi,
        )
        self.canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes([0.0, 0.0, 1.0, 1.0])
        ax.axis("off")
        ax.set_xlim(0, self.width)
        ax.set_ylim(self.height, 0)
        ax.set_autoscale_on(False)
        self.fig, self.ax = fig, ax
        self.reset_image(img)

    def reset_image(self, img: np.ndarray) -> None:
        """Show ``img`` (H×W×3, uint8 or float in [0, 255]) as the background."""
        img = np.asarray(img).astype("uint8")
        self.ax.imshow(img, extent=(0, self.width, self.height, 0), interpolation="nearest")

    def save(self, filepath: str) -> None:
        """Write the drawn image to ``filepath`` (the format follows the extension)."""
        with PathManager.open(filepath, "wb") as f:
            Image.fromarray(self.get_image()).save(f, format=_pil_format(filepath))

    def get_image(self) -> np.ndarray:
        """The drawn image as an H'×W'×3 RGB uint8 array (H', W' = size × scale)."""
        buffer, (width, height) = self.canvas.print_to_buffer()
        rgba = np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 4)
        return np.ascontiguousarray(rgba[:, :, :3])

    def fill_mask(self, mask: np.ndarray, color: Color, alpha: float) -> None:
        """Blend ``color`` over exactly the pixels of an H×W bool ``mask``."""
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            return
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        rgba = np.zeros((y1 - y0, x1 - x0, 4), dtype=np.float32)
        rgba[..., :3] = color
        rgba[..., 3] = mask[y0:y1, x0:x1] * alpha
        self.ax.imshow(rgba, extent=(x0, x1, y1, y0), interpolation="nearest")

    def add_label(
        self,
        text: str,
        anchors: list[tuple[tuple[float, float], str, str]],
        size: float,
        color: Color,
        background: Color,
        rotation: float = 0,
    ) -> None:
        """Write ``text`` on a filled box at the first anchor where, moved inside the image, it
        overlaps no earlier label; else at the anchor where it overlaps them the least.

        Args:
            text: the text.
            anchors: (position in image pixels, horizontal alignment, vertical alignment).
            size: font size in points of the output image.
            color: text colour.
            background: colour of the box behind the text.
            rotation: degrees, counter-clockwise.
        """
        artist = self.ax.text(
            0,
            0,
            text,
            size=size,
            family="sans-serif",
            color=color,
            bbox={
                "boxstyle": f"square,pad={_TEXT_PAD}",
                "facecolor": (*mplc.to_rgb(background), 0.85),
                "edgecolor": "none",
            },
            rotation=rotation,
            zorder=10,
        )
        pad = _TEXT_PAD * size * self.dpi / 72
        best = None
        for position, horizontal, vertical in anchors:
            artist.set(position=position, ha=horizontal, va=vertical)
            extent = self._move_inside(artist, pad)
            overlap = sum(_overlap(extent, other) for other in self._label_extents)
            if best is None or overlap < best[0]:
                best = (overlap, artist.get_position(), horizontal, vertical, extent)
            if overlap == 0:
                break
        _, position, horizontal, vertical, extent = best
        artist.set(position=position, ha=horizontal, va=vertical)
        self._label_extents.append(extent)

    def _move_inside(self, artist: Text, pad: float) -> Bbox:
        """Shift a text inside the figure; return its extent (with its box) in display pixels."""
        box = artist.get_window_extent(renderer=self.canvas.get_renderer()).padded(pad)
        fig_width, fig_height = self.canvas.get_width_height()
        dx = max(min(0.0, fig_width - box.x1), -box.x0)  # the left edge wins if too wide
        dy = min(max(0.0, -box.y0), fig_height - box.y1)  # the top edge wins if too tall
        if dx or dy:
            anchor = self.ax.transData.transform(artist.get_position()) + (dx, dy)
            artist.set_position(tuple(self.ax.transData.inverted().transform(anchor)))
        return box.translated(dx, dy)


def _pil_format(filepath: str) -> str:
    extension = filepath.rsplit(".", 1)[-1].lower()
    return Image.registered_extensions().get("." + extension, "PNG")


def create_text_labels(
    classes: list[int] | None,
    scores: list[float] | None,
    class_names: list[str] | None,
    is_crowd: list[int] | None = None,
) -> list[str] | None:
    """Labels "name score%" (and "|crowd"); None when there are neither classes nor scores."""
    labels = None
    if classes is not None:
        if class_names is not None and len(class_names) > 0:
            labels = [class_names[i] for i in classes]
        else:
            labels = [str(i) for i in classes]
    if scores is not None:
        percents = [f"{s * 100:.0f}%" for s in scores]
        labels = percents if labels is None else [f"{a} {b}" for a, b in zip(labels, percents)]
    if labels is not None and is_crowd is not None:
        labels = [a + ("|crowd" if crowd else "") for a, crowd in zip(labels, is_crowd)]
    return labels


def _luminance(color: Color) -> float:
    r, g, b = color
    return 0.299 * r + 0.587 * g + 0.114 * b


def contrasting(color: Color) -> Color:
    """Black or white, whichever reads better on ``color``."""
    return (0.0, 0.0, 0.0) if _luminance(color) > 0.5 else (1.0, 1.0, 1.0)


def to_numpy(x: Any) -> np.ndarray:
    """A tensor (on any device) or array-like as a NumPy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class GenericMask:
    """One instance mask, given as polygons, COCO RLE or a binary mask, readable as any of them.

    The other representations are computed on first access and cached.

    Attributes:
        height (int): image height.
        width (int): image width.
    """

    def __init__(self, mask_or_polygons: Any, height: int, width: int) -> None:
        """Wrap one mask.

        Args:
            mask_or_polygons: a list of flat polygons ``[x0, y0, x1, y1, ...]``, a COCO RLE dict
                (compressed or uncompressed counts) or an H×W binary array or tensor.
            height: image height.
            width: image width.

        Raises:
            ValueError: the mask has another size than (height, width), or an unknown type.
        """
        self.height, self.width = height, width
        self._mask: np.ndarray | None = None
        self._polygons: list[np.ndarray] | None = None
        self._has_holes: bool | None = None
        m = mask_or_polygons
        if isinstance(m, torch.Tensor):
            m = to_numpy(m)
        if isinstance(m, dict):
            if "counts" not in m or "size" not in m:
                raise ValueError(f"An RLE needs 'counts' and 'size'; got keys {sorted(m)}.")
            h, w = m["size"]
            if (h, w) != (height, width):
                raise ValueError(f"RLE of size {(h, w)} on an image of size {(height, width)}.")
            if isinstance(m["counts"], list):
                m = mask_util.frPyObjects(m, h, w)
            self._mask = mask_util.decode(m).astype(np.uint8)
        elif isinstance(m, list):
            self._polygons = [np.asarray(p, dtype=np.float64).reshape(-1) for p in m]
        elif isinstance(m, np.ndarray):
            if m.shape != (height, width):
                raise ValueError(f"Mask of shape {m.shape} on an image of size {(height, width)}.")
            binary = m > 0.5 if m.dtype.kind == "f" else m != 0
            self._mask = binary.astype(np.uint8)
        else:
            raise ValueError(f"GenericMask cannot read a mask of type {type(m).__name__}.")

    @property
    def mask(self) -> np.ndarray:
        """The H×W uint8 binary mask."""
        if self._mask is None:
            self._mask = self.polygons_to_mask(self._polygons or [])
        return self._mask

    @property
    def polygons(self) -> list[np.ndarray]:
        """Flat polygons: as given, or the mask's outer and hole contours (via pixel centres)."""
        if self._polygons is None:
            self._polygons, self._has_holes = self.mask_to_polygons(self._mask)
        return self._polygons

    @property
    def has_holes(self) -> bool:
        """Whether the mask has holes (always False for masks given as polygons)."""
        if self._has_holes is None:
            if self._mask is not None:
                self._polygons, self._has_holes = self.mask_to_polygons(self._mask)
            else:
                self._has_holes = False
        return self._has_holes

    def mask_to_polygons(self, mask: np.ndarray) -> tuple[list[np.ndarray], bool]:
        """Trace the contours of a binary mask.

        Args:
            mask: an H×W binary array.

        Returns:
            The contours as flat polygons with at least 3 points (OpenCV's integer pixel
            coordinates shifted by 0.5 to pixel centres), and whether any contour is a hole.
        """
        contours, hierarchy = cv2.findContours(
            np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE
        )
        if hierarchy is None:
            return [], False
        has_holes = bool((hierarchy.reshape(-1, 4)[:, 3] >= 0).any())
        polygons = [c.reshape(-1).astype(np.float64) + 0.5 for c in contours if len(c) >= 3]
        return polygons, has_holes

    def polygons_to_mask(self, polygons: Sequence[np.ndarray]) -> np.ndarray:
        """Rasterize the union of flat polygons into an H×W uint8 mask."""
        if len(polygons) == 0:
            return np.zeros((self.height, self.width), dtype=np.uint8)
        rles = mask_util.frPyObjects(
            [list(map(float, p)) for p in polygons], self.height, self.width
        )
        return mask_util.decode(mask_util.merge(rles)).astype(np.uint8)

    def area(self) -> int:
        """Number of pixels in the mask."""
        return int(self.mask.sum())

    def bbox(self) -> np.ndarray:
        """The box (x0, y0, x1, y1) around the mask's pixels; zeros for an empty mask."""
        ys, xs = np.nonzero(self.mask)
        if len(xs) == 0:
            return np.zeros(4, dtype=np.float32)
        return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


class PanopticSegments:
    """A panoptic output (id map + segments_info) split into stuff and thing masks.

    Segments are visited from the largest to the smallest; pixels whose id has no entry in
    ``segments_info`` are VOID.
    """

    def __init__(
        self,
        panoptic_seg: torch.Tensor | np.ndarray,
        segments_info: list[dict] | None,
        metadata: Any = None,
    ) -> None:
        """Split a panoptic output.

        Args:
            panoptic_seg: H×W segment ids.
            segments_info: one dict per segment with "id", "category_id", "isthing" and
                optionally "score" and "iscrowd". None means the ids encode
                ``category_id * label_divisor + instance`` (-1 = VOID), as Panoptic-DeepLab
                outputs them; the metadata then gives ``label_divisor`` and which categories
                are things (``thing_dataset_id_to_contiguous_id``).
            metadata: the dataset metadata; only needed when ``segments_info`` is None.

        Raises:
            ValueError: ``segments_info`` is None and the metadata lacks what decodes the ids.
        """
        self._seg = to_numpy(panoptic_seg)
        ids, areas = np.unique(self._seg, return_counts=True)
        if segments_info is None:
            segments_info = self._decode_ids(ids, metadata)
        self._info = {int(s["id"]): dict(s) for s in segments_info}
        order = np.argsort(-areas, kind="stable")
        self._ids = [int(i) for i in ids[order]]
        for sid, area in zip(self._ids, areas[order]):
            if sid in self._info:
                self._info[sid]["area"] = float(area)

    @staticmethod
    def _decode_ids(ids: np.ndarray, metadata: Any) -> list[dict]:
        divisor = getattr(metadata, "label_divisor", None)
        thing_map = getattr(metadata, "thing_dataset_id_to_contiguous_id", None)
        if divisor is None or thing_map is None:
            raise ValueError(
                "Without segments_info, the panoptic ids are read as category * label_divisor + "
                "instance; the metadata needs 'label_divisor' and "
                "'thing_dataset_id_to_contiguous_id' for that."
            )
        things = set(thing_map.values())
        categories = {int(i): int(i) // divisor for i in ids if i != -1}
        return [{"id": i, "category_id": c, "isthing": c in things} for i, c in categories.items()]

    def non_empty_mask(self) -> np.ndarray:
        """H×W bool mask of the pixels that belong to a segment (not VOID)."""
        return np.isin(self._seg, list(self._info))

    def _masks(self, isthing: bool) -> Iterator[tuple[np.ndarray, dict]]:
        for sid in self._ids:
            info = self._info.get(sid)
            if info is not None and bool(info["isthing"]) == isthing:
                yield self._seg == sid, info

    def semantic_masks(self) -> Iterator[tuple[np.ndarray, dict]]:
        """(H×W bool mask, segment info) of each stuff segment, largest first."""
        return self._masks(isthing=False)

    def instance_masks(self) -> Iterator[tuple[np.ndarray, dict]]:
        """(H×W bool mask, segment info) of each thing segment, largest first."""
        return self._masks(isthing=True)


def convert_boxes(boxes: Any) -> np.ndarray:
    """Boxes as an N×4 float array in XYXY_ABS.

    Args:
        boxes: `Boxes`, a tensor or array of N×4 XYXY boxes, or a list of 4-number boxes.
    """
    boxes = to_numpy(boxes.tensor if isinstance(boxes, Boxes) else boxes)
    return boxes.astype(np.float64).reshape(-1, 4)


def convert_dataset_boxes(annotations: list[dict]) -> np.ndarray:
    """The XYXY_ABS boxes of dataset annotations ("bbox" in their "bbox_mode")."""
    return convert_boxes(
        [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations]
    )


def convert_masks(masks: Any, height: int, width: int) -> list[GenericMask]:
    """One `GenericMask` per instance.

    Args:
        masks: `BitMasks`, `PolygonMasks`, an N×H×W tensor or array, or a list whose items are
            anything `GenericMask` reads (or `GenericMask` themselves).
        height: image height.
        width: image width.
    """
    if isinstance(masks, PolygonMasks):
        masks = masks.polygons
    elif isinstance(masks, (BitMasks, torch.Tensor)):
        masks = to_numpy(masks.tensor if isinstance(masks, BitMasks) else masks)
    return [m if isinstance(m, GenericMask) else GenericMask(m, height, width) for m in masks]


def label_points(mask: np.ndarray, large_area: int) -> list[tuple[float, float]]:
    """Where to write a region's label: the most interior point of its largest component, and of
    every other component of at least ``large_area`` pixels.

    The most interior point (the farthest from the region's border) lies inside the component
    even when the component is not convex, unlike the centroid.

    Args:
        mask: an H×W binary array.
        large_area: components at least this large get a label of their own.

    Returns:
        (x, y) points in pixel coordinates; empty for an empty mask.
    """
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if count <= 1:
        return []
    areas = stats[1:, cv2.CC_STAT_AREA]
    largest = int(np.argmax(areas)) + 1
    # Pad so that the image border counts as the region's border.
    padded = np.pad(components, 1)
    points = []
    for cid in range(1, count):
        if cid != largest and areas[cid - 1] < large_area:
            continue
        distance = cv2.distanceTransform((padded == cid).astype(np.uint8), cv2.DIST_L2, 3)
        y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
        points.append((float(x) - 0.5, float(y) - 0.5))
    return points


def outline_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """The contours of a binary mask as N×2 (x, y) polygons through its boundary pixels.

    Where the mask touches the image border, its contour runs outside the image, so that the
    outline of a region does not draw a frame along the image's edges.
    """
    padded = np.pad(mask.astype(np.uint8), 2, mode="edge")
    contours, _ = cv2.findContours(padded, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    # Padded index p is pixel p - 2, whose centre is at p - 1.5.
    return [c.reshape(-1, 2) - 1.5 for c in contours if len(c) >= 2]


def drop_small_components(mask: np.ndarray, min_area: float) -> np.ndarray:
    """``mask`` (bool) without its 8-connected pieces of fewer than ``min_area`` pixels."""
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[components]


def _overlap(a: Bbox, b: Bbox) -> float:
    """Area shared by two boxes."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0.0) * max(height, 0.0)


def jitter(color: Color, seed: int) -> Color:
    """``color`` moved by a vector of length 0.15 whose direction depends on ``seed`` only."""
    direction = np.random.default_rng(seed).uniform(-1.0, 1.0, 3)
    shifted = np.asarray(color) + 0.15 * direction / np.linalg.norm(direction)
    return tuple(float(c) for c in np.clip(shifted, 0.0, 1.0))


def change_brightness(color: Any, brightness_factor: float) -> Color:
    """Lighten (factor > 0) or darken (factor < 0, down to -1) a colour in HLS space."""
    hue, lightness, saturation = colorsys.rgb_to_hls(*mplc.to_rgb(color))
    lightness = min(max(lightness * (1.0 + brightness_factor), 0.0), 1.0)
    return colorsys.hls_to_rgb(hue, lightness, saturation)
