"""Tests of `PanopticSeparatedDatasetMapper` and the Cityscapes separated panoptic datasets."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segtron.config import get_cfg
from segtron.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    PanopticSeparatedDatasetMapper,
)
from segtron.data.datasets import get_synthetic_metadata, register_synthetic
from segtron.data.datasets.cityscapes import get_cityscapes_metadata, register_all_cityscapes
from segtron.data.datasets.coco_panoptic import load_coco_panoptic_json
from segtron.data.panoptic_separated_mapper import separate_panoptic
from segtron.evaluation import build_evaluator
from segtron.utils.panoptic import rgb2id

REPO = Path(__file__).resolve().parents[2]
PREFIX = "sepmappertest"
# Standard-form dicts of the synthetic panoptic dataset, with the separated metadata.
STD_AS_SEPARATED = f"{PREFIX}_train_panoptic_standard_as_separated"
MAPPER_ARGS = {
    "augmentations": [],
    "image_format": "BGR",
    "use_instance_mask": True,
    "instance_mask_format": "bitmask",
}


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The fake Cityscapes tree of the Cityscapes loading tests.
_cityscapes = _load_module(
    "_cityscapes_tests", Path(__file__).with_name("test_cityscapes_datasets.py")
)
root = _cityscapes.root
fresh_names = _cityscapes.fresh_names  # unregisters the Cityscapes names during a test
CITY = _cityscapes.CITY
ID = _cityscapes.ID


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small synthetic dataset, and STD_AS_SEPARATED registered on its panoptic files."""
    if f"{PREFIX}_train_panoptic_separated" not in DatasetCatalog:
        register_synthetic(
            root=tmp_path_factory.mktemp("synthetic"),
            prefix=PREFIX,
            num_images={"train": 4, "val": 2},
            image_size=(64, 80),
        )
    standard = MetadataCatalog.get(f"{PREFIX}_train_panoptic")
    if STD_AS_SEPARATED not in DatasetCatalog:
        DatasetCatalog.get(f"{PREFIX}_train_panoptic")  # generates the files
        meta = get_synthetic_metadata("panoptic_separated")
        DatasetCatalog.register(
            STD_AS_SEPARATED,
            lambda: load_coco_panoptic_json(
                standard.panoptic_json, standard.image_root, standard.panoptic_root, meta
            ),
        )
        MetadataCatalog.get(STD_AS_SEPARATED).set(ignore_label=255, **meta)
    return DatasetCatalog.get(STD_AS_SEPARATED)


def _mask_set(instances) -> set[tuple[int, bytes]]:
    return {
        (int(c), m.numpy().tobytes())
        for c, m in zip(instances.gt_classes, instances.gt_masks.tensor, strict=True)
    }


def test_synthetic_standard_form_gives_the_separated_targets(synthetic):
    separated = {
        d["file_name"]: d for d in DatasetCatalog.get(f"{PREFIX}_train_panoptic_separated")
    }
    core, mapper = (
        DatasetMapper(True, **MAPPER_ARGS),
        PanopticSeparatedDatasetMapper(True, **MAPPER_ARGS),
    )
    num_instances, crowds, labels = 0, 0, set()
    for record in synthetic:
        expected = core(separated[record["file_name"]])
        got = mapper(record)
        assert torch.equal(got["image"], expected["image"])
        assert torch.equal(got["sem_seg"], expected["sem_seg"])
        assert _mask_set(got["instances"]) == _mask_set(expected["instances"])
        boxes = sorted(map(tuple, got["instances"].gt_boxes.tensor.tolist()))
        assert boxes == sorted(map(tuple, expected["instances"].gt_boxes.tensor.tolist()))
        assert "pan_seg_file_name" not in got and "sem_seg_file_name" not in got
        num_instances += len(got["instances"])
        crowds += sum(s["iscrowd"] for s in record["segments_info"])
        labels |= set(got["sem_seg"].unique().tolist())
    # Things, both stuff classes and crowds (things in sem_seg, no instance) occur.
    assert num_instances > 0 and crowds > 0 and labels >= {0, 1, 2}


def test_missing_panoptic_file_is_explained(synthetic):
    record = DatasetCatalog.get(f"{PREFIX}_train_panoptic_separated")[0]
    mapper = PanopticSeparatedDatasetMapper(True, **MAPPER_ARGS)
    with pytest.raises(KeyError, match=r"pan_seg_file_name.*'annotations'.*DatasetMapper"):
        mapper(record)
    with pytest.raises(ValueError, match="INPUT.MASK_FORMAT 'bitmask'"):
        PanopticSeparatedDatasetMapper(True, **(MAPPER_ARGS | {"instance_mask_format": "polygon"}))


