"""Tests of segtron.data.transforms: alignment of every kind of target, sizes, crops and pads."""

from __future__ import annotations

import numpy as np
import pytest

from segtron.data import detection_utils as utils
from segtron.data import transforms as T
from segtron.structures import BoxMode, polygons_to_bitmask

H, W = 40, 60
RECT = (10, 8, 30, 20)  # x0, y0, x1, y1 of the object, in pixel-edge coordinates
CLASS = 3


def _scene() -> tuple[np.ndarray, np.ndarray, dict]:
    """An image and label map holding a filled rectangle, and its annotation."""
    x0, y0, x1, y1 = RECT
    image = np.zeros((H, W, 3), dtype=np.uint8)
    image[y0:y1, x0:x1] = 200
    sem_seg = np.zeros((H, W), dtype=np.uint8)
    sem_seg[y0:y1, x0:x1] = CLASS
    anno = {
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": CLASS,
        "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
    }
    return image, sem_seg, anno


def _extent(mask: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) in pixel-edge coordinates of the True pixels."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("vertical", [False, True])
def test_augmentations_keep_targets_aligned(seed: int, vertical: bool) -> None:
    np.random.seed(seed)
    image, sem_seg, anno = _scene()
    augs = [
        T.RandomFlip(prob=0.5, horizontal=not vertical, vertical=vertical),
        T.ResizeShortestEdge((30, 50), max_size=100, sample_style="range"),
        T.RandomCrop("relative_range", (0.7, 0.7)),
    ]
    box = BoxMode.convert(np.array([anno["bbox"]], dtype=np.float64), anno["bbox_mode"], 0)
    aug_input = T.AugInput(image, boxes=box, sem_seg=sem_seg)
    tfms = T.AugmentationList(augs)(aug_input)
    out_h, out_w = aug_input.image.shape[:2]
    assert aug_input.sem_seg.shape == (out_h, out_w)

    anno = utils.transform_instance_annotations(anno, tfms, (out_h, out_w))
    image_box = _extent(aug_input.image[:, :, 0] > 100)
    label_box = _extent(aug_input.sem_seg == CLASS)
    poly_box = _extent(polygons_to_bitmask(anno["segmentation"], out_h, out_w))
    # AugInput boxes are not clipped (as in Detectron2); annotation boxes are.
    aug_box = np.clip(aug_input.boxes[0], 0, [out_w, out_h, out_w, out_h])
    for other in (label_box, poly_box, anno["bbox"], aug_box):
        np.testing.assert_allclose(other, image_box, atol=1.0)
    # The label map is resized with nearest interpolation: no new labels appear.
    assert set(np.unique(aug_input.sem_seg)) <= {0, CLASS}


def test_hflip_moves_object_to_mirror_position() -> None:
    image, sem_seg, anno = _scene()
    aug_input = T.AugInput(image, sem_seg=sem_seg)
    tfms = T.AugmentationList([T.RandomFlip(prob=1.0)])(aug_input)
    assert isinstance(tfms[0], T.HFlipTransform)
    x0, y0, x1, y1 = RECT
    np.testing.assert_array_equal(_extent(aug_input.sem_seg == CLASS), [W - x1, y0, W - x0, y1])
    anno = utils.transform_instance_annotations(anno, tfms, (H, W))
    np.testing.assert_allclose(anno["bbox"], [W - x1, y0, W - x0, y1])


@pytest.mark.parametrize(
    ("h", "w", "short", "max_size", "expected"),
    [
        (3, 5, 4, 1000, (4, 7)),  # 5 * 4 / 3 = 6.67 rounds up
        (5, 3, 4, 1000, (7, 4)),
        (7, 7, 10, 1000, (10, 10)),
        (101, 51, 100, 150, (150, 76)),  # long edge capped: 100 * 150 / 198.04 = 75.7
        (480, 640, 800, 1333, (800, 1067)),
        (100, 1000, 800, 1333, (133, 1333)),
    ],
)
def test_resize_shortest_edge_output_shape(h, w, short, max_size, expected) -> None:
    assert T.ResizeShortestEdge.get_output_shape(h, w, short, max_size) == expected
    aug = T.ResizeShortestEdge(short, max_size=max_size)
    out = T.AugInput(np.zeros((h, w, 3), dtype=np.uint8))
    aug(out)
    assert out.image.shape == (*expected, 3)


def test_resize_shortest_edge_sampling() -> None:
    np.random.seed(0)
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    choice = T.ResizeShortestEdge((8, 12), sample_style="choice")
    assert {choice.get_transform(image).new_h for _ in range(50)} == {8, 12}
    ranged = T.ResizeShortestEdge((8, 10), sample_style="range")
    assert {ranged.get_transform(image).new_h for _ in range(80)} == {8, 9, 10}
    assert isinstance(T.ResizeShortestEdge(0).get_transform(image), T.NoOpTransform)
    with pytest.raises(ValueError, match="two values"):
        T.ResizeShortestEdge((1, 2, 3), sample_style="range")


