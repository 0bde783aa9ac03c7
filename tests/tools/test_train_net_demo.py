"""Tests of tools/train_net.py and tools/demo.py on tiny synthetic data (CPU)."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from segtron.data import DatasetCatalog
from segtron.data.datasets import generate_synthetic_dataset, register_synthetic

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
CONFIG = str(REPO / "configs" / "Synthetic" / "semantic_R_18_FPN.yaml")
PREFIX = "trainnettest"
IMAGE_SIZE = (32, 40)  # height, width: the smallest the generator makes
TINY_OPTS = [
    "INPUT.MIN_SIZE_TRAIN",
    "(32,)",
    "INPUT.MAX_SIZE_TRAIN",
    "64",
    "INPUT.MIN_SIZE_TEST",
    "32",
    "INPUT.MAX_SIZE_TEST",
    "64",
    "SOLVER.MAX_ITER",
    "3",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "DATALOADER.NUM_WORKERS",
    "0",
    "TEST.EVAL_PERIOD",
    "0",
]


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_net():
    return _load_tool("train_net")


@pytest.fixture(scope="module")
def demo():
    return _load_tool("demo")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny synthetic datasets registered under PREFIX (8 train and 4 val images of 32×40)."""
    if f"{PREFIX}_train_sem_seg" not in DatasetCatalog:
        root = tmp_path_factory.mktemp("train_net_data")
        register_synthetic(
            root=root, prefix=PREFIX, num_images={"train": 8, "val": 4}, image_size=IMAGE_SIZE
        )
    DatasetCatalog.get(f"{PREFIX}_val_sem_seg")
    return [
        "DATASETS.TRAIN",
        f"('{PREFIX}_train_sem_seg',)",
        "DATASETS.TEST",
        f"('{PREFIX}_val_sem_seg',)",
    ]


@pytest.fixture
def logs(caplog) -> pytest.LogCaptureFixture:
    """Capture segtron's log lines, also after a tool's setup_logger() stops propagation."""
    segtron_logger = logging.getLogger("segtron")
    segtron_logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="segtron")
    yield caplog
    segtron_logger.removeHandler(caplog.handler)


def _flush_logs() -> None:
    for handler in logging.getLogger("segtron").handlers:
        handler.flush()


