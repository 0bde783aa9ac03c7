"""Tests of segtron.data.detection_utils: image reading, annotation transforms, instances."""

from __future__ import annotations

import errno
import pickle

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from segtron.config import get_cfg
from segtron.data import MetadataCatalog
from segtron.data import detection_utils as utils
from segtron.data import transforms as T
from segtron.structures import BitMasks, BoxMode, PolygonMasks


@pytest.fixture
def rgb_png(tmp_path):
    pixels = np.zeros((4, 6, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 10, 120, 250
    path = tmp_path / "img.png"
    Image.fromarray(pixels).save(path)
    return str(path), pixels


def test_read_image_formats(rgb_png) -> None:
    path, pixels = rgb_png
    np.testing.assert_array_equal(utils.read_image(path, "RGB"), pixels)
    np.testing.assert_array_equal(utils.read_image(path, "BGR"), pixels[:, :, ::-1])
    gray = utils.read_image(path, "L")
    assert gray.shape == (4, 6, 1) and gray.dtype == np.uint8
    yuv = utils.read_image(path, "YUV-BT.601")
    expected_y = (0.299 * 10 + 0.587 * 120 + 0.114 * 250) / 255
    np.testing.assert_allclose(yuv[..., 0], expected_y, rtol=1e-6)
    rgb_back = utils.convert_image_to_rgb(utils.read_image(path, "BGR"), "BGR")
    np.testing.assert_array_equal(rgb_back, pixels)


def test_read_image_applies_exif_orientation(tmp_path) -> None:
    path = tmp_path / "rot.jpg"
    image = Image.fromarray(np.zeros((10, 20, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[274] = 6  # "rotate 90 clockwise to display"
    image.save(path, exif=exif)
    assert utils.read_image(str(path), "RGB").shape == (20, 10, 3)


def test_read_image_missing_file_names_it(tmp_path) -> None:
    path = str(tmp_path / "nope.jpg")
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        utils.read_image(path, "BGR")


def test_read_image_corrupt_and_truncated_name_the_file(tmp_path) -> None:
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all")
    with pytest.raises(utils.ImageReadError, match="garbage.jpg"):
        utils.read_image(str(garbage), "BGR")

    good = tmp_path / "full.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good, quality=95)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated.jpg") as info:
        utils.read_image(str(truncated), "BGR")
    assert isinstance(info.value, utils.ImageReadError)


def test_image_read_error_records_the_file(tmp_path) -> None:
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all")
    with pytest.raises(utils.ImageReadError) as info:
        utils.read_image(str(garbage), "BGR")
    error = info.value
    assert error.filename == str(garbage) and error.errno == errno.EIO
    assert str(error) == f"Cannot read image '{garbage}': {error.__cause__}"
    # As a DataLoader worker would send it back.
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is utils.ImageReadError
    assert (restored.filename, str(restored)) == (error.filename, str(error))


def test_check_image_size() -> None:
    image = np.zeros((5, 7, 3), dtype=np.uint8)
    record = {"file_name": "a.png"}
    utils.check_image_size(record, image)
    assert record["width"] == 7 and record["height"] == 5
    with pytest.raises(utils.SizeMismatchError, match="b.png"):
        utils.check_image_size({"file_name": "b.png", "width": 7, "height": 6}, image)


def test_transform_rle_annotation_with_flip() -> None:
    mask = np.zeros((6, 8), dtype=np.uint8, order="F")
    mask[1:3, 0:2] = 1
    rle = mask_util.encode(mask)
    anno = {"bbox": [0, 1, 2, 2], "bbox_mode": BoxMode.XYWH_ABS, "segmentation": rle}
    out = utils.transform_instance_annotations(anno, [T.HFlipTransform(8)], (6, 8))
    np.testing.assert_array_equal(out["segmentation"], mask[:, ::-1])
    np.testing.assert_allclose(out["bbox"], [6, 1, 8, 3])
    assert out["bbox_mode"] == BoxMode.XYXY_ABS


def test_transform_box_is_clipped() -> None:
    anno = {"bbox": [-5, -5, 20, 20], "bbox_mode": BoxMode.XYXY_ABS}
    out = utils.transform_instance_annotations(anno, T.TransformList([]), (10, 12))
    np.testing.assert_allclose(out["bbox"], [0, 0, 12, 10])


def test_keypoints_flip_and_visibility() -> None:
    anno = {
        "bbox": [0, 0, 4, 4],
        "bbox_mode": BoxMode.XYXY_ABS,
        "keypoints": [1.0, 1.0, 2, 3.0, 2.0, 2, 50.0, 1.0, 2],
    }
    out = utils.transform_instance_annotations(
        anno, [T.HFlipTransform(10)], (10, 10), keypoint_hflip_indices=[1, 0, 2]
    )
    np.testing.assert_allclose(out["keypoints"][0], [7.0, 2.0, 2])
    np.testing.assert_allclose(out["keypoints"][1], [9.0, 1.0, 2])
    np.testing.assert_allclose(out["keypoints"][2], [0, 0, 0])  # left the image
    with pytest.raises(ValueError, match="keypoint_hflip_indices"):
        utils.transform_keypoint_annotations(
            [1, 1, 2], T.TransformList([T.HFlipTransform(5)]), (5, 5)
        )


def _annos() -> list[dict]:
    return [
        {
            "bbox": [1, 1, 4, 4],
            "bbox_mode": BoxMode.XYXY_ABS,
            "category_id": 2,
            "segmentation": [[1, 1, 4, 1, 4, 4, 1, 4]],
        },
        {
            "bbox": [5, 5, 5, 8],  # zero width: filtered out
            "bbox_mode": BoxMode.XYXY_ABS,
            "category_id": 1,
            "segmentation": [[5, 5, 6, 5, 6, 6]],
        },
    ]


def test_annotations_to_instances_polygon_and_bitmask() -> None:
    polys = utils.annotations_to_instances(_annos(), (10, 10))
    assert isinstance(polys.gt_masks, PolygonMasks)
    assert polys.gt_classes.tolist() == [2, 1] and polys.gt_classes.dtype == torch.int64
    bits = utils.annotations_to_instances(_annos(), (10, 10), mask_format="bitmask")
    assert isinstance(bits.gt_masks, BitMasks) and bits.gt_masks.tensor.shape == (2, 10, 10)
    assert bits.gt_masks.tensor[0, 1:4, 1:4].all() and bits.gt_masks.tensor[0].sum() == 9

    kept = utils.filter_empty_instances(bits)
    assert len(kept) == 1 and kept.gt_classes.tolist() == [2]
    _, keep = utils.filter_empty_instances(polys, return_mask=True)
    assert keep.tolist() == [True, False]

    empty = utils.annotations_to_instances([], (10, 10))
    assert len(empty) == 0 and empty.gt_boxes.tensor.shape == (0, 4)


def test_rle_needs_bitmask_format() -> None:
    rle = mask_util.encode(np.ones((4, 4), dtype=np.uint8, order="F"))
    anno = {"bbox": [0, 0, 4, 4], "bbox_mode": 0, "category_id": 0, "segmentation": rle}
    with pytest.raises(ValueError, match="bitmask"):
        utils.annotations_to_instances([anno], (4, 4), mask_format="polygon")
    inst = utils.annotations_to_instances([anno], (4, 4), mask_format="bitmask")
    assert inst.gt_masks.tensor.all()


def test_build_augmentation() -> None:
    cfg = get_cfg()
    train = utils.build_augmentation(cfg, True)
    assert [type(a) for a in train] == [T.ResizeShortestEdge, T.RandomFlip]
    cfg.INPUT.RANDOM_FLIP = "none"
    test = utils.build_augmentation(cfg, False)
    assert len(test) == 1 and test[0].short_edge_length == (800, 800)


def test_check_metadata_consistency() -> None:
    names = ["_segtron_test_meta_a", "_segtron_test_meta_b"]
    try:
        MetadataCatalog.get(names[0]).thing_classes = ["x"]
        MetadataCatalog.get(names[1]).thing_classes = ["y"]
        with pytest.raises(ValueError, match="thing_classes"):
            utils.check_metadata_consistency("thing_classes", names)
        utils.check_metadata_consistency("thing_classes", names[:1])
    finally:
        for name in names:
            MetadataCatalog.remove(name)
