"""Tests of segtron.data.DatasetMapper on a tiny image written to disk."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from segtron.config import get_cfg
from segtron.data import DatasetMapper
from segtron.data import transforms as T
from segtron.structures import BitMasks, BoxMode, PolygonMasks

H, W = 32, 48


@pytest.fixture
def record(tmp_path) -> dict:
    image = np.zeros((H, W, 3), dtype=np.uint8)
    image[..., 0] = 255  # pure red in RGB
    image[4:12, 2:10, 1] = 200  # a green square marks the object
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[4:12, 2:10] = 5
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(labels).save(tmp_path / "seg.png")
    return {
        "file_name": str(tmp_path / "img.png"),
        "sem_seg_file_name": str(tmp_path / "seg.png"),
        "height": H,
        "width": W,
        "image_id": 1,
        "annotations": [
            {
                "bbox": [2, 4, 8, 8],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 5,
                "segmentation": [[2, 4, 10, 4, 10, 12, 2, 12]],
                "iscrowd": 0,
            },
            {
                "bbox": [20, 20, 5, 5],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 1,
                "segmentation": [[20, 20, 25, 20, 25, 25, 20, 25]],
                "iscrowd": 1,
            },
        ],
    }


def test_train_mapping_flips_everything_together(record) -> None:
    original = copy.deepcopy(record)
    mapper = DatasetMapper(
        True, augmentations=[T.RandomFlip(prob=1.0)], image_format="BGR", use_instance_mask=True
    )
    out = mapper(record)
    assert record == original  # the input dict is left untouched

    image = out["image"]
    assert image.dtype == torch.uint8 and image.shape == (3, H, W)
    assert (image[2] == 255).all() and (image[0] == 0).all()  # BGR: red is the last channel
    assert (image[1, 4:12, W - 10 : W - 2] == 200).all() and image[1].sum() == 200 * 64

    sem_seg = out["sem_seg"]
    assert sem_seg.dtype == torch.int64 and sem_seg.shape == (H, W)
    assert (sem_seg[4:12, W - 10 : W - 2] == 5).all() and (sem_seg == 5).sum() == 64

    inst = out["instances"]
    assert len(inst) == 1  # the crowd annotation is dropped
    assert inst.gt_classes.tolist() == [5]
    torch.testing.assert_close(inst.gt_boxes.tensor, torch.tensor([[W - 10.0, 4, W - 2, 12]]))
    assert isinstance(inst.gt_masks, PolygonMasks)
    assert "annotations" not in out and "sem_seg_file_name" not in out


def test_bitmask_format_and_recomputed_boxes(record) -> None:
    mapper = DatasetMapper(
        True,
        augmentations=[T.Resize((H * 2, W * 2))],
        image_format="RGB",
        use_instance_mask=True,
        instance_mask_format="bitmask",
        recompute_boxes=True,
    )
    out = mapper(record)
    inst = out["instances"]
    assert out["image"].shape == (3, H * 2, W * 2)
    assert isinstance(inst.gt_masks, BitMasks) and inst.gt_masks.tensor.shape == (1, 64, 96)
    torch.testing.assert_close(inst.gt_boxes.tensor, torch.tensor([[4.0, 8, 20, 24]]))
    with pytest.raises(ValueError, match="use_instance_mask"):
        DatasetMapper(True, augmentations=[], image_format="RGB", recompute_boxes=True)


def test_masks_dropped_without_use_instance_mask(record) -> None:
    out = DatasetMapper(True, augmentations=[], image_format="RGB")(record)
    assert not out["instances"].has("gt_masks")


def test_test_mode_removes_annotations(record) -> None:
    out = DatasetMapper(False, augmentations=[], image_format="RGB")(record)
    assert "annotations" not in out and "instances" not in out
    assert out["sem_seg"].shape == (H, W)
    assert out["height"] == H and out["width"] == W


def test_from_config(record) -> None:
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (16,)
    cfg.INPUT.MAX_SIZE_TRAIN = 100
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.CROP.ENABLED = True
    cfg.MODEL.MASK_ON = True
    train = DatasetMapper(cfg, is_train=True)
    assert train.recompute_boxes and train.use_instance_mask
    assert isinstance(train.augmentations.augs[0], T.RandomCrop)
    out = train(record)
    assert min(out["image"].shape[1:]) == 16
    test_out = DatasetMapper(cfg, is_train=False)(record)
    assert test_out["image"].shape == (3, 64, 96)


def test_size_mismatch_names_file(record) -> None:
    record["height"] = H + 1
    mapper = DatasetMapper(False, augmentations=[], image_format="RGB")
    with pytest.raises(ValueError, match="img.png"):
        mapper(record)
