"""Tests of segtron.data.build and segtron.data.common with a tiny registered dataset."""

from __future__ import annotations

import itertools
import os
import pickle
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from segtron.config import get_cfg
from segtron.data import (
    DATASET_MAPPER_REGISTRY,
    DatasetCatalog,
    DatasetFromList,
    DatasetMapper,
    MapDataset,
    MetadataCatalog,
    build_batch_data_loader,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    load_proposals_into_dataset,
)
from segtron.data.samplers import TrainingSampler
from segtron.structures import BoxMode
from segtron.utils import comm
from segtron.utils.safe_pickle import ForbiddenGlobalError

# (height, width) of each image: landscape and portrait mixed.
SIZES = [(20, 30), (30, 20), (24, 32), (32, 24), (20, 30), (30, 20)]


def _make_dicts(root) -> list[dict]:
    dicts = []
    for i, (h, w) in enumerate(SIZES):
        path = root / f"{i}.png"
        Image.fromarray(np.full((h, w, 3), i * 10, dtype=np.uint8)).save(path)
        anno = {"bbox": [2, 2, 8, 8], "bbox_mode": BoxMode.XYWH_ABS, "category_id": i % 2}
        dicts.append(
            {"file_name": str(path), "image_id": i, "height": h, "width": w, "annotations": [anno]}
        )
    crowd = dict(dicts[0], image_id=99)
    crowd["annotations"] = [dict(crowd["annotations"][0], iscrowd=1)]
    dicts.append(crowd)  # only crowd annotations: filtered out for training
    return dicts


@pytest.fixture
def dataset_name(tmp_path):
    name = f"_segtron_test_tiny_{uuid.uuid4().hex}"
    dicts = _make_dicts(tmp_path)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).thing_classes = ["a", "b"]
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _cfg(name: str, workers: int = 0):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATASETS.TEST = (name,)
    cfg.INPUT.MIN_SIZE_TRAIN = (16,)
    cfg.INPUT.MIN_SIZE_TEST = 16
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = workers
    return cfg


def test_get_detection_dataset_dicts(dataset_name) -> None:
    assert len(get_detection_dataset_dicts(dataset_name)) == len(SIZES)
    assert len(get_detection_dataset_dicts([dataset_name], filter_empty=False)) == len(SIZES) + 1
    empty = f"_segtron_test_empty_{uuid.uuid4().hex}"
    DatasetCatalog.register(empty, lambda: [])
    try:
        with pytest.raises(ValueError, match=empty):
            get_detection_dataset_dicts(empty)
    finally:
        DatasetCatalog.remove(empty)


def test_train_loader_groups_by_aspect_ratio(dataset_name) -> None:
    loader = build_detection_train_loader(_cfg(dataset_name))
    for batch in itertools.islice(loader, 6):
        assert len(batch) == 2
        landscape = {d["width"] > d["height"] for d in batch}
        assert len(landscape) == 1
        for d in batch:
            assert d["image"].dtype == torch.uint8 and min(d["image"].shape[1:]) == 16
            assert len(d["instances"]) == 1 and d["image_id"] != 99


def test_train_loader_with_workers_is_seeded(dataset_name) -> None:
    def mapper(d: dict) -> dict:
        return {"image_id": d["image_id"], "draw": int(np.random.randint(1 << 30))}

    def run() -> list[tuple[int, int]]:
        loader = build_detection_train_loader(
            get_detection_dataset_dicts(dataset_name),
            mapper=mapper,
            sampler=TrainingSampler(len(SIZES), seed=0),
            total_batch_size=2,
            aspect_ratio_grouping=False,
            num_workers=2,
            seed=123,
        )
        return [(d["image_id"], d["draw"]) for b in itertools.islice(loader, 4) for d in b]

    first = run()
    assert all(len(x) == 2 for x in first) and len(first) == 8
    assert first == run()  # same seed: same data order and same random draws
    # Batches alternate between the two workers, whose RNGs are seeded differently.
    draws = [draw for _, draw in first]
    assert len(set(draws)) == len(draws)


def test_batch_size_must_divide_world_size(monkeypatch) -> None:
    monkeypatch.setattr(comm, "get_world_size", lambda: 3)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        build_batch_data_loader(DatasetFromList([1, 2, 3]), TrainingSampler(3, seed=0), 4)


def test_test_loader_visits_each_image_once(dataset_name) -> None:
    loader = build_detection_test_loader(_cfg(dataset_name), dataset_name)
    batches = list(loader)
    assert all(len(b) == 1 for b in batches)
    assert sorted(b[0]["image_id"] for b in batches) == [*range(len(SIZES)), 99]
    assert all("instances" not in b[0] for b in batches)


def test_map_dataset_retries_when_mapper_returns_none(caplog) -> None:
    dataset = MapDataset(DatasetFromList(list(range(6))), lambda x: x if x >= 4 else None)
    assert dataset[0] in (4, 5)
    assert all(dataset[i] in (4, 5) for i in range(6))
    failing = MapDataset(DatasetFromList([1, 2]), lambda x: None)
    with pytest.raises(RuntimeError, match="None"):
        failing[0]


def test_dataset_from_list_serializes_copies() -> None:
    items = [{"a": [1, 2]}, {"b": 3}]
    for serialize in (True, False):
        dataset = DatasetFromList(items, copy=True, serialize=serialize)
        assert len(dataset) == 2 and dataset[1] == {"b": 3}
        dataset[0]["a"].append(9)
        assert items[0] == {"a": [1, 2]}


def test_load_proposals_reads_plain_pickles_and_refuses_code(tmp_path):
    proposals = {
        "ids": [7, 8],
        "boxes": [np.zeros((2, 4), np.float32), np.ones((1, 4), np.float32)],
        "objectness_logits": [np.array([0.5, 0.1], np.float32), np.array([0.9], np.float32)],
    }
    good = tmp_path / "proposals.pkl"
    good.write_bytes(pickle.dumps(proposals))
    dicts = load_proposals_into_dataset([{"image_id": 8}, {"image_id": 7}], str(good))
    np.testing.assert_array_equal(dicts[0]["proposal_boxes"], np.ones((1, 4), np.float32))
    np.testing.assert_array_equal(
        dicts[1]["proposal_objectness_logits"], np.array([0.5, 0.1], np.float32)
    )

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"ids": Evil()}))
    with pytest.raises(ForbiddenGlobalError, match="evil.pkl"):
        load_proposals_into_dataset([{"image_id": 1}], str(evil))
    assert not marker.exists()


def test_train_loader_uses_the_mapper_that_the_config_names(dataset_name, monkeypatch) -> None:
    class _TaggingMapper(DatasetMapper):
        def __call__(self, dataset_dict: dict) -> dict:
            return {**super().__call__(dataset_dict), "tagged_by": "mapper"}

    monkeypatch.setitem(DATASET_MAPPER_REGISTRY._obj_map, "_TaggingMapper", _TaggingMapper)
    cfg = _cfg(dataset_name)
    cfg.INPUT.DATASET_MAPPER_NAME = "_TaggingMapper"
    batch = next(iter(build_detection_train_loader(cfg)))
    assert [d["tagged_by"] for d in batch] == ["mapper", "mapper"]

    cfg.INPUT.DATASET_MAPPER_NAME = "NoSuchMapper"
    with pytest.raises(
        KeyError, match=r"INPUT\.DATASET_MAPPER_NAME = 'NoSuchMapper'.*DatasetMapper"
    ):
        build_detection_train_loader(cfg)
