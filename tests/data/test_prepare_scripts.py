"""Tests of datasets/prepare_*.py on tiny fake datasets: the pixel values they write."""

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from segtron.data.datasets import load_voc_sem_seg
from segtron.data.datasets.builtin_meta import COCO_CATEGORIES, VOC_SEM_SEG_COLORS
from segtron.data.detection_utils import read_image
from segtron.utils.panoptic import id2rgb

DATASETS_DIR = Path(__file__).resolve().parents[2] / "datasets"


@pytest.fixture
def script(monkeypatch):
    """Import a prepare script by name (importable by worker processes too)."""
    monkeypatch.syspath_prepend(str(DATASETS_DIR))
    return importlib.import_module


def _read(path):
    return np.asarray(Image.open(path))


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)


# ---- prepare_panoptic_fpn.py ------------------------------------------------------------------

# Panoptic ids: 1 person, 2 car crowd, 3 banner (first stuff), 4 rug-merged (last stuff),
# 9 a segment missing from segments_info, 0 void.
PANOPTIC_IDS = np.array([[1, 1, 2, 3], [3, 4, 4, 0], [9, 0, 1, 4]])
SEGMENTS = [
    {"id": 1, "category_id": 1, "iscrowd": 0},
    {"id": 2, "category_id": 3, "iscrowd": 1},
    {"id": 3, "category_id": 92, "iscrowd": 0},
    {"id": 4, "category_id": 200, "iscrowd": 0},
]


def _coco_panoptic(coco, split="val2017", segments=SEGMENTS):
    annotations = []
    for stem in ("000000000001", "000000000002"):
        _save(coco / f"panoptic_{split}" / f"{stem}.png", id2rgb(PANOPTIC_IDS))
        annotations.append({"image_id": int(stem), "file_name": f"{stem}.png"})
        annotations[-1]["segments_info"] = segments
    content = {"annotations": annotations, "categories": COCO_CATEGORIES}
    json_file = coco / "annotations" / f"panoptic_{split}.json"
    json_file.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps(content))
    return str(json_file), str(coco / f"panoptic_{split}")


@pytest.mark.parametrize("workers", [1, 2])
def test_panoptic_fpn_labels(tmp_path, script, workers):
    prepare = script("prepare_panoptic_fpn")
    json_file, panoptic_root = _coco_panoptic(tmp_path / "coco")
    stuff_root, semseg_root = tmp_path / "stuff", tmp_path / "semseg"
    count = prepare.separate_coco_semantic_from_panoptic(
        json_file,
        panoptic_root,
        str(stuff_root),
        all_classes_root=str(semseg_root),
        workers=workers,
    )
    assert count == 2
    for stem in ("000000000001", "000000000002"):
        stuff = _read(stuff_root / f"{stem}.png")
        assert stuff.dtype == np.uint8
        np.testing.assert_array_equal(stuff, [[0, 0, 0, 1], [1, 53, 53, 255], [255, 255, 0, 53]])
        semseg = _read(semseg_root / f"{stem}.png")
        np.testing.assert_array_equal(
            semseg, [[0, 0, 2, 80], [80, 132, 132, 255], [255, 255, 0, 132]]
        )


