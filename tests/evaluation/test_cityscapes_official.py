"""Cityscapes end to end with the official cityscapesscripts, on a tiny fake Cityscapes tree.

``datasets/prepare_cityscapes.py`` converts the fake gtFine annotations with cityscapesscripts;
the datasets that ``register_all_cityscapes`` declares on the tree are then scored by the
Cityscapes evaluators (the official evaluation scripts) and by ``COCOPanopticEvaluator``.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segtron.config import get_cfg
from segtron.data import DatasetCatalog, MetadataCatalog
from segtron.data.datasets.cityscapes import CITYSCAPES_LABELS, register_all_cityscapes
from segtron.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOPanopticEvaluator,
    build_evaluator,
)
from segtron.structures import Instances
from segtron.utils.panoptic import rgb2id

pytest.importorskip("cityscapesscripts")

H, W = 64, 128
LABELS = {label.name: label for label in CITYSCAPES_LABELS}
ID_TO_LABEL = {label.id: label for label in CITYSCAPES_LABELS}
# Label id -> train id (255: not evaluated) for every label id a PNG can hold.
TRAIN_ID_LUT = np.full(256, 255, dtype=np.uint8)
for _label in CITYSCAPES_LABELS:
    if _label.id >= 0:
        TRAIN_ID_LUT[_label.id] = _label.trainId
ROAD, PERSON = LABELS["road"].trainId, LABELS["person"].trainId

# The objects of each val image in drawing order (later ones cover earlier ones):
# (label, inclusive rectangle x0 y0 x1 y1, pixel value in instanceIds.png or None for the label
# id, deleted). Covered: unlabeled pixels (top right of the first image), a pole cutting a car
# in two, a never-drawn license plate (id -1), a deleted object, a crowd (persongroup), a
# caravan (a thing ignored in evaluation) and a bicycle of 64 pixels (under the 100 pixels the
# instance script requires of a ground-truth instance).
SCENES: dict[tuple[str, str], list[tuple[str, tuple[int, int, int, int], int | None, bool]]] = {
    ("aachen", "000000"): [
        ("sky", (0, 0, 119, 20), None, False),
        ("building", (0, 21, 127, 31), None, False),
        ("road", (0, 32, 127, 63), None, False),
        ("car", (10, 36, 49, 55), 26000, False),
        ("car", (60, 40, 89, 59), 26001, False),
        ("person", (100, 20, 109, 49), 24000, False),
        ("pole", (45, 10, 48, 63), None, False),
        ("license plate", (20, 50, 25, 53), None, False),
    ],
    ("aachen", "000001"): [
        ("vegetation", (0, 0, 127, 39), None, False),
        ("sidewalk", (0, 40, 127, 63), None, False),
        ("rider", (20, 10, 34, 39), 25000, False),
        ("bicycle", (20, 40, 34, 55), 33000, False),
        ("bicycle", (100, 5, 107, 12), 33001, False),
        ("persongroup", (60, 20, 79, 45), None, False),
    ],
    ("bremen", "000000"): [
        ("building", (0, 0, 127, 29), None, False),
        ("road", (0, 30, 127, 63), None, False),
        ("truck", (30, 10, 79, 50), 27000, False),
        ("caravan", (90, 35, 110, 50), 29000, False),
        ("car", (0, 0, 127, 63), None, True),
    ],
}


def _prefix(city: str, frame: str) -> str:
    return f"{city}_{frame}_000019"


def _instance_ids(objects: list) -> np.ndarray:
    """The instanceIds map that Cityscapes' rasterization of ``objects`` gives."""
    ids = np.zeros((H, W), dtype=np.int64)
    for name, (x0, y0, x1, y1), value, deleted in objects:
        label = LABELS[name.removesuffix("group")]
        if deleted or label.id < 0:
            continue
        ids[y0 : y1 + 1, x0 : x1 + 1] = label.id if value is None else value
    return ids


