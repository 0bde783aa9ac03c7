"""One training step and an evaluation of SOLOv2 through tools/train_net.py on tiny data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from segtron.data import DatasetCatalog
from segtron.data.datasets import register_synthetic

REPO = Path(__file__).resolve().parents[3]
PREFIX = "solov2test"


@pytest.mark.slow
def test_train_net_trains_and_evaluates_solov2(tmp_path_factory) -> None:
    if f"{PREFIX}_train" not in DatasetCatalog:
        register_synthetic(
            root=tmp_path_factory.mktemp("solov2_data"),
            prefix=PREFIX,
            num_images={"train": 4, "val": 2},
            image_size=(64, 80),
        )
    spec = importlib.util.spec_from_file_location("_solov2_train_net", REPO / "tools/train_net.py")
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    out = tmp_path_factory.mktemp("solov2_train")
    args = train_net.default_argument_parser().parse_args(
        [
            "--config-file", str(REPO / "configs/Synthetic/solov2_R_18.yaml"),
            "DATASETS.TRAIN", f"('{PREFIX}_train',)", "DATASETS.TEST", f"('{PREFIX}_val',)",
            "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
            "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
            # After one step nothing passes the thresholds; keep every candidate instead.
            "MODEL.SOLOV2.SCORE_THR", "0.0", "MODEL.SOLOV2.MASK_THR", "0.0",
            "MODEL.SOLOV2.UPDATE_THR", "0.0", "OUTPUT_DIR", str(out),
        ]
    )  # fmt: skip
    results = train_net.main(args)
    assert (out / "model_final.pth").is_file()
    # Box AP is computed (from the masks' boxes) beside mask AP.
    assert {"bbox", "segm"} <= set(results)
    assert 0 <= results["segm"]["AP"] <= 100 and 0 <= results["bbox"]["AP"] <= 100
