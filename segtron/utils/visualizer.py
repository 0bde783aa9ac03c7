"""Drawing of predictions and annotations on images, with Detectron2's `Visualizer` API.

`Visualizer` draws instances (boxes, masks, labels), semantic and panoptic segmentations and
dataset dicts on an image; it renders on matplotlib's Agg canvas, so no display is needed, and
returns a `VisImage` (``get_image()`` gives the RGB result, ``save(path)`` writes it).

Differences from Detectron2, on purpose:

- Stable colours: a class has its metadata colour (``thing_colors`` / ``stuff_colors``) or else
  a fixed `colormap` colour chosen by class id. ``ColorMode.SEGMENTATION`` uses it as is;
  ``ColorMode.IMAGE`` jitters it per instance by an amount fixed by the instance's index, so the
  same predictions always give the same image (Detectron2 picks random colours).
- Readable labels: black or white text (whichever contrasts) on a box of the object's colour,
  at least 10 points in the output image, kept inside the image and, for instances, put where
  they overlap no earlier label when one of a few places allows. A region's label sits at its
  most interior point.
- Masks are filled on exactly their pixels (holes included) and outlined.
- Keypoints and rotated boxes are not drawn (segtron has neither).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib as mpl
import matplotlib.colors as mplc
import numpy as np
import torch
from PIL import Image

from segtron.utils.colormap import random_color
from segtron.utils.file_io import PathManager
from segtron.utils.panoptic import rgb2id
from segtron.utils.visualizer_base import (
    DISTINCT_COLORS,
    Color,
    ColorMode,
    GenericMask,
    PanopticSegments,
    VisImage,
    change_brightness,
    contrasting,
    convert_boxes,
    convert_dataset_boxes,
    convert_masks,
    create_text_labels,
    drop_small_components,
    jitter,
    label_points,
    outline_polygons,
    to_numpy,
)

__all__ = ["ColorMode", "GenericMask", "VisImage", "Visualizer"]

_LARGE_MASK_AREA_THRESH = 120000
_OFF_WHITE = (1.0, 1.0, 240.0 / 255)
_MIN_FONT_POINTS = 10.0  # smallest label font, in points of the output image


class Visualizer:
    """Draws predictions and annotations on one image.

    Attributes:
        img (np.ndarray): the RGB image.
        metadata: the dataset metadata (class names, colours, ``ignore_label``), or None.
        output (VisImage): the image drawn so far.
    """

    def __init__(
        self,
        img_rgb: np.ndarray | torch.Tensor,
        metadata: Any = None,
        scale: float = 1.0,
        instance_mode: ColorMode = ColorMode.IMAGE,
    ) -> None:
        """Start drawing on an image.

        Args:
            img_rgb: an H×W×3 RGB image (or H×W grey), values in [0, 255].
            metadata: a `Metadata` of the dataset; None draws class ids in fallback colours.
            scale: size of the output relative to the image.
            instance_mode: how instances are coloured.
        """
        img = to_numpy(img_rgb).clip(0, 255).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        self.img = img
        self.metadata = metadata
        self.output = VisImage(self.img, scale=scale)
        height, width = img.shape[:2]
        # In points before scaling, as Detectron2 counts it: the output has it times `scale`.
        self._default_font_size = max(np.sqrt(height * width) / 90, _MIN_FONT_POINTS / scale)
        self._instance_mode = instance_mode

    def _meta(self, key: str) -> Any:
        return getattr(self.metadata, key, None)

    def _class_color(self, class_id: int, kind: str) -> Color:
        """The colour of a class: ``<kind>_colors`` of the metadata, else a fixed table colour."""
        colors = self._meta(f"{kind}_colors")
        if colors is not None and 0 <= class_id < len(colors):
            return tuple(float(c) / 255 for c in colors[class_id])
        return DISTINCT_COLORS[class_id % len(DISTINCT_COLORS)]

    def _class_name(self, class_id: int, kind: str) -> str:
        names = self._meta(f"{kind}_classes")
        return names[class_id] if names is not None and class_id < len(names) else str(class_id)

    def _instance_colors(self, classes: list[int] | None, count: int) -> list[Color]:
        """Class colours (jittered per instance unless in SEGMENTATION mode)."""
        if classes is None:
            return [DISTINCT_COLORS[i % len(DISTINCT_COLORS)] for i in range(count)]
        colors = [self._class_color(c, "thing") for c in classes]
        if self._instance_mode == ColorMode.SEGMENTATION:
            return colors
        return [jitter(c, seed=i) for i, c in enumerate(colors)]

    def _line_width(self) -> float:
        """Line width in points of the output image."""
        return max(self._default_font_size * self.output.scale / 5, 1.0)

    def _create_grayscale_image(self, mask: np.ndarray | None = None) -> np.ndarray:
        """The image in grey, keeping its colours where ``mask`` is True."""
        grey = np.repeat(self.img.astype(np.float32).mean(axis=2, keepdims=True), 3, axis=2)
        if mask is not None:
            grey[mask] = self.img[mask]
        return grey

    def get_output(self) -> VisImage:
        """The image drawn so far."""
        return self.output

    # ---- high-level drawing ------------------------------------------------------------------

    def draw_instance_predictions(self, predictions: Any) -> VisImage:
        """Draw a model's ``instances`` output.

        Args:
            predictions: `Instances` with any of pred_boxes, scores, pred_classes and pred_masks
                (`BitMasks`, an N×H×W tensor, or a list of polygons / RLE dicts).

        Returns:
            The drawn image.
        """
        boxes = predictions.pred_boxes if predictions.has("pred_boxes") else None
        scores = to_numpy(predictions.scores).tolist() if predictions.has("scores") else None
        classes = None
        if predictions.has("pred_classes"):
            classes = [int(c) for c in to_numpy(predictions.pred_classes).reshape(-1)]
        labels = create_text_labels(classes, scores, self._meta("thing_classes"))
        masks = None
        if predictions.has("pred_masks"):
            masks = convert_masks(predictions.pred_masks, self.output.height, self.output.width)
        colors = self._instance_colors(classes, len(predictions))
        alpha = 0.8 if self._instance_mode == ColorMode.SEGMENTATION else 0.5
        if self._instance_mode == ColorMode.IMAGE_BW:
            union = np.any([m.mask for m in masks], axis=0) if masks else None
            self.output.reset_image(self._create_grayscale_image(union))
            alpha = 0.3
        return self.overlay_instances(
            boxes=boxes, labels=labels, masks=masks, assigned_colors=colors, alpha=alpha
        )

    def draw_sem_seg(
        self, sem_seg: Any, area_threshold: float | None = None, alpha: float = 0.8
    ) -> VisImage:
        """Draw a semantic segmentation, one colour and one label per class.

        Args:
            sem_seg: H×W class ids (tensor or array), or C×H×W scores (a model's ``sem_seg``
                output; the best class of each pixel is drawn). Pixels equal to the metadata's
                ``ignore_label`` and ids without a name in ``stuff_classes`` are not drawn.
            area_threshold: connected pieces smaller than this many pixels are not drawn.
            alpha: opacity of the fill.

        Returns:
            The drawn image.
        """
        sem_seg = to_numpy(sem_seg)
        if sem_seg.ndim == 3:
            sem_seg = sem_seg.argmax(axis=0)
        ignore_label = self._meta("ignore_label")
        ignore_label = 255 if ignore_label is None else ignore_label
        names = self._meta("stuff_classes")
        labels, areas = np.unique(sem_seg, return_counts=True)
        for label in labels[np.argsort(-areas, kind="stable")].tolist():
            if label == ignore_label or label < 0 or (names is not None and label >= len(names)):
                continue
            self.draw_binary_mask(
                sem_seg == label,
                color=self._class_color(label, "stuff"),
                edge_color=_OFF_WHITE,
                text=self._class_name(label, "stuff"),
                alpha=alpha,
                area_threshold=area_threshold,
            )
        return self.output

    def draw_panoptic_seg(
        self,
        panoptic_seg: Any,
        segments_info: list[dict] | None,
        area_threshold: float | None = None,
        alpha: float = 0.7,
    ) -> VisImage:
        """Draw a panoptic segmentation: stuff as regions, things as labelled instances.

        Args:
            panoptic_seg: H×W segment ids (tensor or array).
            segments_info: one dict per segment ("id", "category_id", "isthing", optionally
                "score", "iscrowd"). None: ids are ``category_id * label_divisor + instance``
                (-1 = VOID), decoded with the metadata's ``label_divisor``.
            area_threshold: connected pieces of stuff smaller than this are not drawn.
            alpha: opacity of the fill.

        Returns:
            The drawn image.
        """
        segments = PanopticSegments(panoptic_seg, segments_info, self.metadata)
        return self._draw_panoptic(
            segments,
            area_threshold,
            alpha,
            lambda classes, _: self._instance_colors(classes, len(classes)),
        )

    def _draw_panoptic(
        self,
        segments: PanopticSegments,
        area_threshold: float | None,
        alpha: float,
        colorize: Callable[[list[int], list[np.ndarray]], list[Color]],
    ) -> VisImage:
        """Draw stuff regions, then things in the colours ``colorize(classes, masks)`` gives."""
        if self._instance_mode == ColorMode.IMAGE_BW:
            self.output.reset_image(self._create_grayscale_image(segments.non_empty_mask()))
        for mask, info in segments.semantic_masks():
            category = info["category_id"]
            self.draw_binary_mask(
                mask,
                color=self._class_color(category, "stuff"),
                edge_color=_OFF_WHITE,
                text=self._class_name(category, "stuff"),
                alpha=alpha,
                area_threshold=area_threshold,
            )
        things = list(segments.instance_masks())
        if not things:
            return self.output
        masks, infos = zip(*things)
        classes = [int(info["category_id"]) for info in infos]
        scores = [info["score"] for info in infos] if all("score" in i for i in infos) else None
        crowd = [info.get("iscrowd", 0) for info in infos]
        labels = create_text_labels(classes, scores, self._meta("thing_classes"), crowd)
        colors = colorize(classes, list(masks))
        return self.overlay_instances(
            masks=list(masks), labels=labels, assigned_colors=colors, alpha=alpha
        )

    draw_panoptic_seg_predictions = draw_panoptic_seg  # Detectron2's older name

    def draw_dataset_dict(self, dic: dict) -> VisImage:
        """Draw the annotations of a dataset dict in Detectron2's format.

        Draws, when present: "annotations" (boxes in their "bbox_mode", polygons or RLE
        "segmentation", crowd marked "|crowd"), "sem_seg" / "sem_seg_file_name", and
        "pan_seg" / "pan_seg_file_name" with "segments_info". A dict with both a semantic and
        a panoptic label (a panoptic dataset with semantic PNGs) shows the panoptic one only:
        Detectron2 blends both, which doubles every colour.

        Returns:
            The drawn image.
        """
        annotations = dic.get("annotations")
        if annotations:
            masks = None
            if "segmentation" in annotations[0]:
                masks = [a["segmentation"] for a in annotations]
            classes = [a["category_id"] for a in annotations]
            crowd = [a.get("iscrowd", 0) for a in annotations]
            self.overlay_instances(
                boxes=convert_dataset_boxes(annotations),
                masks=masks,
                labels=create_text_labels(classes, None, self._meta("thing_classes"), crowd),
                assigned_colors=self._instance_colors(classes, len(classes)),
            )
        has_panoptic = "pan_seg" in dic or "pan_seg_file_name" in dic
        sem_seg = dic.get("sem_seg")
        if sem_seg is None and "sem_seg_file_name" in dic and not has_panoptic:
            with PathManager.open(dic["sem_seg_file_name"], "rb") as f:
                sem_seg = np.asarray(Image.open(f), dtype=np.uint8)
        if sem_seg is not None and not has_panoptic:
            self.draw_sem_seg(sem_seg, area_threshold=0, alpha=0.5)
        pan_seg = dic.get("pan_seg")
        if pan_seg is None and "pan_seg_file_name" in dic:
            with PathManager.open(dic["pan_seg_file_name"], "rb") as f:
                pan_seg = rgb2id(np.asarray(Image.open(f).convert("RGB")))
        if pan_seg is not None:
            self.draw_panoptic_seg(pan_seg, dic["segments_info"], area_threshold=0, alpha=0.5)
        return self.output

    def overlay_instances(
        self,
        *,
        boxes: Any = None,
        labels: list[str] | None = None,
        masks: Any = None,
        assigned_colors: list[Any] | None = None,
        alpha: float = 0.5,
    ) -> VisImage:
        """Draw instances: boxes, masks and labels; larger instances first.

        Args:
            boxes: `Boxes`, an N×4 XYXY_ABS array or tensor, or a list of boxes.
            labels: one text per instance, written above its box (or inside its mask).
            masks: `BitMasks`, `PolygonMasks`, an N×H×W array or tensor, or a list of
                polygons lists / RLE dicts / binary masks / `GenericMask`.
            assigned_colors: one matplotlib colour per instance; default: fallback colours by
                index.
            alpha: opacity of the masks' fill.

        Returns:
            The drawn image.

        Raises:
            ValueError: the arguments do not have the same number of instances.
        """
        if boxes is not None:
            boxes = convert_boxes(boxes)
        if masks is not None:
            masks = convert_masks(masks, self.output.height, self.output.width)
        counts = {len(x) for x in (boxes, labels, masks, assigned_colors) if x is not None}
        if len(counts) > 1:
            raise ValueError(f"overlay_instances got different numbers of instances: {counts}.")
        num = counts.pop() if counts else 0
        if num == 0 or (boxes is None and masks is None):  # nothing to draw or to label
            return self.output
        if assigned_colors is None:
            assigned_colors = self._instance_colors(None, num)
        colors = [mplc.to_rgb(c) for c in assigned_colors]
        if boxes is not None:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        else:
            areas = np.array([m.area() for m in masks])
        for i in np.argsort(-areas, kind="stable").tolist():
            if masks is not None:
                self.output.fill_mask(masks[i].mask, colors[i], alpha)
                for polygon in outline_polygons(masks[i].mask):
                    self.draw_polygon(polygon, colors[i], alpha=0.0)
            if boxes is not None:
                self.draw_box(boxes[i], alpha=0.8, edge_color=colors[i])
            if labels is not None:
                self._draw_instance_label(labels[i], colors[i], boxes, masks, i)
        return self.output

    def _draw_instance_label(
        self, label: str, color: Color, boxes: np.ndarray | None, masks: list | None, i: int
    ) -> None:
        """Write an instance's label where it overlaps the fewest labels already written."""
        if boxes is not None:
            x0, y0, x1, y1 = boxes[i]
            # Above the box, inside its top, below it, inside its bottom; all left-aligned.
            anchors = [
                ((x0, y0), "left", "bottom"),
                ((x0, y0), "left", "top"),
                ((x0, y1), "left", "top"),
                ((x0, y1), "left", "bottom"),
            ]
        else:
            points = label_points(masks[i].mask, _LARGE_MASK_AREA_THRESH)
            if not points:
                return
            x0, y0, x1, y1 = masks[i].bbox()
            center = (x0 + x1) / 2
            anchors = [(points[0], "center", "center")]
            anchors += [((center, y0), "center", "bottom"), ((center, y1), "center", "top")]
        height_ratio = (y1 - y0) / np.sqrt(self.output.height * self.output.width)
        font_size = self._default_font_size * float(np.clip(0.75 + 2.5 * height_ratio, 0.75, 1.25))
        size = max(font_size * self.output.scale, _MIN_FONT_POINTS)
        self.output.add_label(label, anchors, size, contrasting(color), color)

    # ---- primitives --------------------------------------------------------------------------

    def draw_text(
        self,
        text: str,
        position: tuple[float, float],
        *,
        font_size: float | None = None,
        color: Any = "g",
        horizontal_alignment: str = "center",
        rotation: float = 0,
        vertical_alignment: str = "top",
        background_color: Any = None,
    ) -> VisImage:
        """Write ``text`` on a filled box, moved inside the image if it would stick out.

        Args:
            text: the text.
            position: (x, y) in image pixels of the text's anchor.
            font_size: in points before scaling (the output has it times ``scale``); default
                grows with the image size.
            color: text colour.
            horizontal_alignment: "left", "center" or "right" of the anchor.
            rotation: degrees, counter-clockwise.
            vertical_alignment: "top", "center", "bottom" or "baseline" (segtron addition).
            background_color: fill of the box behind the text; default black or white,
                whichever contrasts with ``color`` (segtron addition).

        Returns:
            The drawn image.
        """
        size = (font_size or self._default_font_size) * self.output.scale
        color = mplc.to_rgb(color)
        background = contrasting(color) if background_color is None else background_color
        anchors = [(position, horizontal_alignment, vertical_alignment)]
        self.output.add_label(text, anchors, size, color, background, rotation)
        return self.output

    def draw_box(
        self,
        box_coord: Any,
        alpha: float = 0.5,
        edge_color: Any = "g",
        line_style: str = "-",
    ) -> VisImage:
        """Draw the outline of a box (x0, y0, x1, y1) in image pixels.

        Returns:
            The drawn image.
        """
        x0, y0, x1, y1 = (float(v) for v in box_coord)
        self.output.ax.add_patch(
            mpl.patches.Rectangle(
                (x0, y0),
                x1 - x0,
                y1 - y0,
                fill=False,
                edgecolor=edge_color,
                linewidth=self._line_width(),
                alpha=alpha,
                linestyle=line_style,
            )
        )
        return self.output

    def draw_polygon(
        self, segment: np.ndarray, color: Any, edge_color: Any = None, alpha: float = 0.5
    ) -> VisImage:
        """Draw a filled polygon.

        Args:
            segment: N×2 (x, y) points in image pixels (or flat x0, y0, x1, y1, ...).
            color: fill colour.
            edge_color: outline colour; default the fill colour, darkened when the fill is
                nearly opaque.
            alpha: opacity of the fill (the outline is opaque).

        Returns:
            The drawn image.
        """
        if edge_color is None:
            edge_color = change_brightness(color, -0.7) if alpha > 0.8 else color
        self.output.ax.add_patch(
            mpl.patches.Polygon(
                np.asarray(segment).reshape(-1, 2),
                fill=True,
                facecolor=(*mplc.to_rgb(color), alpha),
                edgecolor=(*mplc.to_rgb(edge_color), 1.0),
                linewidth=max(self._line_width() / 2, 1.0),
            )
        )
        return self.output

    def draw_binary_mask(
        self,
        binary_mask: Any,
        color: Any = None,
        *,
        edge_color: Any = None,
        text: str | None = None,
        alpha: float = 0.5,
        area_threshold: float | None = 10,
    ) -> VisImage:
        """Fill and outline a binary mask, optionally with a label.

        Args:
            binary_mask: H×W array or tensor (non-zero = inside).
            color: fill colour; default a random colour of the table (as Detectron2).
            edge_color: outline colour; default the fill colour.
            text: label written at the most interior point of the largest piece (and of
                every very large piece).
            alpha: opacity of the fill.
            area_threshold: connected pieces smaller than this many pixels are not drawn.

        Returns:
            The drawn image.
        """
        color = mplc.to_rgb(random_color(rgb=True, maximum=1) if color is None else color)
        mask = to_numpy(binary_mask) != 0
        if area_threshold:
            mask = drop_small_components(mask, area_threshold)
        if not mask.any():
            return self.output
        self.output.fill_mask(mask, color, alpha)
        for polygon in outline_polygons(mask):
            self.draw_polygon(polygon, color, edge_color=edge_color, alpha=0.0)
        if text is not None:
            for point in label_points(mask, _LARGE_MASK_AREA_THRESH):
                self.draw_text(
                    text,
                    point,
                    color=contrasting(color),
                    vertical_alignment="center",
                    background_color=color,
                )
        return self.output
