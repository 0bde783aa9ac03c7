"""Tests of COCO instances loading, semantic-label pairing and conversion back to COCO JSON."""

import json
import logging

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from segtron.data import DatasetCatalog, MetadataCatalog
from segtron.data.datasets import (
    convert_to_coco_dict,
    convert_to_coco_json,
    load_coco_json,
    load_sem_seg,
    register_coco_instances,
)
from segtron.structures import BoxMode

SQUARE = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]


def _rle_of_box(height, width, y0, y1, x0, x1):
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def _annotation(ann_id, image_id, category_id, bbox, segmentation, **extra):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "segmentation": segmentation,
        "iscrowd": 0,
        "area": 1.0,
        **extra,
    }


def _coco(annotations):
    return {
        "images": [
            {"id": 7, "file_name": "b.jpg", "height": 40, "width": 50},
            {"id": 3, "file_name": "a.jpg", "height": 40, "width": 50},
        ],
        "categories": [{"id": 9, "name": "dog"}, {"id": 5, "name": "cat"}],
        "annotations": annotations,
    }


GOOD = [
    _annotation(1, 3, 5, [10, 10, 20, 20], [SQUARE], keypoints=[12, 14, 2, 0, 0, 0]),
    _annotation(2, 3, 9, [5, 2, 10, 6], _rle_of_box(40, 50, 2, 8, 5, 15)),
    _annotation(3, 7, 9, [0, 0, 50, 20], {"size": [40, 50], "counts": [0, 20, 20] * 50}, iscrowd=1),
    _annotation(6, 7, 5, [10, 10, 20, 20], [[1.0, 2.0, 3.0, 4.0], SQUARE]),
]
BAD = [
    _annotation(4, 7, 5, [1, 2, 2, 2], [[1.0, 2.0, 3.0, 4.0]]),
    _annotation(5, 7, 5, [10, 10, 0, 20], [SQUARE]),
]


@pytest.fixture
def names(request):
    created = []
    yield lambda suffix: created.append(f"test_coco_{request.node.name}_{suffix}") or created[-1]
    for name in created:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)


def _write(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_load_maps_categories_and_keeps_segmentations(tmp_path, names, caplog):
    json_file = _write(tmp_path / "instances.json", _coco(GOOD + BAD))
    name = names("load")
    with caplog.at_level(logging.WARNING):
        dicts = load_coco_json(json_file, "/imgs", name)
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["cat", "dog"]
    assert meta.thing_dataset_id_to_contiguous_id == {5: 0, 9: 1}
    assert [d["image_id"] for d in dicts] == [3, 7]
    assert dicts[0]["file_name"] == "/imgs/a.jpg" and (dicts[0]["height"], dicts[0]["width"]) == (
        40,
        50,
    )
    poly, rle = dicts[0]["annotations"]
    assert poly["category_id"] == 0 and poly["segmentation"] == [SQUARE]
    assert poly["bbox_mode"] == BoxMode.XYWH_ABS and poly["iscrowd"] == 0
    assert poly["keypoints"] == [12.5, 14.5, 2, 0.5, 0.5, 0]
    assert rle["category_id"] == 1 and mask_util.area(rle["segmentation"]) == 60
    crowd, partial = dicts[1]["annotations"]  # annotations 4 and 5 were dropped
    assert crowd["iscrowd"] == 1 and isinstance(crowd["segmentation"]["counts"], bytes)
    assert mask_util.area(crowd["segmentation"]) == 20 * 50
    assert partial["segmentation"] == [SQUARE]
    assert "1 annotations" in caplog.text and "valid polygon" in caplog.text
    assert "zero or negative width" in caplog.text


def test_load_without_dataset_name_keeps_dataset_ids(tmp_path):
    dicts = load_coco_json(_write(tmp_path / "i.json", _coco(GOOD)), "imgs")
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [5, 9]


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        ("{not json", ValueError, "not a valid JSON"),
        (_coco([_annotation(1, 3, 42, [0, 0, 5, 5], [SQUARE])]), KeyError, "category_id=42"),
        (_coco([GOOD[0], dict(GOOD[1], id=1)]), ValueError, "not unique"),
    ],
)
def test_load_errors_name_the_file(tmp_path, content, error, message):
    json_file = _write(tmp_path / "broken.json", content)
    with pytest.raises(error, match=message) as info:
        load_coco_json(json_file, "imgs")
    assert json_file in str(info.value)