def test_resize_transform_float_image_and_inverse() -> None:
    tfm = T.ResizeTransform(4, 6, 8, 12)
    image = np.random.rand(4, 6, 2).astype(np.float32)
    out = tfm.apply_image(image)
    assert out.shape == (8, 12, 2) and out.dtype == np.float32
    coords = np.array([[6.0, 4.0]])
    np.testing.assert_allclose(tfm.inverse().apply_coords(tfm.apply_coords(coords)), coords)
    labels = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    up = T.ResizeTransform(2, 2, 4, 4).apply_segmentation(labels)
    np.testing.assert_array_equal(up, np.kron(labels, np.ones((2, 2), dtype=np.uint8)))


def test_fixed_size_crop_pads_label_map_with_255() -> None:
    image = np.full((10, 12, 3), 7, dtype=np.uint8)
    sem_seg = np.ones((10, 12), dtype=np.uint8)
    aug_input = T.AugInput(image, sem_seg=sem_seg)
    T.FixedSizeCrop((16, 16))(aug_input)
    assert aug_input.image.shape == (16, 16, 3) and aug_input.sem_seg.shape == (16, 16)
    assert (aug_input.sem_seg[:10, :12] == 1).all()
    assert (aug_input.sem_seg[10:, :] == 255).all() and (aug_input.sem_seg[:, 12:] == 255).all()
    assert (aug_input.image[:10, :12] == 7).all() and (aug_input.image[10:] == 128).all()

    big = T.AugInput(np.zeros((30, 20, 3), dtype=np.uint8), sem_seg=np.zeros((30, 20), np.uint8))
    T.FixedSizeCrop((16, 16))(big)
    assert big.image.shape == (16, 16, 3) and not (big.sem_seg == 255).any()


def test_random_crop_sizes() -> None:
    np.random.seed(1)
    assert T.RandomCrop("relative", (0.5, 0.25)).get_crop_size((40, 60)) == (20, 15)
    assert T.RandomCrop("absolute", (50, 10)).get_crop_size((40, 60)) == (40, 10)
    for _ in range(20):
        ch, cw = T.RandomCrop("absolute_range", (10, 30)).get_crop_size((20, 60))
        assert 10 <= ch <= 20 and 10 <= cw <= 30
        ch, cw = T.RandomCrop("relative_range", (0.5, 0.5)).get_crop_size((40, 60))
        assert 20 <= ch <= 40 and 30 <= cw <= 60
    with pytest.raises(ValueError, match="crop_type"):
        T.RandomCrop("bogus", (1, 1))


@pytest.mark.parametrize("seed", range(10))
def test_category_area_constraint(seed: int) -> None:
    np.random.seed(seed)
    sem_seg = np.zeros((40, 40), dtype=np.uint8)
    sem_seg[:, 20:] = 1
    sem_seg[:5] = 255  # ignored: must not count as a category
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    aug = T.RandomCrop_CategoryAreaConstraint(
        "absolute", (20, 20), single_category_max_area=0.75, ignored_category=255
    )
    aug_input = T.AugInput(image, sem_seg=sem_seg)
    aug(aug_input)
    labels, counts = np.unique(aug_input.sem_seg, return_counts=True)
    counts = counts[labels != 255]
    assert aug_input.sem_seg.shape == (20, 20)
    assert len(counts) == 2 and counts.max() < 0.75 * counts.sum()


def test_random_apply_and_photometric() -> None:
    np.random.seed(0)
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    assert isinstance(
        T.RandomApply(T.RandomFlip(prob=1.0), prob=0.0)(T.AugInput(image)), T.NoOpTransform
    )
    flipped = T.RandomApply(T.HFlipTransform(4), prob=1.0)(T.AugInput(image))
    assert isinstance(flipped, T.HFlipTransform)
    out, _ = T.apply_augmentations([T.RandomBrightness(0.5, 0.5)], image.astype(np.float32))
    np.testing.assert_allclose(out, 50.0)
    gray = np.full((4, 4, 3), 80, dtype=np.float32)
    out, _ = T.apply_augmentations([T.RandomContrast(0.0, 0.0), T.RandomSaturation(2, 2)], gray)
    np.testing.assert_allclose(out, 80.0, rtol=1e-5)
    out, _ = T.apply_augmentations([T.RandomLighting(0.1)], gray)
    assert out.shape == gray.shape
    with pytest.raises(ValueError):
        T.RandomApply(T.RandomFlip(), prob=1.5)


def test_repr_lists_arguments() -> None:
    text = repr(T.ResizeShortestEdge((640, 800), 1333, "choice"))
    assert text.startswith("ResizeShortestEdge(") and "max_size=1333" in text
