"""Drawing of video frames, with each instance keeping its colour from frame to frame.

`VideoVisualizer` follows instances with a simple tracker: the detections of a frame are matched
to the tracks of the previous frames by IoU of their masks (or of their boxes when there are no
masks), greedily from the best pair, between instances of the same class. A matched detection
takes its track's colour; an unmatched one starts a track with a colour of `colormap` that no
live track uses; a track that is not matched survives a few frames, in case the detector only
missed it once. Colours are chosen deterministically, unlike Detectron2's random ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

from segtron.utils.visualizer import ColorMode, Visualizer
from segtron.utils.visualizer_base import (
    DISTINCT_COLORS,
    Color,
    PanopticSegments,
    VisImage,
    convert_boxes,
    convert_masks,
    create_text_labels,
    to_numpy,
)

__all__ = ["VideoVisualizer"]

_MASK_IOU_THRESHOLD = 0.5
_BOX_IOU_THRESHOLD = 0.6
_TTL = 8  # frames a track survives without being matched


@dataclass
class _Track:
    """One instance followed across frames."""

    label: int
    box: np.ndarray | None  # XYWH, as pycocotools' iou takes boxes
    mask_rle: dict | None
    color: Color | None = None
    ttl: int = _TTL


class VideoVisualizer:
    """Draws the predictions of successive video frames with per-track colours.

    Attributes:
        metadata: the dataset metadata (class names and colours).
    """

    def __init__(self, metadata: Any, instance_mode: ColorMode = ColorMode.IMAGE) -> None:
        """Start on a new video.

        Args:
            metadata: the dataset metadata.
            instance_mode: ``ColorMode.IMAGE`` or ``ColorMode.IMAGE_BW``.

        Raises:
            ValueError: for ``ColorMode.SEGMENTATION`` (per-track colours are not class colours).
        """
        if instance_mode not in (ColorMode.IMAGE, ColorMode.IMAGE_BW):
            raise ValueError(f"VideoVisualizer supports IMAGE and IMAGE_BW, not {instance_mode}.")
        self.metadata = metadata
        self._instance_mode = instance_mode
        self._tracks: list[_Track] = []
        self._next_color = 0

    def draw_instance_predictions(self, frame: np.ndarray, predictions: Any) -> VisImage:
        """Draw a frame's ``instances`` output, each tracked instance in its own colour.

        Args:
            frame: the H×W×3 RGB frame.
            predictions: `Instances` with any of pred_boxes, scores, pred_classes, pred_masks.

        Returns:
            The drawn frame.
        """
        visualizer = Visualizer(frame, self.metadata, instance_mode=self._instance_mode)
        height, width = visualizer.img.shape[:2]
        num = len(predictions)
        boxes = convert_boxes(predictions.pred_boxes) if predictions.has("pred_boxes") else None
        masks = None
        if predictions.has("pred_masks"):
            masks = convert_masks(predictions.pred_masks, height, width)
        classes = None
        if predictions.has("pred_classes"):
            classes = [int(c) for c in to_numpy(predictions.pred_classes).reshape(-1)]
        scores = to_numpy(predictions.scores).tolist() if predictions.has("scores") else None
        detections = [
            _Track(
                label=-1 if classes is None else classes[i],
                box=None if boxes is None else _xyxy_to_xywh(boxes[i]),
                mask_rle=None if masks is None else _encode(masks[i].mask),
            )
            for i in range(num)
        ]
        colors = self._assign_colors(detections)
        if num == 0:
            return visualizer.output
        alpha = 0.5
        if self._instance_mode == ColorMode.IMAGE_BW:
            union = np.any([m.mask for m in masks], axis=0) if masks else None
            visualizer.output.reset_image(visualizer._create_grayscale_image(union))
            alpha = 0.3
        labels = create_text_labels(classes, scores, getattr(self.metadata, "thing_classes", None))
        return visualizer.overlay_instances(
            boxes=boxes, masks=masks, labels=labels, assigned_colors=colors, alpha=alpha
        )

    def draw_sem_seg(
        self, frame: np.ndarray, sem_seg: Any, area_threshold: float | None = None
    ) -> VisImage:
        """Draw a semantic segmentation on a frame (class colours; nothing is tracked).

        Returns:
            The drawn frame.
        """
        visualizer = Visualizer(frame, self.metadata)
        return visualizer.draw_sem_seg(sem_seg, area_threshold=area_threshold)

    def draw_panoptic_seg(
        self,
        frame: np.ndarray,
        panoptic_seg: Any,
        segments_info: list[dict] | None,
        area_threshold: float | None = None,
        alpha: float = 0.5,
    ) -> VisImage:
        """Draw a panoptic segmentation on a frame: stuff in class colours, things tracked.

        Args:
            frame: the H×W×3 RGB frame.
            panoptic_seg: H×W segment ids.
            segments_info: as for `Visualizer.draw_panoptic_seg`.
            area_threshold: connected pieces of stuff smaller than this are not drawn.
            alpha: opacity of the fill.

        Returns:
            The drawn frame.
        """
        visualizer = Visualizer(frame, self.metadata, instance_mode=self._instance_mode)
        segments = PanopticSegments(panoptic_seg, segments_info, self.metadata)

        def colorize(classes: list[int], masks: list[np.ndarray]) -> list[Color]:
            tracks = [_Track(c, None, _encode(m)) for c, m in zip(classes, masks)]
            return self._assign_colors(tracks)

        return visualizer._draw_panoptic(segments, area_threshold, alpha, colorize)

    draw_panoptic_seg_predictions = draw_panoptic_seg  # Detectron2's name

    def _assign_colors(self, detections: list[_Track]) -> list[Color]:
        """Match detections to tracks, give them colours, and make them the tracks."""
        ious, threshold = self._ious(detections)
        matched_tracks, matched_detections = set(), set()
        for flat in np.argsort(-ious, axis=None, kind="stable"):
            t, d = np.unravel_index(flat, ious.shape)
            if ious[t, d] <= threshold:
                break
            if t in matched_tracks or d in matched_detections:
                continue
            matched_tracks.add(t)
            matched_detections.add(d)
            detections[d].color = self._tracks[t].color
        survivors = []
        for t, track in enumerate(self._tracks):
            track.ttl -= 1
            if t not in matched_tracks and track.ttl > 0:
                survivors.append(track)
        for detection in detections:
            if detection.color is None:
                detection.color = self._new_color(detections + survivors)
        self._tracks = detections + survivors
        return [d.color for d in detections]

    def _ious(self, detections: list[_Track]) -> tuple[np.ndarray, float]:
        """IoU of every (track, detection) pair of the same class, and the matching threshold.

        Masks are compared when every track and detection has one, else boxes; pairs that
        cannot be compared get 0.
        """
        ious = np.zeros((len(self._tracks), len(detections)))
        if not self._tracks or not detections:
            return ious, _MASK_IOU_THRESHOLD
        everyone = self._tracks + detections
        crowd = np.zeros(len(detections), dtype=np.uint8)
        if all(x.mask_rle is not None for x in everyone):
            old, new = [t.mask_rle for t in self._tracks], [d.mask_rle for d in detections]
            threshold = _MASK_IOU_THRESHOLD
        elif all(x.box is not None for x in everyone):
            old, new = [t.box for t in self._tracks], [d.box for d in detections]
            old, new = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
            threshold = _BOX_IOU_THRESHOLD
        else:
            return ious, _MASK_IOU_THRESHOLD
        ious = np.asarray(mask_util.iou(old, new, crowd), dtype=np.float64).reshape(ious.shape)
        same_class = np.array([[t.label == d.label for d in detections] for t in self._tracks])
        return np.where(same_class, ious, 0.0), threshold

    def _new_color(self, tracks: list[_Track]) -> Color:
        """The next colour of the table that no track in ``tracks`` has (if any is left)."""
        in_use = {t.color for t in tracks}
        for _ in range(len(DISTINCT_COLORS)):
            color = DISTINCT_COLORS[self._next_color % len(DISTINCT_COLORS)]
            self._next_color += 1
            if color not in in_use:
                return color
        return color


def _xyxy_to_xywh(box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([x0, y0, x1 - x0, y1 - y0], dtype=np.float64)


def _encode(mask: np.ndarray) -> dict:
    return mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
