"""Missing or corrupt images neither stop training nor inference: they are skipped and reported."""

from __future__ import annotations

import logging
import os
import pickle
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from segtron.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from segtron.data.common import InferenceBatch, InferenceBatchCollator, SkippedImage
from segtron.data.detection_utils import ImageReadError, read_image
from segtron.data.samplers import TrainingSampler
from segtron.evaluation import DatasetEvaluator, SemSegEvaluator, inference_on_dataset

NUM_CLASSES = 3
H, W = 16, 24


def _write_dataset(root) -> tuple[list[dict], dict[str, str]]:
    """Six JPEG images with label PNGs; image 1 is missing and image 3 is a truncated JPEG.

    Returns the dataset dicts and the bad files ({"missing": path, "truncated": path}).
    """
    dicts = []
    for i in range(6):
        image_path = root / f"{i}.jpg"
        label_path = root / f"{i}_label.png"
        Image.fromarray(np.full((H, W, 3), 40 * i, dtype=np.uint8)).save(image_path, quality=95)
        label = np.zeros((H, W), dtype=np.uint8)
        label[:, W // 2 :] = 1 + i % 2
        Image.fromarray(label).save(label_path)
        dicts.append(
            {
                "file_name": str(image_path),
                "sem_seg_file_name": str(label_path),
                "image_id": i,
                "height": H,
                "width": W,
            }
        )
    os.remove(dicts[1]["file_name"])
    data = open(dicts[3]["file_name"], "rb").read()
    with open(dicts[3]["file_name"], "wb") as f:
        f.write(data[: len(data) // 3])
    return dicts, {"missing": dicts[1]["file_name"], "truncated": dicts[3]["file_name"]}


def _mapper(is_train: bool) -> DatasetMapper:
    return DatasetMapper(is_train, augmentations=[], image_format="BGR")


def _warnings_naming(caplog, path: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and path in r.getMessage()]


def _train_batches(dicts: list[dict], num_batches: int, mapper=None) -> list[list[str]]:
    loader = build_detection_train_loader(
        dicts,
        mapper=mapper or _mapper(True),
        sampler=TrainingSampler(len(dicts), seed=3),
        total_batch_size=2,
        aspect_ratio_grouping=False,
        seed=3,
    )
    iterator = iter(loader)
    return [[d["file_name"] for d in next(iterator)] for _ in range(num_batches)]


def test_train_loader_skips_unreadable_images_and_warns_once(tmp_path, caplog):
    dicts, bad = _write_dataset(tmp_path)
    with caplog.at_level(logging.WARNING, logger="segtron"):
        batches = _train_batches(dicts, 12)
    good = {d["file_name"] for i, d in enumerate(dicts) if i not in (1, 3)}
    assert all(len(b) == 2 and set(b) <= good for b in batches)
    with pytest.raises(ImageReadError) as decode_error:
        read_image(bad["truncated"])
    decode_reason = str(decode_error.value.__cause__)
    for reason, path in (("not found", bad["missing"]), (decode_reason, bad["truncated"])):
        records = _warnings_naming(caplog, path)
        assert len(records) == 1, f"{path} drawn but not warned once: {caplog.text}"
        assert reason in records[0].getMessage()
    # Reproducible: the element drawn instead of a bad one depends only on the seed.
    assert _train_batches(dicts, 12) == batches


def test_train_loader_skips_a_missing_label_png(tmp_path, caplog):
    dicts, _ = _write_dataset(tmp_path)
    good = [dicts[i] for i in (0, 2, 4, 5)]
    os.remove(good[0]["sem_seg_file_name"])
    with caplog.at_level(logging.WARNING, logger="segtron"):
        batches = _train_batches(good, 6)
    assert good[0]["file_name"] not in {name for batch in batches for name in batch}
    assert _warnings_naming(caplog, good[0]["sem_seg_file_name"])


def test_other_errors_still_propagate(tmp_path):
    dicts, _ = _write_dataset(tmp_path)

    def other_file(dataset_dict):
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "lexicon.txt"))

    for d in dicts:  # a corrupt side file whose path starts with the image's own path
        with open(d["file_name"] + ".extra.png", "wb") as f:
            f.write(b"not a png")

    def corrupt_other_file(dataset_dict):
        return read_image(dataset_dict["file_name"] + ".extra.png")

    def bug(dataset_dict):
        raise ValueError("a bug in the mapper")

    with pytest.raises(FileNotFoundError, match="lexicon.txt"):
        _train_batches(dicts, 1, mapper=other_file)
    with pytest.raises(ImageReadError, match=r"\.extra\.png"):
        _train_batches(dicts, 1, mapper=corrupt_other_file)
    with pytest.raises(ValueError, match="a bug in the mapper"):
        _train_batches(dicts, 1, mapper=bug)


def test_train_loader_with_only_unreadable_images_raises(tmp_path):
    dicts, _ = _write_dataset(tmp_path)
    with pytest.raises(RuntimeError, match="every element tried"):
        _train_batches([dicts[1], dicts[3]], 1)


class _PerfectSemSegModel(torch.nn.Module):
    """Predicts each image's label map exactly (read from the test's label files)."""

    def __init__(self, labels: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.labels = labels
        self.seen: list[str] = []

    def forward(self, batch: list[dict]) -> list[dict]:
        outputs = []
        for d in batch:
            self.seen.append(d["file_name"])
            label = torch.as_tensor(self.labels[d["file_name"]].astype(np.int64))
            scores = torch.nn.functional.one_hot(label, NUM_CLASSES).permute(2, 0, 1).float()
            outputs.append({"sem_seg": scores})
        return outputs


class _RecordingEvaluator(DatasetEvaluator):
    def reset(self) -> None:
        self.image_ids: list[int] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        self.image_ids += [d["image_id"] for d in inputs]

    def evaluate(self) -> dict:
        return {"seen": {"image_ids": sorted(self.image_ids)}}


@pytest.mark.parametrize("batch_size", [1, 2])
def test_inference_skips_unreadable_images_and_reports_them(tmp_path, caplog, batch_size):
    dicts, bad = _write_dataset(tmp_path)
    name = f"_segtron_test_unreadable_{uuid.uuid4().hex}"
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], ignore_label=255)
    try:
        labels = {d["file_name"]: np.asarray(Image.open(d["sem_seg_file_name"])) for d in dicts}
        model = _PerfectSemSegModel(labels)
        loader = build_detection_test_loader(dicts, mapper=_mapper(False), batch_size=batch_size)
        sem_seg = SemSegEvaluator(name, distributed=False)
        with caplog.at_level(logging.WARNING, logger="segtron"):
            results = inference_on_dataset(model, loader, [_RecordingEvaluator(), sem_seg])
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    good_ids = [0, 2, 4, 5]
    assert results["seen"]["image_ids"] == good_ids
    assert sorted(model.seen) == sorted(dicts[i]["file_name"] for i in good_ids)
    # The confusion matrix holds the pixels of the four processed images only.
    assert sem_seg._conf_matrix.sum() == len(good_ids) * H * W
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)
    summary = [r.getMessage() for r in caplog.records if "Skipped 2 unreadable" in r.getMessage()]
    assert len(summary) == 1
    assert bad["missing"] in summary[0] and bad["truncated"] in summary[0]
    assert _warnings_naming(caplog, bad["truncated"])


def test_inference_batch_collation():
    skipped = SkippedImage("/data/x.jpg", "Image file not found")
    batch = InferenceBatchCollator()([{"a": 1}, skipped, {"a": 2}])
    assert isinstance(batch, InferenceBatch) and batch == [{"a": 1}, {"a": 2}]
    restored = pickle.loads(pickle.dumps(batch))  # as sent back by a DataLoader worker
    assert restored == batch and restored.skipped == [skipped]
    assert InferenceBatchCollator()([{"a": 1}]) == [{"a": 1}]
    custom = InferenceBatchCollator(lambda items: tuple(d["a"] for d in items))
    assert custom([{"a": 1}, skipped]) == (1,)
    empty = custom([skipped])
    assert empty == [] and empty.skipped == [skipped]