def _label_ids(instance_ids: np.ndarray) -> np.ndarray:
    return np.where(instance_ids >= 1000, instance_ids // 1000, instance_ids)


def _write_cityscapes(root: Path) -> None:
    """The val split of SCENES: leftImg8bit PNGs and gtFine polygons, labelIds, instanceIds."""
    rng = np.random.default_rng(0)
    for (city, frame), objects in SCENES.items():
        image_dir = root / "leftImg8bit" / "val" / city
        gt_dir = root / "gtFine" / "val" / city
        image_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        prefix = _prefix(city, frame)
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        Image.fromarray(image).save(image_dir / f"{prefix}_leftImg8bit.png")
        polygons = {
            "imgHeight": H,
            "imgWidth": W,
            "objects": [
                {
                    "label": name,
                    "polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]],
                    **({"deleted": 1} if deleted else {}),
                }
                for name, (x0, y0, x1, y1), _, deleted in objects
            ],
        }
        (gt_dir / f"{prefix}_gtFine_polygons.json").write_text(json.dumps(polygons))
        ids = _instance_ids(objects)
        Image.fromarray(ids.astype(np.uint16)).save(gt_dir / f"{prefix}_gtFine_instanceIds.png")
        Image.fromarray(_label_ids(ids).astype(np.uint8)).save(
            gt_dir / f"{prefix}_gtFine_labelIds.png"
        )


def _prepare_module():
    path = Path(__file__).resolve().parents[2] / "datasets" / "prepare_cityscapes.py"
    spec = importlib.util.spec_from_file_location("prepare_cityscapes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CITYSCAPES_NAMES = [
    f"cityscapes_fine_{task}_{split}"
    for task in ("instance_seg", "sem_seg")
    for split in ("train", "val", "test")
] + [
    f"cityscapes_fine_panoptic{form}_{split}"
    for form in ("", "_separated")
    for split in ("train", "val")
]


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    """The fake tree, prepared by prepare_cityscapes.py and registered under the builtin names.

    The builtin registrations are restored afterwards.
    """
    root = tmp_path_factory.mktemp("datasets") / "cityscapes"
    _write_cityscapes(root)
    _prepare_module().main(["--root", str(root), "--splits", "val"])
    saved = {
        name: (DatasetCatalog.pop(name, None), MetadataCatalog.pop(name, None))
        for name in CITYSCAPES_NAMES
    }
    register_all_cityscapes(str(root))
    yield root
    for name, (loader, metadata) in saved.items():
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)
        if loader is not None:
            DatasetCatalog[name] = loader
        if metadata is not None:
            MetadataCatalog[name] = metadata


def _gt(root: Path, city: str, frame: str, suffix: str) -> np.ndarray:
    path = root / "gtFine" / "val" / city / f"{_prefix(city, frame)}_gtFine_{suffix}.png"
    return np.asarray(Image.open(path))


def test_prepare_writes_train_ids_and_panoptic(cityscapes):
    root = cityscapes
    for (city, frame), objects in SCENES.items():
        expected_ids = _instance_ids(objects)
        train_ids = _gt(root, city, frame, "labelTrainIds")
        assert train_ids.dtype == np.uint8 and train_ids.shape == (H, W)
        np.testing.assert_array_equal(train_ids, TRAIN_ID_LUT[_label_ids(expected_ids)])
    first = _gt(root, "aachen", "000000", "labelTrainIds")
    assert first[0, 127] == 255  # unlabeled
    assert first[12, 46] == LABELS["pole"].trainId  # the pole is drawn over the sky
    assert first[51, 22] == LABELS["car"].trainId  # the license plate is not drawn
    truck_image = _gt(root, "bremen", "000000", "labelTrainIds")
    assert truck_image[40, 100] == 255  # caravan: not evaluated
    assert truck_image[5, 5] == LABELS["building"].trainId  # the deleted car is not drawn

    pan_root = root / "gtFine" / "cityscapes_panoptic_val"
    content = json.loads(pan_root.with_suffix(".json").read_text())
    assert len(content["categories"]) == 19
    assert {c["id"] for c in content["categories"]} == {
        lb.id for lb in CITYSCAPES_LABELS if not lb.ignoreInEval
    }
    assert [a["image_id"] for a in content["annotations"]] == [
        _prefix(*key) for key in sorted(SCENES)
    ]
    for annotation in content["annotations"]:
        city, frame = annotation["image_id"].split("_")[:2]
        ids = _instance_ids(SCENES[city, frame])
        evaluated = TRAIN_ID_LUT[_label_ids(ids)] != 255
        png = rgb2id(np.asarray(Image.open(pan_root / annotation["file_name"])))
        np.testing.assert_array_equal(png, np.where(evaluated, ids, 0))
        segments = {s["id"]: s for s in annotation["segments_info"]}
        assert sorted(segments) == np.unique(ids[evaluated]).tolist()
        for segment_id, segment in segments.items():
            assert segment["category_id"] == _label_ids(np.array(segment_id))
            assert segment["area"] == int((ids == segment_id).sum())
            is_thing = ID_TO_LABEL[segment["category_id"]].hasInstances
            assert segment["iscrowd"] == int(is_thing and segment_id < 1000)
    crowd = {s["id"]: s for s in content["annotations"][1]["segments_info"]}[LABELS["person"].id]
    assert crowd["iscrowd"] == 1 and crowd["bbox"] == [60, 20, 20, 26]


