"""Median frequency balancing weights (class_weights.py) and their command-line script."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segtron.data import DatasetCatalog
from segtron.projects.semantic_baselines.class_weights import median_frequency_weights

REPO = Path(__file__).resolve().parents[3]


def write_labels(folder: Path, name: str, labels: np.ndarray) -> dict:
    path = folder / f"{name}.png"
    Image.fromarray(labels.astype(np.uint8)).save(path)
    return {"file_name": str(folder / f"{name}.jpg"), "sem_seg_file_name": str(path)}


@pytest.fixture
def two_images(tmp_path: Path) -> list[dict]:
    first = np.zeros((4, 4))
    first[0] = 1  # 12 pixels of class 0, 4 of class 1
    second = np.zeros((4, 4))
    second[:2, :3] = 2  # 6 pixels of class 2, 8 of class 0, 2 unlabelled
    second[3, :2] = 255
    return [write_labels(tmp_path, "a", first), write_labels(tmp_path, "b", second)]


def test_median_frequency_weights_by_hand(two_images: list[dict]) -> None:
    weights = median_frequency_weights(two_images, num_classes=4)
    # freq = class pixels / labelled pixels of the images holding the class:
    # class 0: 20 / (16 + 14), class 1: 4 / 16, class 2: 6 / 14 (the median); class 3: absent.
    median = 6 / 14
    expected = [median / (20 / 30), median / (4 / 16), 1.0, 0.0]
    np.testing.assert_allclose(weights, expected, rtol=1e-9)


def test_median_frequency_weights_reject_bad_labels(two_images: list[dict]) -> None:
    with pytest.raises(ValueError, match=r"b\.png has label 2, not a class of 2"):
        median_frequency_weights(two_images, num_classes=2)
    with pytest.raises(ValueError, match="no 'sem_seg_file_name'"):
        median_frequency_weights([{"file_name": "x.jpg"}], num_classes=2)
    with pytest.raises(FileNotFoundError):
        median_frequency_weights([{"sem_seg_file_name": "missing.png"}], num_classes=2)


def test_script_prints_the_config_option(two_images: list[dict], capsys) -> None:
    spec = importlib.util.spec_from_file_location(
        "compute_class_weights", REPO / "projects/SemanticBaselines/compute_class_weights.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    name = "class_weights_test_train"
    DatasetCatalog.register(name, lambda: two_images)
    config = str(REPO / "configs/Synthetic/unet.yaml")
    overrides = ["DATASETS.TRAIN", f"('{name}',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"]
    try:
        assert script.main(["--config-file", config, *overrides]) == 0
    finally:
        DatasetCatalog.remove(name)
    median = 6 / 14
    expected = [median / (20 / 30), median / (4 / 16), 1.0]
    printed = capsys.readouterr().out.strip()
    assert (
        printed
        == "MODEL.PIXEL_CLASSIFIER.CLASS_WEIGHTS [" + ",".join(f"{w:.3f}" for w in expected) + "]"
    )