def test_register_is_lazy_and_round_trip_is_exact(tmp_path, names):
    name = names("src")
    register_coco_instances(name, {"extra": 1}, str(tmp_path / "absent.json"), "imgs")
    assert MetadataCatalog.get(name).evaluator_type == "coco"
    with pytest.raises(FileNotFoundError):
        DatasetCatalog.get(name)

    source = names("rt")
    register_coco_instances(source, {}, _write(tmp_path / "i.json", _coco(GOOD)), "/imgs")
    first = DatasetCatalog.get(source)
    out = str(tmp_path / "out" / "coco.json")
    convert_to_coco_json(source, out)
    written = json.loads(open(out).read())
    assert [c["id"] for c in written["categories"]] == [5, 9]
    areas = [a["area"] for a in written["annotations"]]
    assert areas == [400.0, 60.0, 1000.0, 400.0]

    copy = names("copy")
    register_coco_instances(copy, {}, out, "")
    second = DatasetCatalog.get(copy)

    def normalized(dicts):
        for d in dicts:
            for a in d["annotations"]:
                segm = a["segmentation"]
                if isinstance(segm, dict) and isinstance(segm["counts"], bytes):
                    segm["counts"] = segm["counts"].decode("ascii")
        return dicts

    assert normalized(second) == normalized(first)
    assert MetadataCatalog.get(copy).thing_classes == ["cat", "dog"]


def test_convert_uses_cache_and_box_area_without_segmentation(tmp_path, names):
    name = names("boxes")
    DatasetCatalog.register(
        name,
        lambda: [
            {
                "file_name": "x.jpg",
                "image_id": 1,
                "height": 10,
                "width": 10,
                "annotations": [
                    {"bbox": [1, 2, 5, 7], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
                ],
            }
        ],
    )
    MetadataCatalog.get(name).thing_classes = ["thing"]
    coco = convert_to_coco_dict(name)
    assert coco["annotations"][0]["bbox"] == [1.0, 2.0, 4.0, 5.0]
    assert coco["annotations"][0]["area"] == 20.0 and coco["categories"] == [
        {"id": 0, "name": "thing"}
    ]
    out = tmp_path / "cached.json"
    out.write_text("{}")
    convert_to_coco_json(name, str(out))
    assert out.read_text() == "{}"
    convert_to_coco_json(name, str(out), allow_cached=False)
    assert json.loads(out.read_text())["annotations"][0]["area"] == 20.0


def test_load_sem_seg_pairs_by_stem(tmp_path, caplog):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for stem in ("2", "10", "11"):
        Image.new("RGB", (6, 4)).save(images / f"{stem}.jpg")
    for stem in ("10", "2"):
        Image.new("L", (6, 4)).save(labels / f"{stem}.png")
    with caplog.at_level(logging.WARNING):
        dicts = load_sem_seg(str(labels), str(images))
    assert [d["image_id"] for d in dicts] == [2, 10]
    assert dicts[0]["file_name"] == str(images / "2.jpg")
    assert dicts[0]["sem_seg_file_name"] == str(labels / "2.png")
    assert (dicts[0]["height"], dicts[0]["width"]) == (4, 6)
    assert "3 images but" in caplog.text

    Image.new("L", (6, 4)).save(labels / "orphan.png")
    with pytest.raises(FileNotFoundError, match="orphan"):
        load_sem_seg(str(labels), str(images))
    with pytest.raises(FileNotFoundError, match="No"):
        load_sem_seg(str(images), str(images), gt_ext="tif")
