"""Tests of tools/benchmark.py and tools/analyze_model.py on a tiny synthetic dataset (CPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from types import ModuleType

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

from segtron.data import DatasetCatalog, MetadataCatalog
from segtron.data.datasets import register_synthetic
from segtron.modeling import build_model
from segtron.projects import get_config
from segtron.structures import Boxes, Instances

REPO = Path(__file__).parents[2]
CONFIG = str(REPO / "configs" / "Synthetic" / "semantic_R_18_FPN.yaml")


def _load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"segtron_tool_{name}", REPO / "tools" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def benchmark_tool() -> ModuleType:
    return _load_tool("benchmark")


@pytest.fixture(scope="module")
def analyze_tool() -> ModuleType:
    return _load_tool("analyze_model")


@pytest.fixture(scope="module")
def opts(tmp_path_factory):
    """Config overrides for a tiny run on a synthetic dataset generated in a tmp folder."""
    root = tmp_path_factory.mktemp("datasets")
    prefix = f"bm{os.getpid()}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGTRON_DATASETS", str(root))
        register_synthetic(
            root / "synthetic_bm",
            prefix=prefix,
            num_images={"train": 4, "val": 2},
            image_size=(32, 40),
        )
        yield [
            "DATASETS.TRAIN",
            f"('{prefix}_train_sem_seg',)",
            "DATASETS.TEST",
            f"('{prefix}_val_sem_seg',)",
            "DATALOADER.NUM_WORKERS",
            "0",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "INPUT.MIN_SIZE_TRAIN",
            "(32,)",
            "INPUT.MIN_SIZE_TEST",
            "32",
            "OUTPUT_DIR",
            str(root / "output"),
        ]
    for name in [n for n in DatasetCatalog.list() if n.startswith(prefix + "_")]:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_benchmark_writes_json_with_all_tasks(benchmark_tool, opts, tmp_path, capsys):
    output = tmp_path / "bench.json"
    argv = ["--config-file", CONFIG, "--iters", "2", "--warmup", "1", "--output", str(output)]
    assert benchmark_tool.main([*argv, *opts]) == 0

    report = json.loads(output.read_text())
    results = report["results"]
    assert set(results) == {"train", "eval", "data"}
    assert results["train"]["iters_per_s"] > 0
    assert results["train"]["images_per_s"] == pytest.approx(2 * results["train"]["iters_per_s"])
    assert results["eval"]["images_per_s"] > 0
    assert results["data"]["images_per_s"] > 0
    for task in results.values():
        assert task["peak_rss_mb"] > 0
    assert report["device"] == "cpu"
    assert report["batch_size"] == 2
    assert report["torch"] == torch.__version__
    assert report["config_file"] == CONFIG
    assert report["opts"] == opts
    assert report["threads"] == torch.get_num_threads()
    table = capsys.readouterr().out
    assert re.search(r"\|\s*task\s*\|\s*metric\s*\|\s*value\s*\|", table)
    assert re.search(r"\|\s*train\s*\|\s*iters_per_s\s*\|", table)


def test_benchmark_default_output_under_output_dir(benchmark_tool, opts):
    argv = ["--config-file", CONFIG, "--tasks", "data", "--iters", "1", "--warmup", "0", *opts]
    assert benchmark_tool.main(argv) == 0
    output_dir = opts[opts.index("OUTPUT_DIR") + 1]
    report = json.loads((Path(output_dir) / "benchmark.json").read_text())
    assert set(report["results"]) == {"data"}


def test_analyze_model_counts(analyze_tool, opts, capsys):
    argv = ["--config-file", CONFIG, "--tasks", "parameter", "flop", "activation", "-n", "2"]
    assert analyze_tool.main([*argv, *opts]) == 0
    out = capsys.readouterr().out

    expected = sum(p.numel() for p in build_model(get_config(CONFIG, opts)).parameters())
    total = re.search(r"Total parameters: ([\d,]+)", out)
    assert total is not None and int(total.group(1).replace(",", "")) == expected

    flops = re.search(r"Total GFLOPs: ([\d.]+)±([\d.]+) \(mean±std over 2 inputs\)", out)
    assert flops is not None and float(flops.group(1)) > 0
    assert "| conv " in out  # the per-operator table
    assert "backbone.bottom_up.res5" in out  # the table by module
    acts = re.search(r"Total million activations: ([\d.]+)±([\d.]+)", out)
    assert acts is not None and float(acts.group(1)) > 0


def test_analyze_model_structure(analyze_tool, opts, capsys):
    # The overrides follow --tasks directly: they must not be read as tasks.
    assert analyze_tool.main(["--config-file", CONFIG, "--tasks", "structure", *opts]) == 0
    out = capsys.readouterr().out
    assert "SemanticSegmentor(" in out and "(sem_seg_head): SemSegFPNHead(" in out


@pytest.mark.parametrize("tool", ["benchmark_tool", "analyze_tool"])
def test_missing_config_file_exits_with_status_2(tool, request, tmp_path, capsys):
    module = request.getfixturevalue(tool)
    missing = str(tmp_path / "no_such_config.yaml")
    argv = ["--config-file", missing]
    if tool == "analyze_tool":
        argv += ["--tasks", "parameter"]
    with pytest.raises(SystemExit) as exc:
        module.main(argv)
    assert exc.value.code == 2
    assert missing in capsys.readouterr().err


def test_unknown_task_exits_with_status_2(analyze_tool, capsys):
    with pytest.raises(SystemExit) as exc:
        analyze_tool.main(
            ["--config-file", CONFIG, "--tasks", "flop", "flops", "MODEL.DEVICE", "cpu"]
        )
    assert exc.value.code == 2
    assert "invalid choice: 'flops'" in capsys.readouterr().err


class _ToyDetector(nn.Module):
    """A conv whose output is returned as instances, semantic and panoptic results."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, kernel_size=1, bias=False)

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        results = []
        for x in batched_inputs:
            scores = self.conv(x["image"][None])[0]
            flat = scores.flatten(1)
            instances = Instances(
                (x["height"], x["width"]),
                scores=flat.max(dim=1).values,
                pred_boxes=Boxes(flat[:, :4]),
            )
            panoptic = (scores.argmax(dim=0), [{"id": 1, "category_id": 0}])
            results.append({"instances": instances, "sem_seg": scores, "panoptic_seg": panoptic})
        return results


