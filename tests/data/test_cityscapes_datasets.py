"""Tests of Cityscapes loading (instances, semantic, panoptic), registration and preparation."""

import importlib.util
import json
import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from segtron.data import DatasetCatalog, MetadataCatalog
from segtron.data.datasets.cityscapes import (
    CITYSCAPES_CATEGORIES,
    CITYSCAPES_LABELS,
    get_cityscapes_metadata,
    load_cityscapes_instances,
    load_cityscapes_semantic,
    register_all_cityscapes,
)
from segtron.data.datasets.cityscapes_panoptic import load_cityscapes_panoptic
from segtron.structures import BoxMode
from segtron.utils.panoptic import id2rgb

H, W = 32, 64
CITY = "testcity"
ID = {label.name: label.id for label in CITYSCAPES_LABELS}
TRAIN_ID = {label.id: label.trainId for label in CITYSCAPES_LABELS}
# contiguous ids of the instance datasets
PERSON, RIDER, CAR = 0, 1, 2


def _rect(x0, y0, x1, y1):
    """A Cityscapes polygon (integer vertices) and the pixel slices PIL would fill."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], (slice(y0, y1 + 1), slice(x0, x1 + 1))


# Objects of each image in drawing order: (label, rectangle, instance id or None, extra keys).
# Image 0: a pole (stuff) cuts the car in two, a license plate (id -1) is never drawn, a deleted
# car is ignored, a caravan is ignored in evaluation. Image 1: a truck hidden by a building.
SCENES = {
    "000000": [
        ("road", (0, 16, 63, 31), None, {}),
        ("caravan", (56, 0, 63, 3), 29000, {}),
        ("car", (4, 10, 27, 25), 26000, {}),
        ("person", (30, 4, 39, 27), 24000, {}),
        ("pole", (20, 0, 23, 31), None, {}),
        ("persongroup", (44, 8, 55, 20), 24, {}),
        ("license plate", (8, 20, 12, 22), None, {}),
        ("car", (0, 0, 63, 31), None, {"deleted": 1}),
    ],
    "000001": [
        ("sky", (0, 0, 63, 15), None, {}),
        ("rider", (10, 5, 19, 14), 25000, {}),
        ("truck", (2, 20, 8, 28), 27000, {}),
        ("building", (0, 18, 12, 31), None, {}),
        ("cargroup", (30, 20, 50, 30), 26, {}),
    ],
}


def _write_split(root: Path, split: str = "train") -> None:
    """A tiny Cityscapes split: images, polygons, instanceIds, labelTrainIds and panoptic."""
    image_dir = root / "leftImg8bit" / split / CITY
    gt_dir = root / "gtFine" / split / CITY
    pan_dir = root / "gtFine" / f"cityscapes_panoptic_{split}"
    for folder in (image_dir, gt_dir, pan_dir):
        folder.mkdir(parents=True)
    categories = [
        {"id": c["id"], "name": c["name"], "isthing": c["isthing"], "color": list(c["color"])}
        for c in CITYSCAPES_CATEGORIES
    ]
    pan_json = {"images": [], "annotations": [], "categories": categories}
    for frame, objects in SCENES.items():
        prefix = f"{CITY}_{frame}_000019"
        Image.new("RGB", (W, H)).save(image_dir / f"{prefix}_leftImg8bit.png")
        instance_ids = np.zeros((H, W), dtype=np.int64)
        json_objects = []
        for label, rect, instance_id, extra in objects:
            polygon, pixels = _rect(*rect)
            json_objects.append({"label": label, "polygon": polygon, **extra})
            if extra or ID[label.removesuffix("group")] < 0:
                continue
            instance_ids[pixels] = instance_id or ID[label.removesuffix("group")]
        polygons = {"imgHeight": H, "imgWidth": W, "objects": json_objects}
        (gt_dir / f"{prefix}_gtFine_polygons.json").write_text(json.dumps(polygons))
        Image.fromarray(instance_ids.astype(np.uint16)).save(
            gt_dir / f"{prefix}_gtFine_instanceIds.png"
        )
        label_ids = np.where(instance_ids >= 1000, instance_ids // 1000, instance_ids)
        train_ids = np.vectorize(TRAIN_ID.get)(label_ids)
        Image.fromarray(train_ids.astype(np.uint8)).save(
            gt_dir / f"{prefix}_gtFine_labelTrainIds.png"
        )
        # The panoptic form, as cityscapesscripts' createPanopticImgs writes it.
        panoptic = np.zeros((H, W), dtype=np.int64)
        segments = []
        for segment_id in np.unique(instance_ids).tolist():
            label_id = segment_id // 1000 if segment_id >= 1000 else segment_id
            label = next(lb for lb in CITYSCAPES_LABELS if lb.id == label_id)
            if label.ignoreInEval:
                continue
            mask = instance_ids == segment_id
            panoptic[mask] = segment_id
            iscrowd = int(label.hasInstances and segment_id < 1000)
            segments.append(
                {
                    "id": segment_id,
                    "category_id": label_id,
                    "iscrowd": iscrowd,
                    "area": int(mask.sum()),
                }
            )
        Image.fromarray(id2rgb(panoptic)).save(pan_dir / f"{prefix}_gtFine_panoptic.png")
        pan_json["images"].append(
            {"id": prefix, "file_name": f"{prefix}_leftImg8bit.png", "height": H, "width": W}
        )
        pan_json["annotations"].append(
            {
                "image_id": prefix,
                "file_name": f"{prefix}_gtFine_panoptic.png",
                "segments_info": segments,
            }
        )
    (root / "gtFine" / f"cityscapes_panoptic_{split}.json").write_text(json.dumps(pan_json))


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "cityscapes"
    _write_split(root)
    return root


def _dirs(root, split="train"):
    return str(root / "leftImg8bit" / split), str(root / "gtFine" / split)


def _mask_area(annotation):
    segm = annotation["segmentation"]
    rle = mask_util.merge(mask_util.frPyObjects(segm, H, W)) if isinstance(segm, list) else segm
    return float(mask_util.area(rle))


def test_label_table_and_metadata():
    assert len(CITYSCAPES_LABELS) == 35
    assert sorted(c["trainId"] for c in CITYSCAPES_CATEGORIES) == list(range(19))
    meta = get_cityscapes_metadata("instance_seg")
    assert meta == get_cityscapes_metadata("sem_seg")
    assert len(meta["stuff_classes"]) == len(meta["stuff_colors"]) == 19
    assert meta["thing_classes"] == [
        "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"
    ]  # fmt: skip
    assert meta["stuff_classes"][13] == "car" and meta["stuff_colors"][13] == [0, 0, 142]
    panoptic = get_cityscapes_metadata("panoptic")
    assert len(panoptic["thing_classes"]) == 19
    assert panoptic["thing_dataset_id_to_contiguous_id"][ID["car"]] == 13
    assert len(panoptic["thing_dataset_id_to_contiguous_id"]) == 8
    assert len(panoptic["stuff_dataset_id_to_contiguous_id"]) == 11
    assert panoptic["stuff_dataset_id_to_contiguous_id"][ID["road"]] == 0
    with pytest.raises(ValueError, match="panoptic"):
        get_cityscapes_metadata("depth")


def test_instances_from_json_resolve_occlusions(root):
    dicts = load_cityscapes_instances(*_dirs(root))
    assert [d["image_id"] for d in dicts] == [
        f"{CITY}_000000_000019_leftImg8bit.png",
        f"{CITY}_000001_000019_leftImg8bit.png",
    ]
    first, second = dicts
    assert (first["height"], first["width"]) == (H, W)
    assert first["file_name"].endswith(
        "leftImg8bit/train/testcity/testcity_000000_000019_leftImg8bit.png"
    )
    # Reversed drawing order; the caravan (ignored) and the license plate give nothing.
    crowd, person, car = first["annotations"]
    assert [a["category_id"] for a in (crowd, person, car)] == [PERSON, PERSON, CAR]
    assert [a["iscrowd"] for a in (crowd, person, car)] == [1, 0, 0]
    assert all(a["bbox_mode"] == BoxMode.XYXY_ABS for a in (crowd, person, car))
    # The pole splits the car in two: 16 + 4 columns of 16 rows are visible.
    assert len(car["segmentation"]) == 2
    np.testing.assert_allclose(car["bbox"], [4, 10, 28, 26], atol=1e-6)
    assert _mask_area(car) == pytest.approx(320, abs=2)
    np.testing.assert_allclose(person["bbox"], [30, 4, 40, 28], atol=1e-6)
    assert _mask_area(person) == pytest.approx(240, abs=2)
    # The truck is hidden by the building drawn after it.
    crowd_car, rider = second["annotations"]
    assert (crowd_car["category_id"], crowd_car["iscrowd"]) == (CAR, 1)
    assert (rider["category_id"], rider["iscrowd"]) == (RIDER, 0)
    assert _mask_area(rider) == pytest.approx(100, abs=2)


def test_instances_from_png_rle(root):
    dicts = load_cityscapes_instances(*_dirs(root), from_json=False, to_polygons=False)
    crowd, person, car = dicts[0]["annotations"]  # sorted instance ids: 24, 24000, 26000
    assert [a["category_id"] for a in (crowd, person, car)] == [PERSON, PERSON, CAR]
    assert [a["iscrowd"] for a in (crowd, person, car)] == [1, 0, 0]
    assert car["bbox"] == [4, 10, 28, 26] and person["bbox"] == [30, 4, 40, 28]
    assert crowd["bbox"] == [44, 8, 56, 21]
    assert [_mask_area(a) for a in (crowd, person, car)] == [12 * 13, 240, 320]
    assert car["segmentation"]["size"] == [H, W]
    assert [a["category_id"] for a in dicts[1]["annotations"]] == [CAR, RIDER]


def test_instances_from_png_polygons_and_workers(root):
    serial = load_cityscapes_instances(*_dirs(root), from_json=False, num_workers=1)
    car = serial[0]["annotations"][2]
    assert len(car["segmentation"]) == 2  # one contour per visible part
    assert car["bbox"] == [4, 10, 28, 26]
    forked = load_cityscapes_instances(*_dirs(root), from_json=False, num_workers=2)
    assert forked == serial


def test_instances_errors(root):
    image_dir, gt_dir = _dirs(root)
    with pytest.raises(ValueError, match="to_polygons=True"):
        load_cityscapes_instances(image_dir, gt_dir, from_json=True, to_polygons=False)
    json_file = Path(gt_dir) / CITY / f"{CITY}_000001_000019_gtFine_polygons.json"
    content = json.loads(json_file.read_text())
    content["objects"].append({"label": "spaceship", "polygon": [[0, 0], [5, 0], [5, 5]]})
    json_file.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="spaceship"):
        load_cityscapes_instances(image_dir, gt_dir)
    json_file.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(json_file))):
        load_cityscapes_instances(image_dir, gt_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cityscapes_instances(str(root / "nowhere"), gt_dir)


def test_semantic(root):
    image_dir, gt_dir = _dirs(root)
    dicts = load_cityscapes_semantic(image_dir, gt_dir)
    assert len(dicts) == 2
    first = dicts[0]
    assert first["sem_seg_file_name"] == os.path.join(
        gt_dir, CITY, f"{CITY}_000000_000019_gtFine_labelTrainIds.png"
    )
    assert (first["height"], first["width"]) == (H, W)
    labels = np.asarray(Image.open(first["sem_seg_file_name"]))
    assert labels[12, 5] == 13 and labels[0, 0] == 255  # car, unlabeled
    os.remove(dicts[1]["sem_seg_file_name"])
    with pytest.raises(FileNotFoundError, match="prepare_cityscapes.py"):
        load_cityscapes_semantic(image_dir, gt_dir)


def test_panoptic(root):
    image_dir, gt_dir = _dirs(root)
    pan_dir = str(root / "gtFine" / "cityscapes_panoptic_train")
    meta = get_cityscapes_metadata("panoptic")
    dicts = load_cityscapes_panoptic(image_dir, pan_dir, pan_dir + ".json", meta)
    assert len(dicts) == 2
    first = dicts[0]
    assert first["image_id"] == f"{CITY}_000000_000019"
    assert first["file_name"] == os.path.join(
        image_dir, CITY, f"{CITY}_000000_000019_leftImg8bit.png"
    )
    assert first["pan_seg_file_name"] == os.path.join(
        pan_dir, f"{CITY}_000000_000019_gtFine_panoptic.png"
    )
    assert first["sem_seg_file_name"] == os.path.join(
        gt_dir, CITY, f"{CITY}_000000_000019_gtFine_labelTrainIds.png"
    )
    assert (first["height"], first["width"]) == (H, W)
    by_id = {s["id"]: s for s in first["segments_info"]}
    assert sorted(by_id) == [7, 17, 24, 24000, 26000]  # the caravan is not evaluated
    assert (by_id[26000]["category_id"], by_id[26000]["isthing"]) == (13, True)
    assert (by_id[24]["category_id"], by_id[24]["iscrowd"]) == (11, 1)
    assert (by_id[7]["category_id"], by_id[7]["isthing"]) == (0, False)
    assert (by_id[17]["category_id"], by_id[17]["isthing"]) == (5, False)


def test_panoptic_errors(root):
    image_dir, _ = _dirs(root)
    pan_dir = root / "gtFine" / "cityscapes_panoptic_train"
    meta = get_cityscapes_metadata("panoptic")
    with pytest.raises(FileNotFoundError, match="prepare_cityscapes.py"):
        load_cityscapes_panoptic(image_dir, str(pan_dir), str(root / "missing.json"), meta)
    png = pan_dir / f"{CITY}_000001_000019_gtFine_panoptic.png"
    png.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(png))):
        load_cityscapes_panoptic(image_dir, str(pan_dir), str(pan_dir) + ".json", meta)
    with pytest.raises(KeyError, match="--use-train-id"):
        load_cityscapes_panoptic(
            image_dir,
            str(pan_dir),
            str(pan_dir) + ".json",
            get_cityscapes_metadata("panoptic") | {"stuff_dataset_id_to_contiguous_id": {}},
        )
    (Path(image_dir) / CITY / f"{CITY}_000000_000019_leftImg8bit.png").unlink()
    with pytest.raises(ValueError, match="same split"):
        load_cityscapes_panoptic(image_dir, str(pan_dir), str(pan_dir) + ".json", meta)


NAMES = [
    f"cityscapes_fine_{task}_{split}"
    for task in ("instance_seg", "sem_seg")
    for split in ("train", "val", "test")
] + [f"cityscapes_fine_panoptic_{split}" for split in ("train", "val")]
NAMES += [f"cityscapes_fine_panoptic_separated_{split}" for split in ("train", "val")]


@pytest.fixture
def fresh_names():
    """Unregister the Cityscapes names for one test and restore them afterwards."""
    saved = {
        name: (DatasetCatalog.pop(name, None), MetadataCatalog.pop(name, None)) for name in NAMES
    }
    yield
    for name, (loader, metadata) in saved.items():
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)
        if loader is not None:
            DatasetCatalog[name] = loader
        if metadata is not None:
            MetadataCatalog[name] = metadata


def test_register_reads_nothing_and_explains_missing_folder(tmp_path, fresh_names, monkeypatch):
    monkeypatch.setenv("SEGTRON_DATASETS", str(tmp_path))
    register_all_cityscapes(str(tmp_path / "cityscapes"))  # nothing there: nothing is read
    assert all(name in DatasetCatalog for name in NAMES)
    assert "cityscapes_fine_panoptic_test" not in DatasetCatalog
    meta = MetadataCatalog.get("cityscapes_fine_panoptic_val")
    assert meta.label_divisor == 1000 and meta.ignore_label == 255
    assert meta.evaluator_type == "cityscapes_panoptic_seg"
    assert meta.gt_dir == str(tmp_path / "cityscapes" / "gtFine" / "val")
    assert meta.panoptic_json == str(
        tmp_path / "cityscapes" / "gtFine" / "cityscapes_panoptic_val.json"
    )
    instance = MetadataCatalog.get("cityscapes_fine_instance_seg_train")
    assert instance.evaluator_type == "cityscapes_instance" and len(instance.thing_classes) == 8
    semantic = MetadataCatalog.get("cityscapes_fine_sem_seg_test")
    assert semantic.evaluator_type == "cityscapes_sem_seg" and len(semantic.stuff_classes) == 19
    assert semantic.image_dir == str(tmp_path / "cityscapes" / "leftImg8bit" / "test")
    missing = str(tmp_path / "cityscapes" / "leftImg8bit" / "train")
    with pytest.raises(FileNotFoundError) as info:
        DatasetCatalog.get("cityscapes_fine_sem_seg_train")
    for text in (missing, "SEGTRON_DATASETS", "datasets/README.md"):
        assert text in str(info.value)


def test_registered_datasets_load(root, fresh_names):
    register_all_cityscapes(str(root))
    assert len(DatasetCatalog.get("cityscapes_fine_instance_seg_train")[0]["annotations"]) == 3
    assert len(DatasetCatalog.get("cityscapes_fine_sem_seg_train")) == 2
    panoptic = DatasetCatalog.get("cityscapes_fine_panoptic_train")
    assert panoptic[1]["image_id"] == f"{CITY}_000001_000019"


def _prepare_module():
    path = Path(__file__).resolve().parents[2] / "datasets" / "prepare_cityscapes.py"
    spec = importlib.util.spec_from_file_location("prepare_cityscapes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_explains_missing_cityscapesscripts(tmp_path, monkeypatch):
    # Submodules imported by an earlier test stay importable unless they are blocked too.
    for name in (
        "cityscapesscripts",
        "cityscapesscripts.preparation",
        "cityscapesscripts.preparation.createTrainIdLabelImgs",
        "cityscapesscripts.preparation.createPanopticImgs",
    ):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(SystemExit) as info:
        _prepare_module().main(["--root", str(tmp_path)])
    assert 'pip install -e ".[cityscapes]"' in str(info.value.code)


def test_prepare_runs_both_conversions(root, monkeypatch):
    calls = []
    train_ids = types.ModuleType("createTrainIdLabelImgs")
    train_ids.main = lambda: calls.append(("train_ids", os.environ["CITYSCAPES_DATASET"]))
    panoptic = types.ModuleType("createPanopticImgs")
    panoptic.convert2panoptic = lambda **kwargs: calls.append(("panoptic", kwargs))
    for name, module in [
        ("cityscapesscripts", types.ModuleType("cityscapesscripts")),
        ("cityscapesscripts.preparation", types.ModuleType("cityscapesscripts.preparation")),
        ("cityscapesscripts.preparation.createTrainIdLabelImgs", train_ids),
        ("cityscapesscripts.preparation.createPanopticImgs", panoptic),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    prepare = _prepare_module()
    with pytest.raises(SystemExit, match="gtFine/val does not exist"):
        prepare.main(["--root", str(root)])  # default splits: train and val
    assert calls == []
    prepare.main(["--root", str(root), "--splits", "train"])
    gt_fine = str(root / "gtFine")
    assert calls == [
        ("train_ids", str(root)),
        ("panoptic", {"cityscapesPath": gt_fine, "outputFolder": gt_fine, "setNames": ["train"]}),
    ]
    assert "CITYSCAPES_DATASET" not in os.environ
