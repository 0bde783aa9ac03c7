"""Classical, training-free segmentation methods and the naming of their segments.

The methods split an image into unlabeled segments: :func:`otsu_segments` (Otsu's threshold of
the grey levels), :func:`kmeans_segments` (k-means of the pixel colours) and
:func:`grabcut_segments` (GrabCut initialised with a rectangle inset from the border).

Their segments have no class. To score them with the usual semantic metrics without looking at
the test labels, :class:`ClassModel` holds per-class statistics measured on *training* images:
a diagonal Gaussian over (colour, relative height in the image) and the class frequencies.
:func:`name_segments` gives each segment (or each connected component of one) the class that most
of its pixels vote for, each pixel voting for its most probable class under this per-pixel
naive-Bayes model. The segment shapes thus come from the classical method alone, their names
from these few training statistics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "ClassModel",
    "grabcut_segments",
    "kmeans_segments",
    "name_segments",
    "otsu_segments",
    "pixel_features",
    "split_components",
]

_MIN_VAR = 1e-4


def pixel_features(image: np.ndarray) -> np.ndarray:
    """Per-pixel features: the three colour values (0-1) and the row's relative height (0-1).

    Args:
        image: an H×W×3 image, 0-255, in any fixed channel order.

    Returns:
        An (H·W, 4) float64 array.
    """
    height, width = image.shape[:2]
    rows = (np.arange(height, dtype=np.float64) + 0.5) / height
    colour = image.reshape(-1, 3).astype(np.float64) / 255.0
    return np.concatenate([colour, np.repeat(rows, width)[:, None]], axis=1)


@dataclass
class ClassModel:
    """Diagonal Gaussians of :func:`pixel_features` per class, and log class frequencies.

    Attributes:
        means: (C, 4) means.
        variances: (C, 4) variances.
        log_prior: (C,) log frequencies; -inf for classes never seen in training.
    """

    means: np.ndarray
    variances: np.ndarray
    log_prior: np.ndarray

    @classmethod
    def fit(
        cls, samples: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int, ignore_value: int
    ) -> ClassModel:
        """Estimate the statistics from labeled images.

        Args:
            samples: pairs of an H×W×3 image and its H×W integer label map.
            num_classes: number of classes (labels 0 .. C-1; other labels are skipped).
            ignore_value: label to skip.

        Returns:
            The model.

        Raises:
            ValueError: when no pixel has a class label.
        """
        count = np.zeros(num_classes)
        total = np.zeros((num_classes, 4))
        total_sq = np.zeros((num_classes, 4))
        for image, labels in samples:
            features = pixel_features(image)
            labels = labels.reshape(-1).astype(np.int64)
            keep = (labels >= 0) & (labels < num_classes) & (labels != ignore_value)
            features, labels = features[keep], labels[keep]
            count += np.bincount(labels, minlength=num_classes)
            for d in range(4):
                total[:, d] += np.bincount(labels, features[:, d], minlength=num_classes)
                total_sq[:, d] += np.bincount(labels, features[:, d] ** 2, minlength=num_classes)
        if count.sum() == 0:
            raise ValueError("ClassModel.fit: the training labels hold no class pixel.")
        seen = count > 0
        safe = np.maximum(count, 1)[:, None]
        means = total / safe
        variances = np.where(seen[:, None], total_sq / safe - means**2, 1.0)
        with np.errstate(divide="ignore"):
            log_prior = np.log(count / count.sum())
        return cls(means, np.maximum(variances, _MIN_VAR), log_prior)

    def log_posterior(self, features: np.ndarray) -> np.ndarray:
        """Unnormalized per-pixel log-posteriors.

        Args:
            features: (P, 4) pixel features.

        Returns:
            (P, C) log p(features | class) + log p(class), up to a constant.
        """
        diff = features[:, None, :] - self.means[None]
        log_lik = -0.5 * ((diff**2) / self.variances[None] + np.log(self.variances)[None]).sum(-1)
        return log_lik + self.log_prior[None]


def otsu_segments(image_bgr: np.ndarray) -> np.ndarray:
    """Two segments: grey levels above (1) and below (0) Otsu's threshold.

    Args:
        image_bgr: an H×W×3 uint8 BGR image.

    Returns:
        An H×W int32 map of segment ids.
    """
    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    _, mask = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return mask.astype(np.int32)


def kmeans_segments(image_bgr: np.ndarray, k: int, attempts: int = 3, seed: int = 0) -> np.ndarray:
    """k segments: k-means clusters of the pixel colours (k-means++ seeding, fixed seed).

    Args:
        image_bgr: an H×W×3 uint8 image.
        k: number of clusters (at most the number of pixels).
        attempts: number of restarts; the most compact clustering is kept.
        seed: seed of OpenCV's random generator.

    Returns:
        An H×W int32 map of cluster ids.
    """
    height, width = image_bgr.shape[:2]
    data = image_bgr.reshape(-1, 3).astype(np.float32)
    k = min(k, len(data))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, labels, _ = cv2.kmeans(data, k, None, criteria, attempts, cv2.KMEANS_PP_CENTERS)
    return labels.reshape(height, width).astype(np.int32)


def grabcut_segments(image_bgr: np.ndarray, iters: int = 5, margin: float = 0.1) -> np.ndarray:
    """Foreground (1) and background (0) from GrabCut started with an inset rectangle.

    The band of relative width ``margin`` along the border is sure background; the inside is
    "probably foreground". When the image is too small for such a band, or GrabCut fails
    (e.g. a uniform image), the initial rectangle is returned.

    Args:
        image_bgr: an H×W×3 uint8 BGR image.
        iters: GrabCut iterations.
        margin: relative width of the border band (0 < margin < 0.5).

    Returns:
        An H×W int32 map of segment ids.
    """
    height, width = image_bgr.shape[:2]
    mx, my = max(1, round(margin * width)), max(1, round(margin * height))
    rect_mask = np.zeros((height, width), np.int32)
    rect_mask[my : height - my, mx : width - mx] = 1
    if width - 2 * mx < 1 or height - 2 * my < 1:
        return rect_mask
    mask = np.zeros((height, width), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    rect = (mx, my, width - 2 * mx, height - 2 * my)
    try:
        cv2.grabCut(
            np.ascontiguousarray(image_bgr), mask, rect, bgd, fgd, iters, cv2.GC_INIT_WITH_RECT
        )
    except cv2.error:
        return rect_mask
    return np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.int32)


def split_components(segments: np.ndarray) -> np.ndarray:
    """Give each 4-connected component of each segment its own id.

    Args:
        segments: an H×W integer map of segment ids.

    Returns:
        An H×W int32 map of component ids 0 .. n-1.
    """
    out = np.zeros(segments.shape, np.int32)
    offset = 0
    for segment in np.unique(segments):
        num, components = cv2.connectedComponents(
            (segments == segment).astype(np.uint8), connectivity=4
        )
        inside = components > 0
        out[inside] = components[inside] + offset - 1
        offset += num - 1
    return out


def name_segments(segments: np.ndarray, log_posterior: np.ndarray) -> np.ndarray:
    """The class of each pixel: the majority of its segment's per-pixel classes.

    Each pixel votes for its most probable class under the class model; every pixel of a
    segment takes the class with the most votes in the segment (ties go to the lower class id).
    A majority vote rather than a sum of log-posteriors, which a few outlying pixels would
    dominate.

    Args:
        segments: an H×W integer map of segment ids (non-negative).
        log_posterior: (H·W, C) per-pixel log-posteriors (:meth:`ClassModel.log_posterior`).

    Returns:
        An H×W int64 map of classes.
    """
    ids = segments.reshape(-1).astype(np.int64)
    num_segments, num_classes = int(ids.max()) + 1, log_posterior.shape[1]
    pixel_class = log_posterior.argmax(1)
    votes = np.bincount(ids * num_classes + pixel_class, minlength=num_segments * num_classes)
    return votes.reshape(num_segments, num_classes).argmax(1)[segments]
