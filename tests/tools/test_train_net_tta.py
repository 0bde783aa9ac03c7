"""Tests of test-time augmentation in tools/train_net.py (TEST.AUG.ENABLED) on tiny synthetic
data (CPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from segtron.data import DatasetCatalog
from segtron.data.datasets import register_synthetic

REPO = Path(__file__).resolve().parents[2]
PREFIX = "ttatest"
TINY_OPTS = [
    "INPUT.MIN_SIZE_TRAIN",
    "(32,)",
    "INPUT.MIN_SIZE_TEST",
    "32",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "DATALOADER.NUM_WORKERS",
    "0",
    "TEST.AUG.ENABLED",
    "True",
    "TEST.AUG.MIN_SIZES",
    "(24,40)",
    "TEST.AUG.MAX_SIZE",
    "64",
    "DATASETS.TRAIN",
    f"('{PREFIX}_train_sem_seg',)",
    "DATASETS.TEST",
    f"('{PREFIX}_val_sem_seg',)",
]


@pytest.fixture(scope="module")
def train_net(tmp_path_factory):
    if f"{PREFIX}_train_sem_seg" not in DatasetCatalog:
        register_synthetic(
            root=tmp_path_factory.mktemp("tta_data"),
            prefix=PREFIX,
            num_images={"train": 4, "val": 2},
            image_size=(32, 40),
        )
    spec = importlib.util.spec_from_file_location("_tta_train_net", REPO / "tools" / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(train_net, config: str, *opts: str, eval_only: bool = False):
    flags = ["--config-file", str(REPO / "configs" / "Synthetic" / config)]
    flags += ["--eval-only"] if eval_only else []
    args = train_net.default_argument_parser().parse_args([*flags, *TINY_OPTS, *opts])
    return train_net.main(args)


def test_eval_only_with_tta(train_net, tmp_path) -> None:
    out = tmp_path / "eval"
    results = _run(train_net, "semantic_R_18_FPN.yaml", "OUTPUT_DIR", str(out), eval_only=True)
    assert set(results) == {"sem_seg", "sem_seg_TTA"}
    for key in results:
        assert 0 <= results[key]["mIoU"] <= 100 and 0 <= results[key]["pACC"] <= 100
    final = json.loads((out / "final_results.json").read_text())
    assert final["sem_seg_TTA"]["mIoU"] == pytest.approx(results["sem_seg_TTA"]["mIoU"])
    assert (out / "inference_TTA" / f"{PREFIX}_val_sem_seg").is_dir()


@pytest.mark.slow
def test_periodic_evaluation_with_tta_is_recorded(train_net, tmp_path) -> None:
    out = tmp_path / "train"
    opts = ["SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "1", "OUTPUT_DIR", str(out)]
    results = _run(train_net, "semantic_R_18_FPN.yaml", *opts)
    assert set(results) == {"sem_seg", "sem_seg_TTA"}
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    # Periodic (after the first iteration) and final evaluations, plain and with TTA; the
    # writers record both.
    iterations = {
        key: [m["iteration"] for m in metrics if key in m]
        for key in ("sem_seg/mIoU", "sem_seg_TTA/mIoU")
    }
    assert iterations["sem_seg_TTA/mIoU"] == iterations["sem_seg/mIoU"] == [0, 2]


def test_model_without_sem_seg_names_the_key(train_net, tmp_path) -> None:
    opts = ["OUTPUT_DIR", str(tmp_path / "rcnn"), "DATASETS.TEST", f"('{PREFIX}_val',)"]
    with pytest.raises(ValueError, match=r"TEST\.AUG\.ENABLED False") as info:
        _run(train_net, "mask_rcnn_R_18_FPN.yaml", *opts, eval_only=True)
    assert "GeneralizedRCNN returned ['instances']" in str(info.value)
