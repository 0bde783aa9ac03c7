"""The COCO panoptic PNG encoding: segment id = R + 256·G + 256²·B, id 0 = VOID."""

from __future__ import annotations

import numpy as np

__all__ = ["id2rgb", "rgb2id"]


def rgb2id(color: np.ndarray) -> np.ndarray:
    """Decode an H×W×3 uint8 panoptic PNG into an H×W int64 array of segment ids.

    Raises:
        ValueError: the array is not H×W×3.
    """
    color = np.asarray(color)
    if color.ndim != 3 or color.shape[2] != 3:
        raise ValueError(
            f"A panoptic PNG must be H×W×3 (RGB); got an array of shape {color.shape}."
        )
    color = color.astype(np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Encode an H×W array of segment ids (0 ≤ id < 256³) as an H×W×3 uint8 image.

    Raises:
        ValueError: an id is negative or does not fit in 24 bits.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"Segment ids must lie in [0, 2^24); got {ids.min()}..{ids.max()}.")
    rgb = np.empty((*ids.shape, 3), dtype=np.uint8)
    for channel in range(3):
        rgb[..., channel] = (ids >> (8 * channel)) & 255
    return rgb
