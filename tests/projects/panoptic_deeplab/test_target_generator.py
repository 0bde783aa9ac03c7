"""Panoptic-DeepLab targets on hand-built panoptic maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segtron.projects.panoptic_deeplab import PanopticDeepLabTargetGenerator

IGNORE = 255
THING, OTHER_THING, STUFF = 0, 1, 3


def make_map() -> tuple[np.ndarray, list[dict]]:
    """40×50: stuff (id 7) everywhere, a 10×10 thing (id 9), a crowd thing (id 11), a void strip."""
    panoptic = np.full((40, 50), 7, dtype=np.int64)
    panoptic[10:20, 5:15] = 9  # centroid (14.5, 9.5)
    panoptic[30:34, 40:48] = 11
    panoptic[:, 49] = 0  # VOID
    segments = [
        {"id": 7, "category_id": STUFF, "iscrowd": 0},
        {"id": 9, "category_id": THING, "iscrowd": 0},
        {"id": 11, "category_id": OTHER_THING, "iscrowd": 1},
        {"id": 99, "category_id": THING, "iscrowd": 0},  # cropped out: not in the map
    ]
    return panoptic, segments


def generator(**kwargs) -> PanopticDeepLabTargetGenerator:
    args = {"ignore_label": IGNORE, "thing_ids": [THING, OTHER_THING], "sigma": 2} | kwargs
    return PanopticDeepLabTargetGenerator(**args)


def test_semantic_labels_and_centroids():
    panoptic, segments = make_map()
    targets = generator()(panoptic, segments)
    sem = targets["sem_seg"]
    assert sem.dtype == torch.int64 and sem.shape == (40, 50)
    assert sem[12, 7] == THING and sem[0, 0] == STUFF and sem[31, 41] == OTHER_THING
    assert (sem[:, 49] == IGNORE).all()
    # The crowd thing is a thing too: it has a center, as in Detectron2.
    assert np.allclose(targets["center_points"], [[14.5, 9.5], [31.5, 43.5]])


def test_crowd_can_be_ignored_in_semantic():
    panoptic, segments = make_map()
    sem = generator(ignore_crowd_in_semantic=True)(panoptic, segments)["sem_seg"]
    assert (sem[30:34, 40:48] == IGNORE).all() and sem[12, 7] == THING


def test_center_heatmap_is_a_gaussian_at_the_rounded_centroid():
    panoptic, segments = make_map()
    sigma = 2
    center = generator(sigma=sigma)(panoptic, segments)["center"]
    assert center.dtype == torch.float32
    # round(14.5) = 14 and round(9.5) = 10 (round half to even, as Detectron2).
    assert center[14, 10] == 1.0
    assert center[14, 10] == center.max()
    for dy, dx in [(1, 0), (0, 2), (3, 4), (-2, -1)]:
        expected = math.exp(-(dy**2 + dx**2) / (2 * sigma**2))
        assert center[14 + dy, 10 + dx].item() == pytest.approx(expected, rel=1e-6)
    # The window is (6σ+3)² = 15×15: nothing beyond 3σ+1 = 7 pixels.
    assert center[14, 10 + 8] == 0 and center[14 + 8, 10] == 0
    assert center[14, 10 + 7] > 0


def test_overlapping_gaussians_take_the_maximum():
    panoptic = np.zeros((20, 30), dtype=np.int64)
    panoptic[8:11, 8:11] = 1  # centroid (9, 9)
    panoptic[8:11, 13:16] = 2  # centroid (9, 14)
    segments = [
        {"id": 1, "category_id": THING, "iscrowd": 0},
        {"id": 2, "category_id": THING, "iscrowd": 0},
    ]
    sigma = 3
    center = generator(sigma=sigma)(panoptic, segments)["center"]
    assert center[9, 9] == 1.0 and center[9, 14] == 1.0
    # Between the two: the larger of the two Gaussians, not their sum.
    expected = math.exp(-(2**2) / (2 * sigma**2))
    assert center[9, 12].item() == pytest.approx(expected, rel=1e-6)


def test_offsets_point_to_the_centroid():
    panoptic, segments = make_map()
    offset = generator()(panoptic, segments)["offset"]
    assert offset.shape == (2, 40, 50)
    ys, xs = np.nonzero(panoptic == 9)
    assert np.allclose(ys + offset[0].numpy()[ys, xs], 14.5)
    assert np.allclose(xs + offset[1].numpy()[ys, xs], 9.5)
    ys, xs = np.nonzero(panoptic == 11)
    assert np.allclose(ys + offset[0].numpy()[ys, xs], 31.5)
    # Stuff and VOID pixels have no offset.
    assert (offset[:, 0:5, :] == 0).all() and (offset[:, :, 49] == 0).all()


def test_loss_weights():
    panoptic, segments = make_map()
    targets = generator(small_instance_area=101, small_instance_weight=3)(panoptic, segments)
    weights = targets["sem_seg_weights"].numpy()
    # The 100-pixel thing and the 32-pixel crowd are "small"; stuff and VOID weigh 1.
    assert (weights[panoptic == 9] == 3).all() and (weights[panoptic == 11] == 3).all()
    assert (weights[(panoptic == 7) | (panoptic == 0)] == 1).all()
    assert (generator(small_instance_area=32)(panoptic, segments)["sem_seg_weights"] == 1).all()

    center_weights = targets["center_weights"]
    assert center_weights.shape == (1, 40, 50)
    expected = ((panoptic == 7) | (panoptic == 9)).astype(np.float32)  # 0 on VOID and crowd
    assert np.array_equal(center_weights[0].numpy(), expected)
    # Stuff is kept in the offset loss unless ignore_stuff_in_offset.
    assert np.array_equal(targets["offset_weights"][0].numpy(), expected)
    ignored = generator(ignore_stuff_in_offset=True)(panoptic, segments)["offset_weights"]
    assert np.array_equal(ignored[0].numpy(), (panoptic == 9).astype(np.float32))


def test_a_thing_at_the_border_gets_a_clipped_gaussian():
    panoptic = np.zeros((10, 12), dtype=np.int64)
    panoptic[0:2, 0:2] = 5
    center = generator(sigma=2)(panoptic, [{"id": 5, "category_id": THING, "iscrowd": 0}])["center"]
    assert center[0, 0] == 1.0 and center[0, 0] == center.max()


def test_bad_sigma_is_reported():
    with pytest.raises(ValueError, match="GAUSSIAN_SIGMA"):
        generator(sigma=0)