def test_tracing_wrapper_flattens_structured_outputs(analyze_tool):
    model = _ToyDetector()
    batch = [
        {"image": torch.rand(3, 4, 5), "height": 4, "width": 5, "file_name": "a.jpg"},
        {"image": torch.rand(3, 2, 3), "height": 2, "width": 3},
    ]
    wrapper = analyze_tool.TracingWrapper(model, batch)
    assert len(wrapper.flat_inputs) == 2
    outputs = wrapper(*wrapper.flat_inputs)
    # Per image: scores, boxes, sem_seg, panoptic ids.
    assert len(outputs) == 8 and all(isinstance(t, torch.Tensor) for t in outputs)
    assert torch.equal(outputs[2], model(batch)[0]["sem_seg"])

    flops = FlopCountAnalysis(wrapper, wrapper.flat_inputs)
    assert flops.total() == 2 * 3 * (4 * 5 + 2 * 3)  # 1x1 conv: out × in × pixels


def test_flatten_tensors_drops_non_tensors(analyze_tool):
    t = torch.zeros(2)
    nested = {"a": [t, 3, "x", None], "b": (Boxes(torch.zeros(1, 4)), {"c": t})}
    flat = analyze_tool.flatten_tensors(nested)
    assert len(flat) == 3 and flat[0] is t and flat[2] is t


def test_benchmark_synthetic_input_with_torchvision_reference(benchmark_tool, tmp_path, capsys):
    config = str(REPO / "configs" / "Synthetic" / "mask_rcnn_R_18_FPN.yaml")
    output = tmp_path / "bench.json"
    argv = ["--config-file", config, "--input-size", "64", "96", "--torchvision-reference"]
    argv += ["--iters", "1", "--warmup", "0", "--output", str(output)]
    opts = ["MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "2", "OUTPUT_DIR", str(tmp_path)]
    assert benchmark_tool.main([*argv, *opts]) == 0

    report = json.loads(output.read_text())
    results = report["results"]
    # No dataset: the data task is skipped with a note.
    assert set(results) == {"eval", "train", "torchvision_eval", "torchvision_train"}
    assert report["input_size"] == [64, 96] and "data task skipped" in report["notes"][0]
    for name in ("eval", "torchvision_eval"):
        assert results[name]["images_per_s"] > 0 and results[name]["s_per_image"] > 0
    for name in ("train", "torchvision_train"):
        assert results[name]["images_per_s"] > 0 and results[name]["s_per_iter"] > 0
        assert results[name]["images_per_s"] == pytest.approx(2 / results[name]["s_per_iter"])
    table = capsys.readouterr().out
    assert re.search(r"\|\s*torchvision_train\s*\|\s*s_per_iter\s*\|", table)
    assert re.search(r"\|\s*torchvision_eval\s*\|\s*s_per_image\s*\|", table)


def test_synthetic_batches_and_torchvision_conversion(benchmark_tool):
    cfg = get_config(str(REPO / "configs" / "Synthetic" / "mask_rcnn_R_18_FPN.yaml"), [])
    (batch,) = benchmark_tool._synthetic_batches(cfg, (20, 30), 1, 2, train=True)
    assert len(batch) == 2 and batch[0]["image"].shape == (3, 20, 30)
    images, targets = benchmark_tool._to_torchvision(batch, "BGR", torch.device("cpu"))
    # BGR to RGB, scaled to [0, 1].
    assert torch.equal(images[0], batch[0]["image"].flip(0).float() / 255)
    inst = batch[0]["instances"]
    assert torch.equal(targets[0]["labels"], inst.gt_classes + 1)
    assert targets[0]["masks"].dtype == torch.uint8
    assert targets[0]["masks"].shape == (len(inst), 20, 30)
