"""Tests of tools/visualize_data.py and tools/visualize_json_results.py on the synthetic data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from segtron.data import DatasetCatalog, MetadataCatalog
from segtron.data.datasets import register_synthetic
from segtron.utils.visualizer import GenericMask

TOOLS = Path(__file__).resolve().parents[2] / "tools"
PREFIX = "vistools"
HEIGHT, WIDTH = 128, 160


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    if f"{PREFIX}_val" not in DatasetCatalog.list():
        root = tmp_path_factory.mktemp("synthetic")
        register_synthetic(root=root, prefix=PREFIX, num_images={"train": 3, "val": 3})
    return PREFIX


def _pngs(folder: Path) -> dict[str, tuple[int, int]]:
    sizes = {}
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as image:
            sizes[path.name] = image.size
    return sizes


def test_visualize_data_annotations(synthetic, tmp_path):
    tool = _load_tool("visualize_data")
    out = tmp_path / "annotations"
    argv = ["--source", "annotation", "--output-dir", str(out), "--num-images", "2"]
    tool.main(argv + ["DATASETS.TRAIN", f"('{synthetic}_train_panoptic',)"])
    assert _pngs(out) == {"000001.png": (WIDTH, HEIGHT), "000002.png": (WIDTH, HEIGHT)}


def test_visualize_data_dataloader_draws_instances_and_sem_seg(synthetic, tmp_path):
    tool = _load_tool("visualize_data")
    out = tmp_path / "loader"
    tool.main(
        ["--source", "dataloader", "--output-dir", str(out), "--num-images", "3", "--scale", "2"]
        + ["DATASETS.TRAIN", f"('{synthetic}_train_panoptic_separated',)"]
        + ["MODEL.MASK_ON", "True", "INPUT.MASK_FORMAT", "bitmask", "INPUT.FORMAT", "BGR"]
        + ["SOLVER.IMS_PER_BATCH", "2"]
        + ["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "100"]
    )
    sizes = _pngs(out)
    assert len(sizes) == 3 and set(sizes.values()) == {(2 * 80, 2 * 64)}
    # Drawn from RGB: the sky (blue, at the top) stays blue, the sky colour blended in.
    with Image.open(out / sorted(sizes)[0]) as image:
        top = np.asarray(image.convert("RGB"))[2:10, 20:140].reshape(-1, 3).astype(int)
    assert np.median(top[:, 2]) > np.median(top[:, 0]) + 30


def test_visualize_data_parses_detectron2_flags():
    tool = _load_tool("visualize_data")
    args = tool.parse_args(["--source", "dataloader", "--show", "MODEL.MASK_ON", "True"])
    assert args.source == "dataloader" and args.show and args.opts == ["MODEL.MASK_ON", "True"]
    assert args.output_dir == "./" and args.num_images is None and args.config_file is None
    cfg = tool.setup(args)
    assert cfg.MODEL.MASK_ON and cfg.DATALOADER.NUM_WORKERS == 0 and cfg.is_frozen()
    with pytest.raises(SystemExit):
        tool.parse_args(["--source", "nowhere"])


def _results_from_ground_truth(dataset: str) -> list[dict]:
    """COCO results as COCOEvaluator writes them: the ground truth, plus a low-score decoy."""
    inverse = {
        v: k for k, v in MetadataCatalog.get(dataset).thing_dataset_id_to_contiguous_id.items()
    }
    results = []
    for dic in DatasetCatalog.get(dataset):
        for ann in dic["annotations"]:
            mask = GenericMask(ann["segmentation"], dic["height"], dic["width"]).mask
            rle = mask_util.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode("ascii")
            results.append(
                {
                    "image_id": dic["image_id"],
                    "category_id": inverse[ann["category_id"]],
                    "bbox": [float(v) for v in ann["bbox"]],
                    "score": 0.9,
                    "segmentation": rle,
                }
            )
        results.append(
            {"image_id": dic["image_id"], "category_id": 1, "bbox": [0, 0, 50, 50], "score": 0.1}
        )
    return results


def test_visualize_json_results(synthetic, tmp_path):
    tool = _load_tool("visualize_json_results")
    dataset = f"{synthetic}_val"
    results = _results_from_ground_truth(dataset)
    json_file = tmp_path / "coco_instances_results.json"
    json_file.write_text(json.dumps(results))
    out = tmp_path / "vis"
    tool.main(["--input", str(json_file), "--output", str(out), "--dataset", dataset])
    sizes = _pngs(out)
    assert sizes == {f"00000{i}.png": (2 * WIDTH, HEIGHT) for i in (1, 2, 3)}

    # The decoy (score 0.1) is dropped; the rest map back to contiguous ids with their masks.
    dic = DatasetCatalog.get(dataset)[0]
    mine = [r for r in results if r["image_id"] == dic["image_id"]]
    id_map = MetadataCatalog.get(dataset).thing_dataset_id_to_contiguous_id
    instances = tool.create_instances(mine, (HEIGHT, WIDTH), 0.5, id_map.__getitem__)
    assert len(instances) == len(dic["annotations"]) == len(mine) - 1
    assert instances.pred_classes.tolist() == [a["category_id"] for a in dic["annotations"]]
    np.testing.assert_allclose(
        instances.pred_boxes.tensor[0].numpy(),
        np.array(dic["annotations"][0]["bbox"]) + [0, 0, *dic["annotations"][0]["bbox"][:2]],
    )
    assert len(instances.pred_masks) == len(instances)