def test_separate_panoptic_rejects_standard_metadata():
    ids = np.array([[1, 1, 2], [0, 2, 2]])
    segments = [
        {"id": 1, "category_id": 3, "isthing": True, "iscrowd": 0},
        {"id": 2, "category_id": 2, "isthing": False},
    ]
    sem_seg, annotations = separate_panoptic(ids, segments, ignore_label=255)
    np.testing.assert_array_equal(sem_seg, [[0, 0, 2], [255, 2, 2]])
    (thing,) = annotations
    assert (thing["category_id"], thing["iscrowd"], thing["bbox"]) == (3, 0, [0.0, 0.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="category_id=0"):
        separate_panoptic(ids, [{"id": 2, "category_id": 0, "isthing": False}])
    with pytest.raises(KeyError, match="isthing"):
        separate_panoptic(ids, [{"id": 2, "category_id": 1}])


def test_cityscapes_separated_metadata():
    meta = get_cityscapes_metadata("panoptic_separated")
    assert meta["thing_dataset_id_to_contiguous_id"] == {
        ID[name]: i
        for i, name in enumerate(
            ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
        )
    }
    stuff = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light"]
    stuff += ["traffic sign", "vegetation", "terrain", "sky"]
    assert meta["stuff_classes"] == ["things"] + stuff
    assert meta["stuff_dataset_id_to_contiguous_id"] == {0: 0} | {
        ID[name]: i for i, name in enumerate(stuff, start=1)
    }
    assert len(meta["stuff_colors"]) == 12 and len(meta["thing_colors"]) == 8


def test_cityscapes_separated_dataset_through_the_mapper(root, fresh_names):
    register_all_cityscapes(str(root))
    meta = MetadataCatalog.get("cityscapes_fine_panoptic_separated_train")
    assert meta.evaluator_type == "cityscapes_panoptic_seg"
    assert (meta.ignore_label, meta.label_divisor) == (255, 1000)
    assert meta.panoptic_json == str(root / "gtFine" / "cityscapes_panoptic_train.json")
    assert meta.panoptic_root == str(root / "gtFine" / "cityscapes_panoptic_train")
    assert meta.image_root == str(root / "leftImg8bit" / "train")
    dicts = DatasetCatalog.get("cityscapes_fine_panoptic_separated_train")
    mapper = PanopticSeparatedDatasetMapper(True, **MAPPER_ARGS)
    # Separated labels expected of each pixel of the instanceIds PNG: the stuff classes present
    # (road, pole, sky, building) -> 1..11, things (crowds too) -> 0, the rest (caravan) 255.
    stuff = {ID["road"]: 1, ID["pole"]: 6, ID["sky"]: 11, ID["building"]: 3}
    things = {ID[n] for n in ("person", "rider", "car", "truck")}
    expected_instances = [
        [(0, [30, 4, 40, 28], 240), (2, [4, 10, 28, 26], 320)],  # person; car cut by a pole
        [(1, [10, 5, 20, 15], 100)],  # rider; the car crowd gives no instance
    ]
    for record, expected in zip(dicts, expected_instances, strict=True):
        out = mapper(record)
        gt_file = root / "gtFine" / "train" / CITY / record["image_id"]
        ids = np.asarray(Image.open(f"{gt_file}_gtFine_instanceIds.png"), dtype=np.int64)
        label_ids = np.where(ids >= 1000, ids // 1000, ids)
        labels = np.full(ids.shape, 255)
        for label_id in np.unique(label_ids).tolist():
            if label_id in stuff:
                labels[label_ids == label_id] = stuff[label_id]
            elif label_id in things:
                labels[label_ids == label_id] = 0
        np.testing.assert_array_equal(out["sem_seg"].numpy(), labels)
        instances = out["instances"]
        got = sorted(
            (int(c), b.tolist(), int(m.sum()))
            for c, b, m in zip(
                instances.gt_classes, instances.gt_boxes.tensor, instances.gt_masks.tensor
            )
        )
        assert got == expected
    # The standard dataset's stuff ids start at 0 (road), which here would mean "things".
    standard = DatasetCatalog.get("cityscapes_fine_panoptic_train")
    with pytest.raises(ValueError, match="category_id=0"):
        mapper(standard[0])


def test_cityscapes_separated_predictions_score_against_the_panoptic_json(root, fresh_names):
    """Predictions in UPSNet's ids (things 0..7, stuff 1..11) map back to Cityscapes label ids."""
    register_all_cityscapes(str(root))
    name = "cityscapes_fine_panoptic_separated_train"
    dicts = DatasetCatalog.get(name)

    def score(relabel):
        evaluator = build_evaluator(get_cfg(), name)
        for record in dicts:
            rgb = np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB"))
            segments = [
                {"id": s["id"], "category_id": relabel(s), "isthing": s["isthing"]}
                for s in record["segments_info"]
            ]
            evaluator.process([record], [{"panoptic_seg": (rgb2id(rgb), segments)}])
        return evaluator.evaluate()["panoptic_seg"]

    perfect = score(lambda s: s["category_id"])
    assert perfect["PQ"] == pytest.approx(100) and perfect["PQ_th"] == pytest.approx(100)
    # The car (2) called a truck (3): one thing false positive and one false negative.
    wrong = score(lambda s: 3 if s["isthing"] and s["category_id"] == 2 else s["category_id"])
    assert wrong["PQ_st"] == pytest.approx(100) and wrong["PQ_th"] < 100


def test_upsnet_trains_through_train_net_with_the_mapper(synthetic, tmp_path):
    train_net = _load_module("_sepmapper_train_net", REPO / "tools" / "train_net.py")
    args = train_net.default_argument_parser().parse_args(
        [
            "--config-file",
            str(REPO / "configs" / "Synthetic" / "upsnet_R_18.yaml"),
            "INPUT.DATASET_MAPPER_NAME",
            "PanopticSeparatedDatasetMapper",
            "INPUT.MIN_SIZE_TRAIN",
            "(64,)",
            "INPUT.MIN_SIZE_TEST",
            "64",
            "SOLVER.MAX_ITER",
            "2",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "DATALOADER.NUM_WORKERS",
            "0",
            "MODEL.UPSNET.STUFF_AREA_LIMIT",
            "16",
            "DATASETS.TRAIN",
            f"('{STD_AS_SEPARATED}',)",
            "DATASETS.TEST",
            f"('{PREFIX}_val_panoptic_separated',)",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ]
    )
    results = train_net.main(args)
    assert (tmp_path / "out" / "model_final.pth").is_file()
    assert {"PQ", "PQ_th", "PQ_st"} <= set(results["panoptic_seg"])