def test_panoptic_fpn_cli_and_errors(tmp_path, script):
    prepare = script("prepare_panoptic_fpn")
    coco = tmp_path / "coco"
    _coco_panoptic(coco)
    prepare.main(["--root", str(tmp_path), "--splits", "val2017", "--workers", "1"])
    assert sorted(p.name for p in (coco / "panoptic_stuff_val2017").iterdir()) == [
        "000000000001.png",
        "000000000002.png",
    ]
    assert not (coco / "panoptic_semseg_val2017").exists()

    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--help"])
    assert exit_info.value.code == 0

    json_file, panoptic_root = _coco_panoptic(coco, "bad", [{"id": 1, "category_id": 12}])
    with pytest.raises(KeyError, match=r"panoptic_bad\.json uses category ids \[12\]"):
        prepare.separate_coco_semantic_from_panoptic(json_file, panoptic_root, str(tmp_path / "o"))
    (Path(panoptic_root) / "000000000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 PNGs named in .*panoptic_bad\.json"):
        prepare.separate_coco_semantic_from_panoptic(json_file, panoptic_root, str(tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="nothing.json does not exist"):
        prepare.separate_coco_semantic_from_panoptic(
            str(tmp_path / "nothing.json"), panoptic_root, str(tmp_path / "o")
        )


# ---- prepare_ade20k_sem_seg.py ----------------------------------------------------------------


def test_ade20k_labels_shift_down(tmp_path, script):
    prepare = script("prepare_ade20k_sem_seg")
    ade = tmp_path / "ADEChallengeData2016"
    raw = np.array([[0, 1, 2], [150, 75, 0]])
    for split in ("training", "validation"):
        for stem in ("ADE_a", "ADE_b"):
            _save(ade / "annotations" / split / f"{stem}.png", raw)
    prepare.main(["--root", str(tmp_path), "--workers", "1"])
    for split in ("training", "validation"):
        for stem in ("ADE_a", "ADE_b"):
            out = _read(ade / "annotations_detectron2" / split / f"{stem}.png")
            np.testing.assert_array_equal(out, [[255, 0, 1], [149, 74, 255]])


def test_ade20k_errors(tmp_path, script):
    prepare = script("prepare_ade20k_sem_seg")
    ade = tmp_path / "ADEChallengeData2016"
    with pytest.raises(FileNotFoundError, match=r"No label PNG in .*annotations/training"):
        prepare.convert_ade20k(str(ade), workers=1)
    with pytest.raises(SystemExit, match=r"error: No label PNG in .*annotations/training"):
        prepare.main(["--root", str(tmp_path)])
    _save(ade / "annotations" / "training" / "rgb.png", np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"rgb\.png is not a single-channel"):
        prepare.convert_ade20k(str(ade), workers=1)


# ---- prepare_pascal_voc_sbd.py ----------------------------------------------------------------


def _palette_png(path, labels):
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    flat = [v for color in VOC_SEM_SEG_COLORS for v in color]
    image.putpalette(flat + [224, 224, 192] * (256 - len(VOC_SEM_SEG_COLORS)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _sbd_mat(path, labels):
    path.parent.mkdir(parents=True, exist_ok=True)
    gt = {"Segmentation": np.asarray(labels, dtype=np.uint8), "CategoriesPresent": [1]}
    scipy.io.savemat(path, {"GTcls": gt})


def _voc_and_sbd(root):
    voc, sbd = root / "VOC2012", root / "benchmark_RELEASE" / "dataset"
    # VOC labels a (train) and c (val); SBD labels a, b, c and d.
    _palette_png(voc / "SegmentationClass" / "a.png", [[0, 15], [255, 20]])
    _palette_png(voc / "SegmentationClass" / "c.png", [[1, 1], [1, 1]])
    for stem in "abcd":
        Image.new("RGB", (2, 2)).save(_mkdir(voc / "JPEGImages") / f"{stem}.jpg")
        _sbd_mat(sbd / "cls" / f"{stem}.mat", [[7, 7], [0, 3]])
    lists = _mkdir(voc / "ImageSets" / "Segmentation")
    (lists / "train.txt").write_text("a\n")
    (lists / "val.txt").write_text("c\n")
    return voc, sbd


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_voc_sbd_labels_and_train_aug(tmp_path, script):
    prepare = script("prepare_pascal_voc_sbd")
    voc, sbd = _voc_and_sbd(tmp_path)
    counts = prepare.prepare_voc_sbd(str(voc), str(sbd), workers=2)
    assert counts == {"voc": 2, "sbd": 2, "train_aug": 3}
    out = voc / "SegmentationClassAug"
    for stem in "ab":
        assert Image.open(out / f"{stem}.png").mode == "L"
    np.testing.assert_array_equal(_read(out / "a.png"), [[0, 15], [255, 20]])  # VOC's own
    np.testing.assert_array_equal(_read(out / "b.png"), [[7, 7], [0, 3]])  # from SBD
    np.testing.assert_array_equal(_read(out / "c.png"), [[1, 1], [1, 1]])
    assert (voc / "ImageSets/Segmentation/train_aug.txt").read_text() == "a\nb\nd\n"

    # The written labels read back as class ids the way the data mapper reads them.
    dicts = load_voc_sem_seg(voc, "train_aug")
    assert [d["image_id"] for d in dicts] == ["a", "b", "d"]
    label = read_image(dicts[0]["sem_seg_file_name"], "L")[..., 0]
    np.testing.assert_array_equal(label, [[0, 15], [255, 20]])


def test_voc_without_sbd_and_errors(tmp_path, script, capsys):
    prepare = script("prepare_pascal_voc_sbd")
    voc, _ = _voc_and_sbd(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--help"])
    assert exit_info.value.code == 0 and "--sbd-root" in capsys.readouterr().out
    (tmp_path / "benchmark_RELEASE").rename(tmp_path / "elsewhere")
    prepare.main(["--root", str(tmp_path), "--workers", "1"])
    assert "writing VOC's labels only" in capsys.readouterr().out
    assert sorted(p.name for p in (voc / "SegmentationClassAug").iterdir()) == ["a.png", "c.png"]
    assert not (voc / "ImageSets/Segmentation/train_aug.txt").exists()

    with pytest.raises(FileNotFoundError, match=r"none/cls does not exist"):
        prepare.prepare_voc_sbd(str(voc), str(tmp_path / "none"), workers=1)
    with pytest.raises(FileNotFoundError, match=r"nowhere/SegmentationClass does not exist"):
        prepare.prepare_voc_sbd(str(tmp_path / "nowhere"), None, workers=1)
    scipy.io.savemat(tmp_path / "inst.mat", {"GTinst": {"Segmentation": [[1]]}})
    with pytest.raises(ValueError, match=r"inst\.mat has no GTcls\.Segmentation"):
        prepare.convert_sbd_label((str(tmp_path / "inst.mat"), str(tmp_path / "x.png")))
