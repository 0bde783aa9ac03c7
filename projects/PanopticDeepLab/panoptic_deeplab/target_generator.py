"""Training targets of Panoptic-DeepLab from a panoptic id map (`PanopticDeepLabTargetGenerator`).

From an H×W map of segment ids and its ``segments_info`` it builds the semantic labels, the
center heatmap (a Gaussian at each thing's mass centroid), the (dy, dx) offsets from every
thing pixel to its centroid, and the per-pixel loss weights of the three branches, as
Detectron2's ``PanopticDeepLabTargetGenerator`` defines them. The per-segment statistics come
from one ``np.unique`` and a few ``np.bincount`` over the image instead of one full-image
comparison per segment and per quantity.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["PanopticDeepLabTargetGenerator"]


class PanopticDeepLabTargetGenerator:
    """Generate the targets of Panoptic-DeepLab for one image.

    Rules (Detectron2's):

    - ``sem_seg``: each segment's contiguous ``category_id``; VOID (id 0 or ids without a
      segment) gets ``ignore_label``, as do crowd segments when ``ignore_crowd_in_semantic``.
    - ``center``: max over things of a Gaussian of ``sigma`` (a (6σ+3)² window, peak 1) placed at
      the rounded mass centroid of the thing's pixels in the map. Crowd thing segments get a
      Gaussian and offsets too (their center and offset weights are 0), as in Detectron2.
    - ``offset``: (2, H, W) ``(centroid_y - y, centroid_x - x)`` on thing pixels, 0 elsewhere.
    - ``sem_seg_weights``: ``small_instance_weight`` on things with fewer than
      ``small_instance_area`` pixels, 1 elsewhere.
    - ``center_weights``: 1 on every non-crowd segment, 0 on VOID and crowd.
    - ``offset_weights``: like ``center_weights``, restricted to things when
      ``ignore_stuff_in_offset``.

    Args:
        ignore_label: the semantic label of VOID pixels.
        thing_ids: contiguous ids of the thing classes.
        sigma: standard deviation of the center Gaussian, in pixels (> 0).
        ignore_stuff_in_offset: give stuff pixels offset weight 0.
        small_instance_area: things with fewer pixels get ``small_instance_weight``.
        small_instance_weight: semantic loss weight of small things.
        ignore_crowd_in_semantic: label crowd pixels ``ignore_label`` in ``sem_seg``.
    """

    def __init__(
        self,
        ignore_label: int,
        thing_ids: Iterable[int],
        sigma: float = 8,
        ignore_stuff_in_offset: bool = False,
        small_instance_area: int = 0,
        small_instance_weight: float = 1,
        ignore_crowd_in_semantic: bool = False,
    ) -> None:
        if not sigma > 0:
            raise ValueError(
                f"The Gaussian sigma must be positive (INPUT.GAUSSIAN_SIGMA); got {sigma}."
            )
        self.ignore_label = ignore_label
        self.thing_ids = {int(i) for i in thing_ids}
        self.ignore_stuff_in_offset = ignore_stuff_in_offset
        self.small_instance_area = small_instance_area
        self.small_instance_weight = small_instance_weight
        self.ignore_crowd_in_semantic = ignore_crowd_in_semantic
        self.sigma = sigma
        # The Gaussian window: 6σ+3 pixels on a side, peak (value 1) at index 3σ+1.
        self._radius = int(round(3 * sigma + 1))
        coords = np.arange(2 * self._radius + 1, dtype=np.float64) - self._radius
        self.g = np.exp(-(coords[None, :] ** 2 + coords[:, None] ** 2) / (2 * sigma**2))

    def __call__(self, panoptic: np.ndarray, segments_info: Sequence[dict[str, Any]]) -> dict:
        """Generate the targets.

        Args:
            panoptic: H×W integer segment ids (already decoded with ``rgb2id``).
            segments_info: one dict per segment with ``id``, contiguous ``category_id`` and
                ``iscrowd``; segments absent from ``panoptic`` (e.g. cropped out) are skipped.

        Returns:
            A dict with ``sem_seg`` (H×W int64), ``center`` (H×W float32), ``center_points``
            (list of [y, x] centroids of the things present), ``offset`` (2×H×W float32, (dy, dx)),
            ``sem_seg_weights`` (H×W float32), ``center_weights`` and ``offset_weights``
            (1×H×W float32).
        """
        panoptic = np.asarray(panoptic)
        if panoptic.ndim != 2:
            raise ValueError(f"The panoptic id map must be H×W; got shape {panoptic.shape}.")
        height, width = panoptic.shape
        ids, inverse = np.unique(panoptic, return_inverse=True)
        inverse = inverse.reshape(height, width)
        num = len(ids)
        # Per unique id of the map: semantic label, crowd / thing / center / offset flags.
        semantic_lut = np.full(num, self.ignore_label, dtype=np.int64)
        crowd = np.zeros(num, dtype=bool)
        thing = np.zeros(num, dtype=bool)
        center_weight_lut = np.zeros(num, dtype=np.float32)
        offset_weight_lut = np.zeros(num, dtype=np.float32)
        for seg in segments_info:
            index = np.searchsorted(ids, seg["id"])
            if index >= num or ids[index] != seg["id"]:
                continue  # not in the map, e.g. cropped out
            category = int(seg["category_id"])
            iscrowd = bool(seg.get("iscrowd", 0))
            is_thing = category in self.thing_ids
            if not (self.ignore_crowd_in_semantic and iscrowd):
                semantic_lut[index] = category
            crowd[index], thing[index] = iscrowd, is_thing
            if not iscrowd:
                center_weight_lut[index] = 1
                if is_thing or not self.ignore_stuff_in_offset:
                    offset_weight_lut[index] = 1

        area = np.bincount(inverse.ravel(), minlength=num).astype(np.float64)
        y_coord, x_coord = np.meshgrid(
            np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij"
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            center_y = np.bincount(inverse.ravel(), y_coord.ravel(), num) / area
            center_x = np.bincount(inverse.ravel(), x_coord.ravel(), num) / area

        semantic_weight_lut = np.ones(num, dtype=np.float32)
        semantic_weight_lut[thing & (area < self.small_instance_area)] = self.small_instance_weight

        center = np.zeros((height, width), dtype=np.float32)
        center_points = []
        for index in np.flatnonzero(thing):
            center_points.append([center_y[index], center_x[index]])
            self._paste_gaussian(center, round(center_y[index]), round(center_x[index]))

        is_thing_pixel = thing[inverse]
        offset = np.zeros((2, height, width), dtype=np.float32)
        offset[0] = np.where(is_thing_pixel, center_y[inverse] - y_coord, 0)
        offset[1] = np.where(is_thing_pixel, center_x[inverse] - x_coord, 0)
        return {
            "sem_seg": torch.as_tensor(semantic_lut[inverse]),
            "center": torch.as_tensor(center),
            "center_points": center_points,
            "offset": torch.as_tensor(offset),
            "sem_seg_weights": torch.as_tensor(semantic_weight_lut[inverse]),
            "center_weights": torch.as_tensor(center_weight_lut[inverse][None]),
            "offset_weights": torch.as_tensor(offset_weight_lut[inverse][None]),
        }

    def _paste_gaussian(self, center: np.ndarray, y: int, x: int) -> None:
        """Max the Gaussian window centered at (y, x) into `center`, clipped to the image."""
        height, width = center.shape
        r = self._radius
        y0, y1 = max(0, y - r), min(height, y + r + 1)
        x0, x1 = max(0, x - r), min(width, x + r + 1)
        if y0 >= y1 or x0 >= x1:
            return
        patch = self.g[y0 - (y - r) : y1 - (y - r), x0 - (x - r) : x1 - (x - r)]
        np.maximum(center[y0:y1, x0:x1], patch, out=center[y0:y1, x0:x1])
