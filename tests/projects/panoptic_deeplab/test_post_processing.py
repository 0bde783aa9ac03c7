"""Panoptic-DeepLab post-processing on hand-built semantic, center and offset maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segtron.projects.panoptic_deeplab import get_instance_predictions, get_panoptic_segmentation
from segtron.projects.panoptic_deeplab.post_processing import find_instance_center

THING, STUFF, OTHER_STUFF = 1, 2, 3
THINGS = [0, THING]
DIVISOR = 1000


def offsets_to(centers: list[tuple[float, float]], owner: np.ndarray) -> torch.Tensor:
    """(2, H, W) offsets from each pixel to the center indexed by `owner` (-1: zero offset)."""
    height, width = owner.shape
    ys, xs = np.mgrid[:height, :width].astype(np.float32)
    offsets = np.zeros((2, height, width), dtype=np.float32)
    for k, (cy, cx) in enumerate(centers):
        offsets[0][owner == k] = cy - ys[owner == k]
        offsets[1][owner == k] = cx - xs[owner == k]
    return torch.from_numpy(offsets)


def heatmap(shape: tuple[int, int], peaks: dict[tuple[int, int], float]) -> torch.Tensor:
    center = torch.zeros(1, *shape)
    for (y, x), value in peaks.items():
        center[0, y, x] = value
    return center


def panoptic(sem, center, offsets, **kwargs) -> torch.Tensor:
    args = {
        "thing_ids": THINGS,
        "label_divisor": DIVISOR,
        "stuff_area": 10,
        "void_label": -1,
        "threshold": 0.1,
        "nms_kernel": 3,
        "top_k": 200,
    } | kwargs
    return get_panoptic_segmentation(torch.as_tensor(sem)[None], center, offsets, **args)[0][0]


def test_touching_instances_of_one_class_are_split_by_their_offsets():
    # Two 10×10 squares of one thing class side by side (no gap) on stuff.
    sem = np.full((20, 30), STUFF)
    sem[5:15, 5:25] = THING
    owner = np.full(sem.shape, -1)
    owner[5:15, 5:15], owner[5:15, 15:25] = 0, 1
    centers = [(9.5, 9.5), (9.5, 19.5)]
    center = heatmap(sem.shape, {(10, 10): 0.9, (10, 20): 0.8})
    pan = panoptic(sem, center, offsets_to(centers, owner)).numpy()
    # Instances are numbered per class from 1, in raster order of their centers.
    assert (pan[5:15, 5:15] == THING * DIVISOR + 1).all()
    assert (pan[5:15, 15:25] == THING * DIVISOR + 2).all()
    assert (pan[sem == STUFF] == STUFF * DIVISOR).all()


def test_grouping_follows_offsets_not_distance():
    # Pixels right next to center B whose offsets point at A belong to A.
    sem = np.full((10, 30), THING)
    owner = np.zeros(sem.shape, dtype=int)
    owner[:, 25:] = 1
    center = heatmap(sem.shape, {(5, 2): 0.9, (5, 27): 0.9})
    pan = panoptic(sem, center, offsets_to([(5, 2), (5, 27)], owner)).numpy()
    assert (pan[:, :25] == THING * DIVISOR + 1).all() and (pan[:, 25:] == THING * DIVISOR + 2).all()


def test_tiny_stuff_region_becomes_void():
    sem = np.full((20, 20), STUFF)
    sem[0:3, 0:3] = OTHER_STUFF  # 9 pixels < stuff_area 10
    pan = panoptic(sem, heatmap(sem.shape, {}), torch.zeros(2, 20, 20), stuff_area=10).numpy()
    assert (pan[0:3, 0:3] == -1).all()
    assert (pan[sem == STUFF] == STUFF * DIVISOR).all()
    pan = panoptic(sem, heatmap(sem.shape, {}), torch.zeros(2, 20, 20), stuff_area=9).numpy()
    assert (pan[0:3, 0:3] == OTHER_STUFF * DIVISOR).all()


def test_things_without_a_center_are_void():
    sem = np.full((10, 10), THING)
    pan = panoptic(sem, heatmap(sem.shape, {(5, 5): 0.05}), torch.zeros(2, 10, 10))
    assert (pan == -1).all()


def test_instance_class_is_the_majority_vote():
    sem = np.full((10, 10), THING)
    sem[0:3, :] = 0  # 30 of 100 pixels of the other thing class
    pan = panoptic(sem, heatmap(sem.shape, {(5, 5): 0.5}), offsets_to([(5, 5)], np.zeros((10, 10))))
    assert (pan == THING * DIVISOR + 1).all()


def test_threshold_nms_and_top_k():
    center = heatmap(
        (20, 20), {(2, 2): 0.9, (2, 3): 0.5, (10, 10): 0.7, (15, 4): 0.3, (17, 17): 0.1}
    )
    # (2, 3) is suppressed by its neighbour (2, 2); 0.1 is not above the threshold 0.1.
    found = find_instance_center(center, threshold=0.1, nms_kernel=3).tolist()
    assert found == [[2, 2], [10, 10], [15, 4]]
    assert find_instance_center(center, threshold=0.5, nms_kernel=3).tolist() == [[2, 2], [10, 10]]
    # top-k keeps the best k peaks, returned in raster order.
    assert find_instance_center(center, 0.1, 3, top_k=2).tolist() == [[2, 2], [10, 10]]
    assert find_instance_center(center, 0.1, 3, top_k=1).tolist() == [[2, 2]]
    # Without the NMS window reaching it, (2, 3) survives only with kernel 1.
    assert [2, 3] in find_instance_center(center, 0.1, 1).tolist()
    with pytest.raises(ValueError, match="NMS_KERNEL"):
        find_instance_center(center, 0.1, 4)


def reference_panoptic(sem, center, offsets, threshold, kernel, stuff_area):
    """A slow, loop-based statement of the rules, to compare against."""
    height, width = sem.shape
    pooled = torch.nn.functional.max_pool2d(center[None], kernel, 1, kernel // 2)[0, 0].numpy()
    c = center[0].numpy()
    peaks = [
        (y, x)
        for y in range(height)
        for x in range(width)
        if c[y, x] > threshold and c[y, x] == pooled[y, x]
    ]
    pan = np.full((height, width), -1)
    ins = np.zeros((height, width), dtype=int)
    for y in range(height):
        for x in range(width):
            if sem[y, x] in THINGS and peaks:
                py, px = y + offsets[0, y, x].item(), x + offsets[1, y, x].item()
                d = [(py - cy) ** 2 + (px - cx) ** 2 for cy, cx in peaks]
                ins[y, x] = int(np.argmin(d)) + 1
    counter: dict[int, int] = {}
    for k in range(1, len(peaks) + 1):
        labels = sem[ins == k]
        if labels.size:
            cls = int(np.bincount(labels).argmax())
            counter[cls] = counter.get(cls, 0) + 1
            pan[ins == k] = cls * DIVISOR + counter[cls]
    for cls in np.unique(sem):
        region = (sem == cls) & (ins == 0)
        if cls not in THINGS and region.sum() >= stuff_area:
            pan[region] = cls * DIVISOR
    return pan


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_a_loop_based_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    height, width = 24, 32
    sem = torch.randint(0, 4, (height // 4, width // 4), generator=generator)
    sem = sem.repeat_interleave(4, 0).repeat_interleave(4, 1).numpy()
    center = torch.rand(1, height, width, generator=generator) ** 4
    offsets = torch.randn(2, height, width, generator=generator) * 6
    pan = panoptic(sem, center, offsets, threshold=0.3, nms_kernel=5, stuff_area=20).numpy()
    expected = reference_panoptic(sem, center, offsets, 0.3, 5, 20)
    assert (expected >= DIVISOR).any()  # some things and stuff were found
    assert np.array_equal(pan, expected)


def test_instance_predictions_scores_and_boxes():
    pan = torch.full((10, 12), STUFF * DIVISOR)
    pan[2:5, 3:9] = THING * DIVISOR + 1
    pan[6:10, 0:2] = THING * DIVISOR + 2
    pan[0, 0] = -1
    # Logits whose softmax gives THING the probabilities p (the 3 other classes share 1 - p).
    p = torch.full((10, 12), 0.1)
    p[2:5, 3:9] = torch.linspace(0.2, 0.8, 18).reshape(3, 6)
    p[6:10, 0:2] = 0.5
    logits = ((1 - p) / 3).log().expand(4, 10, 12).clone()
    logits[THING] = p.log()
    center = torch.zeros(1, 10, 12)
    center[0, 3, 5] = 0.9  # instance 1: mean position (3, 5.5) -> (3, 5)
    center[0, 7, 0] = 0.4  # instance 2: mean position (7.5, 0.5) -> (7, 0)
    result = get_instance_predictions(pan, logits, center, THINGS, DIVISOR)
    assert result.image_size == (10, 12) and len(result) == 2
    assert result.pred_classes.tolist() == [THING, THING]
    assert result.scores.tolist() == pytest.approx([0.5 * 0.9, 0.5 * 0.4])
    assert result.pred_boxes.tensor.tolist() == [[3, 2, 9, 5], [0, 6, 2, 10]]
    assert result.pred_masks.shape == (2, 10, 12)
    assert torch.equal(result.pred_masks[0], pan == THING * DIVISOR + 1)
    empty = get_instance_predictions(
        torch.full((4, 4), -1), logits[:, :4, :4], center[:, :4, :4], THINGS, DIVISOR
    )
    assert len(empty) == 0 and empty.pred_masks.shape == (0, 4, 4)


def test_bad_shapes_are_reported():
    with pytest.raises(ValueError, match="offsets"):
        get_panoptic_segmentation(
            torch.zeros(1, 4, 4, dtype=torch.long),
            torch.zeros(1, 4, 4),
            torch.zeros(4, 4),
            THINGS,
            DIVISOR,
            0,
            -1,
        )
