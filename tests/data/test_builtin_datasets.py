"""Tests of the builtin dataset registrations and metadata (COCO, ADE20K, Pascal VOC)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from segtron.data import DatasetCatalog, MetadataCatalog
from segtron.data.datasets import builtin, load_voc_sem_seg, register_sem_seg
from segtron.data.datasets.builtin_meta import (
    ADE20K_SEM_SEG_CATEGORIES,
    COCO_CATEGORIES,
    VOC_SEM_SEG_COLORS,
    get_builtin_metadata,
)
from segtron.utils.panoptic import id2rgb

COCO_NAMES = [
    "coco_2017_train",
    "coco_2017_val",
    "coco_2017_test",
    "coco_2017_test-dev",
    "coco_2017_val_100",
] + [
    f"coco_2017_{split}_panoptic{suffix}"
    for split in ("train", "val")
    for suffix in ("", "_separated", "_stuffonly", "_with_sem_seg")
]
OTHER_NAMES = [
    "ade20k_sem_seg_train",
    "ade20k_sem_seg_val",
    "voc_2012_sem_seg_train",
    "voc_2012_sem_seg_val",
    "voc_2012_sem_seg_train_aug",
]
BUILTIN_NAMES = COCO_NAMES + OTHER_NAMES


@pytest.fixture
def fake_root(tmp_path):
    """Register the builtin names under ``tmp_path`` for one test, then restore the originals."""
    saved = {name: (DatasetCatalog.pop(name), MetadataCatalog.pop(name)) for name in BUILTIN_NAMES}
    root = str(tmp_path)
    try:
        builtin.register_all_coco(root)
        builtin.register_all_ade20k(root)
        builtin.register_all_voc_sem_seg(root)
        yield tmp_path
    finally:
        for name, (loader, metadata) in saved.items():
            DatasetCatalog.pop(name, None)
            MetadataCatalog.pop(name, None)
            DatasetCatalog[name] = loader
            MetadataCatalog[name] = metadata


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)


def test_builtin_names_and_evaluator_types():
    registered = set(DatasetCatalog.list())
    assert set(BUILTIN_NAMES) <= registered
    expected = {
        "coco_2017_val": "coco",
        "coco_2017_val_panoptic": "coco_panoptic_seg",
        "coco_2017_val_panoptic_separated": "coco_panoptic_seg",
        "coco_2017_val_panoptic_with_sem_seg": "coco_panoptic_seg",
        "coco_2017_val_panoptic_stuffonly": "sem_seg",
        "ade20k_sem_seg_val": "sem_seg",
        "voc_2012_sem_seg_train_aug": "sem_seg",
    }
    for name, evaluator_type in expected.items():
        assert MetadataCatalog.get(name).evaluator_type == evaluator_type, name
    assert MetadataCatalog.get("coco_2017_val_panoptic").label_divisor == 1000
    assert MetadataCatalog.get("ade20k_sem_seg_val").ignore_label == 255
    assert MetadataCatalog.get("voc_2012_sem_seg_val").ignore_label == 255
    root = builtin._root()
    assert MetadataCatalog.get("coco_2017_train").json_file == os.path.join(
        root, "coco/annotations/instances_train2017.json"
    )
    assert MetadataCatalog.get("ade20k_sem_seg_train").sem_seg_root == os.path.join(
        root, "ADEChallengeData2016", "annotations_detectron2", "training"
    )


def test_registration_touches_no_file(fake_root, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"registration touched the file system: {args}")

    for name in BUILTIN_NAMES:
        DatasetCatalog.pop(name)
        MetadataCatalog.pop(name)
    missing = str(fake_root / "missing")
    with monkeypatch.context() as patch:
        for module, attr in ((os, "stat"), (os, "listdir"), (os, "scandir"), (os, "makedirs")):
            patch.setattr(module, attr, forbidden)
        patch.setattr("builtins.open", forbidden)
        builtin.register_all_coco(missing)
        builtin.register_all_ade20k(missing)
        builtin.register_all_voc_sem_seg(missing)
    assert set(BUILTIN_NAMES) <= set(DatasetCatalog.list())
    assert MetadataCatalog.get("voc_2012_sem_seg_val").image_root == os.path.join(
        missing, "VOC2012", "JPEGImages"
    )
    assert not os.path.exists(missing)


def test_coco_metadata_counts_and_id_maps():
    assert len(COCO_CATEGORIES) == 133
    instances = get_builtin_metadata("coco")
    thing_ids = [c["id"] for c in COCO_CATEGORIES if c["isthing"]]
    assert len(instances["thing_classes"]) == 80 and instances["thing_classes"][0] == "person"
    assert instances["thing_dataset_id_to_contiguous_id"] == {i: k for k, i in enumerate(thing_ids)}
    assert instances["thing_dataset_id_to_contiguous_id"][90] == 79  # toothbrush

    standard = get_builtin_metadata("coco_panoptic_standard")
    things = standard["thing_dataset_id_to_contiguous_id"]
    stuff = standard["stuff_dataset_id_to_contiguous_id"]
    assert (len(things), len(stuff)) == (80, 53)
    assert not set(things) & set(stuff)
    for index, cat in enumerate(COCO_CATEGORIES):
        assert (things if cat["isthing"] else stuff)[cat["id"]] == index
        assert standard["stuff_classes"][index] == cat["name"]
        assert standard["thing_colors"][index] == cat["color"]
    assert standard["thing_classes"] == standard["stuff_classes"]

    separated = get_builtin_metadata("coco_panoptic_separated")
    assert len(separated["stuff_classes"]) == 54 and separated["stuff_classes"][0] == "things"
    assert separated["stuff_dataset_id_to_contiguous_id"][0] == 0
    assert sorted(separated["stuff_dataset_id_to_contiguous_id"].values()) == list(range(54))
    assert separated["stuff_dataset_id_to_contiguous_id"][92] == 1  # banner, the first stuff
    assert separated["stuff_classes"][-1] == "rug"  # "rug-merged" without its suffix
    assert "wall" in separated["stuff_classes"]  # "wall-other-merged"
    assert separated["thing_classes"] == instances["thing_classes"]

    # The metadata is a fresh copy each time.
    standard["thing_colors"][0][0] = -1
    assert get_builtin_metadata("coco_panoptic_standard")["thing_colors"][0][0] == 220


def test_ade20k_and_voc_metadata():
    ade = get_builtin_metadata("ade20k_sem_seg")
    assert len(ade["stuff_classes"]) == len(ade["stuff_colors"]) == 150
    assert ade["stuff_classes"][0] == "wall" and ade["stuff_classes"][-1] == "flag"
    assert ade["stuff_classes"][8] == "window"
    assert MetadataCatalog.get("ade20k_sem_seg_val").stuff_classes == ADE20K_SEM_SEG_CATEGORIES

    voc = get_builtin_metadata("voc_sem_seg")
    assert len(voc["stuff_classes"]) == 21 and voc["stuff_classes"][0] == "background"
    assert voc["stuff_classes"][15] == "person"

    def palette(label):  # VOC's palette: the bits of the label spread over R, G and B
        rgb = [0, 0, 0]
        for shift in range(8):
            for channel in range(3):
                rgb[channel] |= ((label >> (3 * shift + channel)) & 1) << (7 - shift)
        return rgb

    assert VOC_SEM_SEG_COLORS == [palette(i) for i in range(21)]
    with pytest.raises(KeyError, match="coco_panoptic_standard"):
        get_builtin_metadata("cityscape")


def test_missing_folder_error_names_path_variable_and_readme(fake_root):
    with pytest.raises(FileNotFoundError) as err:
        DatasetCatalog.get("ade20k_sem_seg_val")
    message = str(err.value)
    assert os.path.join(str(fake_root), "ADEChallengeData2016", "images", "validation") in message
    assert "SEGTRON_DATASETS" in message and "datasets/README.md" in message

    (fake_root / "ADEChallengeData2016" / "images" / "validation").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="prepare_ade20k_sem_seg.py"):
        DatasetCatalog.get("ade20k_sem_seg_val")
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
        (fake_root / "coco" / "val2017").mkdir(parents=True)
        DatasetCatalog.get("coco_2017_val")


def test_ade20k_loads_from_layout(fake_root):
    ade = fake_root / "ADEChallengeData2016"
    for stem in ("ADE_train_00000002", "ADE_train_00000001"):
        (ade / "images" / "training").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (5, 3)).save(ade / "images" / "training" / f"{stem}.jpg")
        _save(ade / "annotations_detectron2" / "training" / f"{stem}.png", np.zeros((3, 5)))
    dicts = DatasetCatalog.get("ade20k_sem_seg_train")
    assert [d["image_id"] for d in dicts] == ["ADE_train_00000001", "ADE_train_00000002"]
    assert dicts[0]["file_name"] == str(ade / "images/training/ADE_train_00000001.jpg")
    assert dicts[0]["sem_seg_file_name"] == str(
        ade / "annotations_detectron2/training/ADE_train_00000001.png"
    )
    assert (dicts[0]["height"], dicts[0]["width"]) == (3, 5)


def _voc_layout(root):
    voc = root / "VOC2012"
    for stem, value in (("2007_000001", 1), ("2007_000002", 15), ("2008_000003", 20)):
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 2)).save(voc / "JPEGImages" / f"{stem}.jpg")
        _save(voc / "SegmentationClassAug" / f"{stem}.png", [[0, value, 255, 0]] * 2)
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000001\n")
    (lists / "val.txt").write_text("2008_000003\n\n")
    (lists / "train_aug.txt").write_text("2007_000001\n2007_000002\n")
    return voc


def test_voc_splits_load_from_layout(fake_root):
    voc = _voc_layout(fake_root)
    train_aug = DatasetCatalog.get("voc_2012_sem_seg_train_aug")
    assert [d["image_id"] for d in train_aug] == ["2007_000001", "2007_000002"]
    assert train_aug[1]["file_name"] == str(voc / "JPEGImages" / "2007_000002.jpg")
    assert train_aug[1]["sem_seg_file_name"] == str(voc / "SegmentationClassAug/2007_000002.png")
    assert (train_aug[1]["height"], train_aug[1]["width"]) == (2, 4)
    assert [d["image_id"] for d in DatasetCatalog.get("voc_2012_sem_seg_val")] == ["2008_000003"]
    assert [d["image_id"] for d in DatasetCatalog.get("voc_2012_sem_seg_train")] == ["2007_000001"]
    meta = MetadataCatalog.get("voc_2012_sem_seg_train_aug")
    assert meta.stuff_classes[0] == "background" and meta.split == "train_aug"


def test_voc_errors_name_the_file(fake_root):
    voc = _voc_layout(fake_root)
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train_aug.txt.*prepare_pascal_voc_sbd.py"):
        DatasetCatalog.get("voc_2012_sem_seg_train_aug")
    with pytest.raises(FileNotFoundError, match="train_aug.txt"):
        load_voc_sem_seg(voc, "train_aug")

    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000001\n2009_000009\n")
    with pytest.raises(FileNotFoundError, match=r"1 label files .*2009_000009\.png"):
        DatasetCatalog.get("voc_2012_sem_seg_val")

    palette = Image.fromarray(np.zeros((2, 4), dtype=np.uint8), mode="L").convert("P")
    palette.save(voc / "SegmentationClassAug" / "2007_000001.png")
    with pytest.raises(ValueError, match=r"2007_000001\.png is a 'P' image"):
        DatasetCatalog.get("voc_2012_sem_seg_train")


def _coco_panoptic_layout(root):
    coco = root / "coco"
    (coco / "val2017").mkdir(parents=True)
    Image.new("RGB", (6, 4)).save(coco / "val2017" / "000000000139.jpg")
    ids = np.array([[1, 1, 2, 2, 0, 0]] * 4)
    _save(coco / "panoptic_val2017" / "000000000139.png", id2rgb(ids))
    segments = [
        {"id": 1, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 2, 4], "area": 8},
        {"id": 2, "category_id": 200, "iscrowd": 0, "bbox": [2, 0, 2, 4], "area": 8},
    ]
    image = {"id": 139, "file_name": "000000000139.jpg", "height": 4, "width": 6}
    panoptic = {
        "images": [image],
        "annotations": [
            {"image_id": 139, "file_name": "000000000139.png", "segments_info": segments}
        ],
        "categories": COCO_CATEGORIES,
    }
    things = [c for c in COCO_CATEGORIES if c["isthing"]]
    person = {"id": 7, "image_id": 139, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 2, 4]}
    person["segmentation"] = [[0, 0, 2, 0, 2, 4, 0, 4]]
    instances = {"images": [image], "annotations": [person], "categories": things}
    (coco / "annotations").mkdir()
    (coco / "annotations" / "panoptic_val2017.json").write_text(json.dumps(panoptic))
    (coco / "annotations" / "instances_val2017.json").write_text(json.dumps(instances))
    return coco


def test_coco_panoptic_with_sem_seg_loads_from_layout(fake_root):
    coco = _coco_panoptic_layout(fake_root)
    with pytest.raises(FileNotFoundError, match="prepare_panoptic_fpn.py --with-sem-seg"):
        DatasetCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    _save(coco / "panoptic_semseg_val2017" / "000000000139.png", np.zeros((4, 6)))

    (record,) = DatasetCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    assert record["sem_seg_file_name"] == str(coco / "panoptic_semseg_val2017/000000000139.png")
    assert record["pan_seg_file_name"] == str(coco / "panoptic_val2017/000000000139.png")
    assert record["file_name"] == str(coco / "val2017/000000000139.jpg")
    categories = [(s["category_id"], s["isthing"]) for s in record["segments_info"]]
    assert categories == [(0, True), (132, False)]
    meta = MetadataCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    assert meta.sem_seg_root == str(coco / "panoptic_semseg_val2017")
    assert meta.label_divisor == 1000 and len(meta.stuff_classes) == 133
    assert "sem_seg_file_name" not in DatasetCatalog.get("coco_2017_val_panoptic")[0]


def test_coco_panoptic_separated_loads_from_layout(fake_root):
    coco = _coco_panoptic_layout(fake_root)
    _save(coco / "panoptic_stuff_val2017" / "000000000139.png", np.zeros((4, 6)))
    (record,) = DatasetCatalog.get("coco_2017_val_panoptic_separated")
    assert record["sem_seg_file_name"] == str(coco / "panoptic_stuff_val2017/000000000139.png")
    assert [a["category_id"] for a in record["annotations"]] == [0]
    (instance,) = DatasetCatalog.get("coco_2017_val")
    assert instance["image_id"] == 139


def test_register_sem_seg_metadata(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (3, 2)).save(tmp_path / "img" / "7.png")
    _save(tmp_path / "gt" / "7.png", np.ones((2, 3)))
    try:
        register_sem_seg(
            "test_builtin_sem_seg",
            tmp_path / "img",
            tmp_path / "gt",
            {"stuff_classes": ["a", "b"], "ignore_label": 0},
            image_ext="png",
        )
        meta = MetadataCatalog.get("test_builtin_sem_seg")
        assert (meta.evaluator_type, meta.ignore_label) == ("sem_seg", 0)
        assert meta.stuff_classes == ["a", "b"] and meta.sem_seg_root == str(tmp_path / "gt")
        (record,) = DatasetCatalog.get("test_builtin_sem_seg")
        assert record["image_id"] == 7 and record["file_name"] == str(tmp_path / "img" / "7.png")
    finally:
        DatasetCatalog.pop("test_builtin_sem_seg", None)
        MetadataCatalog.pop("test_builtin_sem_seg", None)
