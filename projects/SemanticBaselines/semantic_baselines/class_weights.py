"""Median frequency balancing (Eigen & Fergus, 2015; used by SegNet): class weights of the loss.

The weight of class c is ``median_freq / freq(c)``, where ``freq(c)`` is the number of pixels of
class c divided by the number of labelled pixels of the images in which c appears, and the
median is taken over the classes that appear. Rare classes weigh more than 1, frequent ones
less. ``MODEL.PIXEL_CLASSIFIER.CLASS_WEIGHTS`` takes the result (see
``projects/SemanticBaselines/compute_class_weights.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from segtron.data.detection_utils import read_image

__all__ = ["median_frequency_weights"]


def median_frequency_weights(
    dataset_dicts: Iterable[dict], num_classes: int, ignore_value: int = 255
) -> list[float]:
    """Median frequency balancing weights from the semantic labels of a dataset.

    Args:
        dataset_dicts: dataset dicts with ``sem_seg_file_name`` (label PNGs of class indices).
        num_classes: number of classes; labels ``>= num_classes`` must be ``ignore_value``.
        ignore_value: the label of unlabelled pixels.

    Returns:
        One weight per class; 0.0 for a class that never appears.

    Raises:
        ValueError: a dict without ``sem_seg_file_name``, a label outside the classes that is
            not ``ignore_value``, or no labelled pixel at all.
    """
    class_pixels = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    for record in dataset_dicts:
        if "sem_seg_file_name" not in record:
            raise ValueError(
                f"Dataset dict of {record.get('file_name', '?')} has no 'sem_seg_file_name'; "
                "median frequency weights need semantic label files."
            )
        labels = read_image(record["sem_seg_file_name"], "L")[..., 0].astype(np.int64)
        labels = labels[labels != ignore_value]
        if labels.size and labels.max() >= num_classes:
            raise ValueError(
                f"{record['sem_seg_file_name']} has label {labels.max()}, not a class of "
                f"{num_classes} nor the ignore value {ignore_value}."
            )
        counts = np.bincount(labels, minlength=num_classes)
        class_pixels += counts
        image_pixels += np.where(counts > 0, labels.size, 0)
    present = image_pixels > 0
    if not present.any():
        raise ValueError("No labelled pixel in the dataset: cannot compute class frequencies.")
    freq = class_pixels[present] / image_pixels[present]
    weights = np.zeros(num_classes)
    weights[present] = np.median(freq) / freq
    return [float(w) for w in weights]