def _same(a, b) -> bool:
    """Equal nested results, NaN equal to NaN (or to None, as written to JSON)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)

    def missing(x) -> bool:
        return x is None or (isinstance(x, float) and math.isnan(x))

    if missing(a) or missing(b):
        return missing(a) and missing(b)
    return a == pytest.approx(b, rel=1e-6, abs=1e-9)


# --- tools/train_net.py -------------------------------------------------------------------


def test_train_net_missing_or_nonexistent_config_exits_2(train_net, capsys, tmp_path) -> None:
    assert train_net.cli([]) == 2
    assert "--config-file" in capsys.readouterr().err
    missing = str(tmp_path / "missing.yaml")
    assert train_net.cli(["--config-file", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train_net.py: error:") and missing in err
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert train_net.cli(["--config-file", str(empty)]) == 2
    assert f"{empty}' is empty" in capsys.readouterr().err


def test_train_net_unknown_config_key_is_named(train_net, capsys) -> None:
    assert train_net.cli(["--config-file", CONFIG, "SOLVER.NOT_A_REAL_KEY", "1"]) == 2
    assert "SOLVER.NOT_A_REAL_KEY" in capsys.readouterr().err
    assert train_net.cli(["--config-file", CONFIG, "SOLVER.MAX_ITER"]) == 2
    assert "KEY VALUE pairs" in capsys.readouterr().err


def test_train_net_trains_then_evaluates_in_process(train_net, data, tmp_path) -> None:
    parser = train_net.default_argument_parser()
    out = tmp_path / "train"
    # --resume on an empty OUTPUT_DIR: a fresh run, which says so.
    args = parser.parse_args(
        ["--config-file", CONFIG, "--resume", *TINY_OPTS, *data, "OUTPUT_DIR", str(out)]
    )
    results = train_net.main(args)
    _flush_logs()
    for name in ("config.yaml", "log.txt", "metrics.json", "model_final.pth", "last_checkpoint"):
        assert (out / name).is_file(), name
    log = (out / "log.txt").read_text()
    assert "no checkpoint found" in log
    assert "starting a new run from random initialization (MODEL.WEIGHTS is empty)" in log
    assert "Starting training from iteration 0" in log
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [m["iteration"] for m in metrics if "total_loss" in m] == [2]
    assert any("sem_seg/mIoU" in m for m in metrics)
    assert "sem_seg" in results and 0 <= results["sem_seg"]["mIoU"] <= 100
    final_json = (out / "final_results.json").read_text()

    def no_constants(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    written = json.loads(final_json, parse_constant=no_constants)  # strict JSON
    assert _same(results, written)
    table = (out / "final_results.txt").read_text()
    assert "| sem_seg" in table and f"{results['sem_seg']['mIoU']:.3f}" in table

    evaluated = tmp_path / "eval"
    args = parser.parse_args(
        ["--config-file", CONFIG, "--eval-only", *TINY_OPTS, *data]
        + ["MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(evaluated)]
    )
    assert _same(train_net.main(args), results)
    assert (evaluated / "final_results.json").read_text() == final_json
    assert not (evaluated / "model_final.pth").exists()


def test_final_results_are_strict_json(train_net, tmp_path) -> None:
    from segtron.config import get_cfg

    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path / "final")
    results = {
        "ds": {"sem_seg": {"mIoU": np.float64(40.5), "IoU-triangle": float("nan"), "n": 3}},
        "other": {"sem_seg": {"mIoU": float("inf")}},
    }
    train_net.write_final_results(cfg, results)
    text = (tmp_path / "final" / "final_results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {
        "ds": {"sem_seg": {"mIoU": 40.5, "IoU-triangle": None, "n": 3}},
        "other": {"sem_seg": {"mIoU": None}},
    }
    table = (tmp_path / "final" / "final_results.txt").read_text()
    assert table.startswith("ds:\n") and "40.500" in table and "inf" in table
    train_net.write_final_results(cfg, {})  # nothing evaluated: nothing written
    train_net.write_final_results(cfg, None)


def test_train_net_two_cpu_processes(tmp_path) -> None:
    # Pre-generate small splits where the builtin "synthetic_*" names look for them (the
    # builtin size is 200 + 50 images of 128×160); the subprocess uses them as they are.
    root = tmp_path / "datasets"
    generate_synthetic_dataset(root / "synthetic", "train", 4, image_size=IMAGE_SIZE)
    generate_synthetic_dataset(root / "synthetic", "val", 2, image_size=IMAGE_SIZE)
    out = tmp_path / "out"
    env = dict(os.environ, SEGTRON_DATASETS=str(root), OMP_NUM_THREADS="1")
    opts = [opt if opt != "3" else "2" for opt in TINY_OPTS]  # SOLVER.MAX_ITER 2
    command = [sys.executable, str(TOOLS / "train_net.py"), "--config-file", CONFIG]
    command += ["--num-gpus", "2", "--dist-url", "auto", "MODEL.DEVICE", "cpu", *opts]
    command += ["OUTPUT_DIR", str(out)]
    proc = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "model_final.pth").is_file() and (out / "metrics.json").is_file()
    assert (out / "log.txt.rank1").is_file()
    log = (out / "log.txt").read_text()
    assert "World size: 2" in log
    assert "Loaded 4 images" in log  # the pre-generated split, not a new one of 200 images


# --- tools/demo.py ------------------------------------------------------------------------

DEMO_OPTS = ["--opts", "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "32"]
DEMO_OPTS += ["INPUT.MAX_SIZE_TEST", "64"]


def test_demo_images_skips_a_corrupt_file(demo, tmp_path, logs) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a": (40, 50), "b": (36, 30)}
    for stem, (h, w) in sizes.items():
        cv2.imwrite(str(images / f"{stem}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    (images / "c.jpg").write_bytes(b"this is not a jpeg")
    out = tmp_path / "out"
    argv = ["--config-file", CONFIG, "--input", str(images / "*.jpg"), "--output", str(out)]
    assert demo.main(argv + ["--scale", "1", *DEMO_OPTS]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a.png", "b.png"]
    for stem, (h, w) in sizes.items():
        with Image.open(out / f"{stem}.png") as image:
            assert image.size == (w, h)
    warnings = [r for r in logs.records if r.levelno == logging.WARNING]
    assert any("c.jpg" in r.getMessage() for r in warnings)
    assert "Processed 2 of 3 images" in logs.text


def test_demo_video_writes_every_frame(demo, tmp_path) -> None:
    source = str(tmp_path / "in.mp4")
    writer = cv2.VideoWriter(source, cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (48, 32))
    rng = np.random.default_rng(1)
    for _ in range(3):
        writer.write(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
    writer.release()
    output = str(tmp_path / "out.mp4")
    argv = ["--config-file", CONFIG, "--video-input", source, "--output", output, *DEMO_OPTS]
    assert demo.main(argv) == 0
    video = cv2.VideoCapture(output)
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame)
    video.release()
    assert len(frames) == 3
    assert frames[0].shape == (32, 48, 3)


def test_demo_needs_exactly_one_input(demo, capsys) -> None:
    assert demo.main(["--config-file", CONFIG, *DEMO_OPTS]) == 2
    assert "exactly one of --input, --video-input, --webcam" in capsys.readouterr().err
