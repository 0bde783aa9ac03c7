"""Tests of the synthetic shapes dataset: determinism, consistency of its formats, registration."""

import importlib.util
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from segtron.data import DatasetCatalog, MetadataCatalog
from segtron.data.datasets import generate_synthetic_dataset, register_synthetic
from segtron.data.datasets.synthetic import _ensure_split
from segtron.utils.panoptic import rgb2id

CONTIGUOUS = {1: 0, 2: 1, 3: 2, 10: 3, 11: 4}
SIZE = (64, 80)


def _files(split_dir):
    return {
        str(p.relative_to(split_dir)): p.read_bytes()
        for p in sorted(Path(split_dir).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    return generate_synthetic_dataset(tmp_path_factory.mktemp("syn"), "val", 8, 3, SIZE)


def _load(split_dir, name):
    with open(os.path.join(split_dir, name)) as f:
        return json.load(f)


def test_same_seed_gives_same_bytes_and_other_seed_differs(split_dir, tmp_path):
    same = _files(generate_synthetic_dataset(tmp_path / "a", "val", 8, 3, SIZE))
    assert same == _files(split_dir)
    assert len(same) == 4 * 8 + 3
    other = _files(generate_synthetic_dataset(tmp_path / "b", "val", 8, 4, SIZE))
    assert other.keys() == same.keys()
    for key in ("panoptic_val.json", "instances_val.json", "panoptic/000001.png"):
        assert other[key] != same[key]


def test_panoptic_png_ids_match_json_segments(split_dir):
    panoptic = _load(split_dir, "panoptic_val.json")
    assert {c["id"] for c in panoptic["categories"]} == set(CONTIGUOUS)
    crowds = 0
    for ann in panoptic["annotations"]:
        ids = rgb2id(np.array(Image.open(os.path.join(split_dir, "panoptic", ann["file_name"]))))
        segments = {s["id"]: s for s in ann["segments_info"]}
        assert set(np.unique(ids)) - {0} == set(segments)
        for segment_id, segment in segments.items():
            ys, xs = np.nonzero(ids == segment_id)
            assert segment["area"] == len(ys)
            assert segment["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            crowds += segment["iscrowd"]
    assert crowds > 0


def test_instances_agree_with_panoptic_masks(split_dir):
    coco = COCO(os.path.join(split_dir, "instances_val.json"))
    panoptic = {a["image_id"]: a for a in _load(split_dir, "panoptic_val.json")["annotations"]}
    kinds = set()
    for image_id, pan in panoptic.items():
        ids = rgb2id(np.array(Image.open(os.path.join(split_dir, "panoptic", pan["file_name"]))))
        things = [s for s in pan["segments_info"] if s["category_id"] < 10]
        anns = coco.imgToAnns[image_id]
        assert len(anns) == len(things)
        for ann in anns:
            segm = ann["segmentation"]
            kinds.add("poly" if isinstance(segm, list) else type(segm["counts"]).__name__)
            mask = coco.annToMask(ann).astype(bool)
            ious = [
                ((ids == s["id"]) & mask).sum() / ((ids == s["id"]) | mask).sum()
                for s in things
                if (s["category_id"], s["iscrowd"]) == (ann["category_id"], ann["iscrowd"])
            ]
            assert max(ious) > 0.9
    assert kinds == {"poly", "str", "list"}  # polygons, compressed RLE, crowd uncompressed RLE


def test_semantic_pngs_agree_with_panoptic(split_dir):
    for ann in _load(split_dir, "panoptic_val.json")["annotations"]:
        stem = ann["file_name"]
        ids = rgb2id(np.array(Image.open(os.path.join(split_dir, "panoptic", stem))))
        sem = np.array(Image.open(os.path.join(split_dir, "sem_seg", stem)))
        stuff = np.array(Image.open(os.path.join(split_dir, "panoptic_stuff", stem)))
        expected_sem = np.full(ids.shape, 255)
        expected_stuff = np.full(ids.shape, 255)
        for s in ann["segments_info"]:
            region = ids == s["id"]
            expected_sem[region] = 255 if s["iscrowd"] else CONTIGUOUS[s["category_id"]]
            expected_stuff[region] = s["category_id"] - 9 if s["category_id"] >= 10 else 0
        np.testing.assert_array_equal(sem, expected_sem)
        np.testing.assert_array_equal(stuff, expected_stuff)


@pytest.fixture
def registered(tmp_path):
    prefix = f"tsyn{os.getpid()}"
    register_synthetic(tmp_path, prefix=prefix, num_images={"train": 3, "val": 2}, seed=1)
    yield prefix, tmp_path
    for name in [n for n in DatasetCatalog.list() if n.startswith(prefix + "_")]:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_registered_names_generate_on_first_use(registered):
    prefix, root = registered
    assert not (root / "train").exists()
    instances = DatasetCatalog.get(f"{prefix}_train")
    assert len(instances) == 3 and (root / "train" / "instances_train.json").is_file()
    assert not (root / "val").exists()
    expected = {
        "": ("coco", 3),
        "_panoptic": ("coco_panoptic_seg", 5),
        "_panoptic_separated": ("coco_panoptic_seg", 3),
        "_panoptic_stuffonly": ("sem_seg", 3),
        "_sem_seg": ("sem_seg", 5),
    }
    for suffix, (evaluator_type, num_classes) in expected.items():
        name = f"{prefix}_val{suffix}"
        dicts = DatasetCatalog.get(name)
        meta = MetadataCatalog.get(name)
        assert len(dicts) == 2 and meta.evaluator_type == evaluator_type
        classes = meta.get("stuff_classes") if "stuff" in suffix or "sem" in suffix else None
        assert len(classes or meta.thing_classes) == num_classes
        assert os.path.isfile(dicts[0]["file_name"])
    pan_meta = MetadataCatalog.get(f"{prefix}_val_panoptic")
    assert pan_meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
    assert pan_meta.stuff_dataset_id_to_contiguous_id == {10: 3, 11: 4}
    assert (pan_meta.label_divisor, pan_meta.ignore_label) == (1000, 255)
    assert os.path.isdir(pan_meta.panoptic_root) and os.path.isfile(pan_meta.panoptic_json)
    sep_meta = MetadataCatalog.get(f"{prefix}_val_panoptic_separated")
    assert sep_meta.stuff_dataset_id_to_contiguous_id == {0: 0, 10: 1, 11: 2}
    sem_meta = MetadataCatalog.get(f"{prefix}_val_sem_seg")
    assert sem_meta.stuff_classes == ["circle", "square", "triangle", "sky", "ground"]
    assert os.path.isdir(sem_meta.sem_seg_root) and sem_meta.ignore_label == 255
    panoptic = DatasetCatalog.get(f"{prefix}_val_panoptic")
    assert {s["category_id"] for d in panoptic for s in d["segments_info"]} <= set(range(5))
    # The standard form also carries the semantic labels (same contiguous ids), for mIoU.
    semantic = {d["file_name"]: d["sem_seg_file_name"] for d in sem_dicts(prefix)}
    assert {d["file_name"]: d["sem_seg_file_name"] for d in panoptic} == semantic
    assert pan_meta.sem_seg_root == sem_meta.sem_seg_root


def sem_dicts(prefix: str) -> list[dict]:
    return DatasetCatalog.get(f"{prefix}_val_sem_seg")


def test_builtin_names_are_registered():
    for split in ("train", "val"):
        for suffix in ("", "_panoptic", "_panoptic_separated", "_sem_seg"):
            assert f"synthetic_{split}{suffix}" in DatasetCatalog.list()
    assert MetadataCatalog.get("synthetic_val").thing_classes == ["circle", "square", "triangle"]
    # The larger training set: the same forms, a train split only, under its own folder.
    for suffix in ("", "_panoptic", "_panoptic_separated", "_sem_seg"):
        assert f"synthetic_large_train{suffix}" in DatasetCatalog.list()
    assert "synthetic_large_val" not in DatasetCatalog.list()
    large = MetadataCatalog.get("synthetic_large_train")
    assert large.image_root.endswith(os.path.join("synthetic_large", "train", "images"))
    assert large.thing_classes == MetadataCatalog.get("synthetic_train").thing_classes


def test_concurrent_generation_yields_one_complete_split(tmp_path):
    threads = [
        threading.Thread(target=_ensure_split, args=(str(tmp_path), "train", 2, 0, SIZE))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(os.listdir(tmp_path)) == ["train"]
    assert _files(tmp_path / "train") == _files(
        generate_synthetic_dataset(tmp_path / "ref", "train", 2, 0, SIZE)
    )


def test_tool_writes_both_splits(tmp_path):
    path = Path(__file__).parents[2] / "tools" / "make_synthetic_dataset.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_dataset", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    argv = ["--root", str(tmp_path), "--train", "2", "--val", "1", "--size", "40", "48"]
    tool.main(argv)
    assert len(os.listdir(tmp_path / "train" / "images")) == 2
    assert Image.open(tmp_path / "val" / "images" / "000001.jpg").size == (48, 40)
    with pytest.raises(SystemExit, match="overwrite"):
        tool.main(argv)
    tool.main([*argv, "--overwrite", "--seed", "5"])
