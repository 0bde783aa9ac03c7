"""Tests of COCO panoptic loading and of the standard and separated registrations."""

import json

import numpy as np
import pytest
from PIL import Image

from segtron.data import DatasetCatalog, Metadata, MetadataCatalog
from segtron.data.datasets import (
    generate_synthetic_dataset,
    get_synthetic_metadata,
    load_coco_panoptic_json,
    merge_to_panoptic,
    register_coco_panoptic,
    register_coco_panoptic_separated,
)
from segtron.utils.panoptic import id2rgb

META = {
    "thing_dataset_id_to_contiguous_id": {4: 0},
    "stuff_dataset_id_to_contiguous_id": {20: 1},
    "thing_classes": ["cup", "wall"],
    "stuff_classes": ["cup", "wall"],
}


@pytest.fixture
def names(request):
    created = []
    yield lambda suffix: created.append(f"test_pan_{request.node.name}_{suffix}") or created[-1]
    for name in created:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)


def _panoptic(tmp_path, segments_info=None, image_id=5):
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "pan").mkdir(exist_ok=True)
    Image.new("RGB", (6, 4)).save(tmp_path / "images" / "x.png")
    ids = np.array([[1, 1, 2, 2, 0, 0]] * 4)
    Image.fromarray(id2rgb(ids)).save(tmp_path / "pan" / "x.png")
    segments_info = segments_info or [
        {"id": 1, "category_id": 4, "iscrowd": 0, "bbox": [0, 0, 2, 4], "area": 8},
        {"id": 2, "category_id": 20, "iscrowd": 0, "bbox": [2, 0, 2, 4], "area": 8},
    ]
    content = {
        "images": [{"id": 5, "file_name": "x.png", "height": 4, "width": 6}],
        "annotations": [
            {"image_id": image_id, "file_name": "x.png", "segments_info": segments_info}
        ],
        "categories": [
            {"id": 4, "name": "cup", "isthing": 1, "color": [1, 2, 3]},
            {"id": 20, "name": "wall", "isthing": 0, "color": [4, 5, 6]},
        ],
    }
    path = tmp_path / "panoptic.json"
    path.write_text(json.dumps(content))
    return str(path), str(tmp_path / "images"), str(tmp_path / "pan")


@pytest.mark.parametrize("meta", [META, Metadata(**META)])
def test_load_maps_categories_to_contiguous_ids(tmp_path, meta):
    json_file, image_dir, pan_dir = _panoptic(tmp_path)
    (record,) = load_coco_panoptic_json(json_file, image_dir, pan_dir, meta)
    assert record["file_name"] == f"{image_dir}/x.png"
    assert record["pan_seg_file_name"] == f"{pan_dir}/x.png"
    assert (record["image_id"], record["height"], record["width"]) == (5, 4, 6)
    assert [(s["id"], s["category_id"], s["isthing"]) for s in record["segments_info"]] == [
        (1, 0, True),
        (2, 1, False),
    ]


def test_load_errors_name_the_file(tmp_path):
    json_file, image_dir, pan_dir = _panoptic(tmp_path, image_id=99)
    with pytest.raises(ValueError, match="image_id=99") as info:
        load_coco_panoptic_json(json_file, image_dir, pan_dir, META)
    assert json_file in str(info.value)
    unknown = [{"id": 1, "category_id": 77, "iscrowd": 0, "bbox": [0, 0, 1, 1], "area": 1}]
    json_file, image_dir, pan_dir = _panoptic(tmp_path, segments_info=unknown)
    with pytest.raises(KeyError, match="category_id=77"):
        load_coco_panoptic_json(json_file, image_dir, pan_dir, META)
    json_file, image_dir, pan_dir = _panoptic(tmp_path)
    with pytest.raises(FileNotFoundError, match="right folder"):
        load_coco_panoptic_json(json_file, image_dir + "_wrong", pan_dir, META)


def test_register_coco_panoptic_is_lazy_with_detectron2_metadata(tmp_path, names):
    json_file, image_dir, pan_dir = _panoptic(tmp_path)
    name = names("std")
    register_coco_panoptic(name, META, image_dir, pan_dir, json_file)
    meta = MetadataCatalog.get(name)
    assert (meta.evaluator_type, meta.ignore_label, meta.label_divisor) == (
        "coco_panoptic_seg",
        255,
        1000,
    )
    assert meta.panoptic_json == json_file and meta.json_file is None
    assert DatasetCatalog.get(name)[0]["segments_info"][0]["category_id"] == 0


def test_register_separated_merges_instances_and_semantic_labels(tmp_path, names):
    root = tmp_path / "syn"
    split_dir = root / "train"
    generate_synthetic_dataset(root, "train", 3, seed=1, image_size=(48, 64))
    base = names("base")
    register_coco_panoptic_separated(
        base,
        get_synthetic_metadata("panoptic_separated"),
        str(split_dir / "images"),
        str(split_dir / "panoptic"),
        str(split_dir / "panoptic_train.json"),
        str(split_dir / "panoptic_stuff"),
        str(split_dir / "instances_train.json"),
    )
    names("base_separated"), names("base_stuffonly")  # cleaned up after the test
    separated = DatasetCatalog.get(base + "_separated")
    assert len(separated) == 3
    for record in separated:
        assert record["sem_seg_file_name"].endswith(f"{record['image_id']:06d}.png")
        assert record["annotations"] and {"bbox", "segmentation"} <= set(record["annotations"][0])
    meta = MetadataCatalog.get(base + "_separated")
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.stuff_classes[0] == "things"
    assert meta.thing_classes == ["circle", "square", "triangle"]
    stuffonly = DatasetCatalog.get(base + "_stuffonly")
    assert [d["image_id"] for d in stuffonly] == [1, 2, 3] and "annotations" not in stuffonly[0]
    assert MetadataCatalog.get(base + "_stuffonly").evaluator_type == "sem_seg"


def test_merge_to_panoptic_needs_a_semantic_entry_per_image():
    merged = merge_to_panoptic(
        [{"file_name": "a", "annotations": []}], [{"file_name": "a", "sem_seg_file_name": "s"}]
    )
    assert merged == [{"file_name": "a", "annotations": [], "sem_seg_file_name": "s"}]
    with pytest.raises(KeyError, match="no semantic label"):
        merge_to_panoptic([{"file_name": "b"}], [{"file_name": "a"}])