def test_build_evaluator_types(cityscapes):
    cfg = get_cfg()
    expected = {
        "cityscapes_fine_instance_seg_val": CityscapesInstanceEvaluator,
        "cityscapes_fine_sem_seg_val": CityscapesSemSegEvaluator,
        "cityscapes_fine_panoptic_val": COCOPanopticEvaluator,
    }
    for name, cls in expected.items():
        assert type(build_evaluator(cfg, name)) is cls


def _one_hot_scores(train_ids: np.ndarray) -> torch.Tensor:
    """19×H×W scores whose argmax is ``train_ids`` (255 pixels score 0 everywhere)."""
    scores = torch.zeros(19, *train_ids.shape)
    for train_id in np.unique(train_ids[train_ids != 255]).tolist():
        scores[train_id][torch.from_numpy(train_ids == train_id)] = 1.0
    return scores


def _run(evaluator, inputs: list[dict], outputs: list[dict]) -> dict:
    evaluator.reset()
    for inp, out in zip(inputs, outputs):
        evaluator.process([inp], [out])
    return evaluator.evaluate()


def test_sem_seg_evaluator_official_iou(cityscapes, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    dicts = DatasetCatalog.get("cityscapes_fine_sem_seg_val")
    assert len(dicts) == 3
    train_ids = [np.asarray(Image.open(d["sem_seg_file_name"])) for d in dicts]
    evaluator = build_evaluator(get_cfg(), "cityscapes_fine_sem_seg_val")

    perfect = _run(evaluator, dicts, [{"sem_seg": _one_hot_scores(t)} for t in train_ids])
    assert perfect["sem_seg"] == pytest.approx(
        {"IoU": 100.0, "iIoU": 100.0, "IoU_sup": 100.0, "iIoU_sup": 100.0}
    )

    # Every person pixel (the instance and the crowd) predicted as road: person's IoU is 0 and
    # road's falls to road / (road + person) pixels; the other classes stay at 1.
    wrong = [np.where(t == PERSON, ROAD, t) for t in train_ids]
    result = _run(evaluator, dicts, [{"sem_seg": _one_hot_scores(t)} for t in wrong])
    all_ids = np.stack(train_ids)
    present = np.unique(all_ids[all_ids != 255])
    road, person = int((all_ids == ROAD).sum()), int((all_ids == PERSON).sum())
    expected = (len(present) - 2 + road / (road + person)) / len(present)
    assert result["sem_seg"]["IoU"] == pytest.approx(100 * expected)
    assert list(tmp_path.iterdir()) == []  # nothing written to the current folder


def _perfect_instances(root: Path, record: dict, thing_classes: list[str]) -> Instances:
    """One prediction (score 1) per ground-truth instance of an evaluated thing class."""
    city, frame = Path(record["file_name"]).name.split("_")[:2]
    ids = _gt(root, city, frame, "instanceIds").astype(np.int64)
    masks, classes = [], []
    for instance_id in np.unique(ids[ids >= 1000]).tolist():
        name = ID_TO_LABEL[instance_id // 1000].name
        if name in thing_classes:
            masks.append(ids == instance_id)
            classes.append(thing_classes.index(name))
    instances = Instances((record["height"], record["width"]))
    instances.pred_masks = torch.from_numpy(np.stack(masks))
    instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
    instances.scores = torch.ones(len(classes))
    return instances


def _ap_classes() -> set[str]:
    """The evaluated thing classes with a ground-truth instance of at least 100 pixels."""
    names = set()
    for objects in SCENES.values():
        ids = _instance_ids(objects)
        for instance_id in np.unique(ids[ids >= 1000]).tolist():
            label = ID_TO_LABEL[instance_id // 1000]
            if not label.ignoreInEval and (ids == instance_id).sum() >= 100:
                names.add(label.name)
    return names


def test_instance_evaluator_official_ap(cityscapes, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    dicts = DatasetCatalog.get("cityscapes_fine_instance_seg_val")
    thing_classes = MetadataCatalog.get("cityscapes_fine_instance_seg_val").thing_classes
    predictions = [_perfect_instances(cityscapes, d, thing_classes) for d in dicts]
    assert sum(len(p) for p in predictions) == 7  # the caravan is not a thing class
    evaluator = build_evaluator(get_cfg(), "cityscapes_fine_instance_seg_val")

    # Every evaluated class is found with IoU 1 at score 1; the 64-pixel bicycle is ignored.
    result = _run(evaluator, dicts, [{"instances": p} for p in predictions])
    assert result["segm"] == pytest.approx({"AP": 100.0, "AP50": 100.0})

    # Without the car predictions, car's AP is 0; the AP is the mean over the classes with
    # ground truth (of at least 100 pixels), the others being NaN: 4 / 5.
    assert _ap_classes() == {"person", "rider", "car", "truck", "bicycle"}
    car = thing_classes.index("car")
    without_cars = [p[p.pred_classes != car] for p in predictions]
    result = _run(evaluator, dicts, [{"instances": p} for p in without_cars])
    assert result["segm"] == pytest.approx({"AP": 80.0, "AP50": 80.0})
    assert list(tmp_path.iterdir()) == []  # the script's matches.json went to its temp folder


def _panoptic_output(record: dict, label_divisor: int | None) -> dict:
    """The ground truth of ``record`` as a panoptic prediction, crowd regions left VOID.

    With a ``label_divisor``, the ids are ``train id * label_divisor + instance`` (-1: VOID)
    and ``segments_info`` is None, as Panoptic-DeepLab returns them.
    """
    ids = rgb2id(np.asarray(Image.open(record["pan_seg_file_name"]))).astype(np.int64)
    segments = [s for s in record["segments_info"] if not s["iscrowd"]]
    if label_divisor is None:
        kept = np.isin(ids, [s["id"] for s in segments])
        info = [{k: s[k] for k in ("id", "category_id", "isthing")} for s in segments]
        return {"panoptic_seg": (torch.from_numpy(np.where(kept, ids, 0)), info)}
    encoded = np.full(ids.shape, -1, dtype=np.int64)
    for instance, segment in enumerate(segments, start=1):
        value = segment["category_id"] * label_divisor + (instance if segment["isthing"] else 0)
        encoded[ids == segment["id"]] = value
    return {"panoptic_seg": (torch.from_numpy(encoded), None)}


@pytest.mark.parametrize("with_segments_info", [True, False])
def test_panoptic_evaluator_perfect_pq(cityscapes, with_segments_info):
    name = "cityscapes_fine_panoptic_val"
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == [_prefix(*key) for key in sorted(SCENES)]
    label_divisor = None if with_segments_info else MetadataCatalog.get(name).label_divisor
    evaluator = build_evaluator(get_cfg(), name)
    result = _run(evaluator, dicts, [_panoptic_output(d, label_divisor) for d in dicts])
    for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"):
        assert result["panoptic_seg"][key] == pytest.approx(100.0), key


def test_evaluators_score_only_the_processed_images(cityscapes, monkeypatch, tmp_path):
    # aachen_000001 is never processed (as when the test loader skips it as unreadable): the
    # scripts neither fail for want of its prediction nor count its objects as missed.
    monkeypatch.chdir(tmp_path)
    skipped = _prefix("aachen", "000001")

    dicts = [
        d
        for d in DatasetCatalog.get("cityscapes_fine_sem_seg_val")
        if skipped not in d["file_name"]
    ]
    assert len(dicts) == 2
    train_ids = [np.asarray(Image.open(d["sem_seg_file_name"])) for d in dicts]
    evaluator = build_evaluator(get_cfg(), "cityscapes_fine_sem_seg_val")
    wrong = [np.where(t == PERSON, ROAD, t) for t in train_ids]
    result = _run(evaluator, dicts, [{"sem_seg": _one_hot_scores(t)} for t in wrong])
    all_ids = np.stack(train_ids)  # of the two processed images only
    present = np.unique(all_ids[all_ids != 255])
    road, person = int((all_ids == ROAD).sum()), int((all_ids == PERSON).sum())
    expected = (len(present) - 2 + road / (road + person)) / len(present)
    assert result["sem_seg"]["IoU"] == pytest.approx(100 * expected)

    name = "cityscapes_fine_instance_seg_val"
    dicts = [d for d in DatasetCatalog.get(name) if skipped not in d["file_name"]]
    thing_classes = MetadataCatalog.get(name).thing_classes
    predictions = [_perfect_instances(cityscapes, d, thing_classes) for d in dicts]
    evaluator = build_evaluator(get_cfg(), name)
    result = _run(evaluator, dicts, [{"instances": p} for p in predictions])
    assert result["segm"] == pytest.approx({"AP": 100.0, "AP50": 100.0})
    # Without cars: person, car and truck have ground truth in the processed images (rider
    # and bicycle only in the skipped one), so the AP is 2 / 3.
    car = thing_classes.index("car")
    without_cars = [p[p.pred_classes != car] for p in predictions]
    result = _run(evaluator, dicts, [{"instances": p} for p in without_cars])
    assert result["segm"] == pytest.approx({"AP": 200 / 3, "AP50": 200 / 3})
    assert list(tmp_path.iterdir()) == []
