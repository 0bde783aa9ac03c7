#!/usr/bin/env python
"""Measure the training, inference and data-loading speed of a model from its config file.

    python tools/benchmark.py --config-file configs/Synthetic/semantic_R_18_FPN.yaml
    python tools/benchmark.py --config-file CFG --tasks train eval --iters 50 MODEL.DEVICE cuda
    python tools/benchmark.py --config-file CFG --tasks train --num-gpus 2 SOLVER.IMS_PER_BATCH 4

Tasks, measured after ``--warmup`` untimed iterations (as Detectron2's ``tools/benchmark.py``):

* ``data``: images/s of the training data loader (``build_detection_train_loader``, batches of
  ``SOLVER.IMS_PER_BATCH`` with ``DATALOADER.NUM_WORKERS`` workers).
* ``train``: iterations/s and images/s of `SimpleTrainer` (`AMPTrainer` when
  ``SOLVER.AMP.ENABLED``) on training batches loaded into memory beforehand, so that data loading
  is left out; no LR schedule, checkpoints or evaluation.
* ``eval``: images/s of the model in eval mode under ``torch.no_grad`` on batches of
  ``DATASETS.TEST[0]`` loaded into memory beforehand.

segtron additions:

* ``--input-size H W``: the eval and train tasks run on synthetic images of exactly H×W (random
  pixels, a few random box/mask instances) instead of a dataset, with the ``INPUT`` sizes set so
  that nothing is resized (e.g. ``--input-size 800 1333`` for COCO's resolution without COCO);
  the data task is skipped.
* ``--torchvision-reference``: the eval and train tasks also time torchvision's
  ``maskrcnn_resnet50_fpn`` (random init, ``MODEL.ROI_HEADS.NUM_CLASSES + 1`` classes, resizing
  to the same ``INPUT`` sizes, SGD at ``SOLVER.BASE_LR``) on the same batches held in memory,
  reported as ``torchvision_eval`` and ``torchvision_train``.

Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU; on CPU it is the peak resident set
size of the process up to the end of the task (it never decreases, so tasks run in the order
data, eval, train). With ``--num-gpus N`` every process runs the tasks and the figures are
totals over the processes (images over the slowest process's time; the largest peak memory).

Prints one table and writes the figures, with the device, torch version, config and batch size,
to ``--output`` (default ``OUTPUT_DIR/benchmark.json``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from tabulate import tabulate

from segtron.checkpoint import DetectionCheckpointer
from segtron.config import CfgNode
from segtron.data import build_detection_test_loader, build_detection_train_loader
from segtron.engine import HookBase, build_step_trainer, create_ddp_model, hooks, launch
from segtron.engine.defaults import split_tasks_and_opts
from segtron.modeling import build_model
from segtron.projects import get_config
from segtron.solver import build_optimizer
from segtron.structures import BitMasks, Boxes, Instances, PolygonMasks
from segtron.utils import comm
from segtron.utils.env import seed_all_rng
from segtron.utils.events import CommonMetricPrinter
from segtron.utils.logger import setup_logger

logger = logging.getLogger("segtron.tools.benchmark")

TASKS = ("data", "eval", "train")
# Batches kept in memory for the train and eval tasks; they are cycled through.
MAX_CACHED_BATCHES = 20
LOG_PERIOD = 20


def build_parser() -> argparse.ArgumentParser:
    """The command line of the tool.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog=os.path.basename(__file__),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=list(TASKS),
        metavar="TASK",
        help=f"what to measure, any of {', '.join(TASKS)} (default: all)",
    )
    parser.add_argument("--iters", type=int, default=100, help="timed iterations per task")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations first")
    parser.add_argument(
        "--num-gpus", type=int, default=1, help="processes (one per GPU, or CPU processes)"
    )
    parser.add_argument(
        "--input-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="segtron: synthetic images of this size instead of a dataset (eval, train)",
    )
    parser.add_argument(
        "--torchvision-reference",
        action="store_true",
        help="segtron: also time torchvision's maskrcnn_resnet50_fpn in the eval and train tasks",
    )
    parser.add_argument(
        "--output", default="", metavar="FILE", help="JSON file (default OUTPUT_DIR/benchmark.json)"
    )
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        help="config overrides at the end of the command: KEY VALUE pairs",
    )
    return parser


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it is exact."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> dict[str, float]:
    """The peak GPU memory allocated since the last reset, or the process's peak RSS, in MiB."""
    if device.type == "cuda":
        return {"peak_gpu_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    return {"peak_rss_mb": max_rss / (2**20 if sys.platform == "darwin" else 2**10)}


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _load_batches(data_loader: Iterable[Any], count: int) -> list[Any]:
    """The first `count` non-empty batches of a loader (fewer when it is shorter), in memory.

    A test loader's batch is empty when all its images were skipped as unreadable.
    """
    batches = list(itertools.islice((b for b in data_loader if len(b)), count))
    if not batches:
        raise ValueError("The data loader yielded no batch (or only unreadable images).")
    logger.info(f"Loaded {len(batches)} batches into memory.")
    return batches


def _log_progress(task: str, done: int, total: int, start: float) -> None:
    if done % LOG_PERIOD == 0 or done == total:
        elapsed = time.perf_counter() - start
        logger.info(f"{task}: iteration {done}/{total}, {elapsed:.1f} s elapsed")


def benchmark_data(cfg: CfgNode, iters: int, warmup: int) -> dict[str, float]:
    """Time the training data loader of this process.

    Args:
        cfg: the full config.
        iters: timed batches.
        warmup: batches loaded before the clock starts (starting the workers, filling queues).

    Returns:
        ``images``, ``iters``, ``seconds`` of the timed batches and the peak memory.
    """
    device = torch.device("cpu")
    batches = iter(build_detection_train_loader(cfg))
    total = warmup + iters
    start = time.perf_counter()
    images = 0
    for i in range(total):
        if i == warmup:
            start = time.perf_counter()
        batch = next(batches)
        if i >= warmup:
            images += len(batch)
        _log_progress("data", i + 1, total, start)
    seconds = time.perf_counter() - start
    del batches  # shuts the workers down
    return {"images": images, "iters": iters, "seconds": seconds, **_peak_memory(device)}


class _Stopwatch(HookBase):
    """Times a training run from the end of its warm-up to the end of the run."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self._warmup = warmup
        self._device = device
        self._start = 0.0
        self.seconds = 0.0

    def _restart(self) -> None:
        _synchronize(self._device)
        self._start = time.perf_counter()

    def before_train(self) -> None:
        """Start the clock now when there is no warm-up."""
        if self._warmup == 0:
            self._restart()

    def after_step(self) -> None:
        """Start the clock at the end of the last warm-up iteration."""
        if self.trainer.iter + 1 == self._warmup:
            self._restart()

    def after_train(self) -> None:
        """Stop the clock once the device has finished."""
        _synchronize(self._device)
        self.seconds = time.perf_counter() - self._start


def _input_size(cfg: CfgNode, size: Sequence[int]) -> None:
    """Set the ``INPUT`` sizes of `cfg` (not frozen) so that H×W images are not resized."""
    short, long = min(size), max(size)
    cfg.INPUT.MIN_SIZE_TEST = short
    cfg.INPUT.MAX_SIZE_TEST = long
    cfg.INPUT.MIN_SIZE_TRAIN = (short,)
    cfg.INPUT.MAX_SIZE_TRAIN = long


def _synthetic_batches(
    cfg: CfgNode, size: Sequence[int], count: int, batch_size: int, train: bool
) -> list[list[dict[str, Any]]]:
    """`count` batches of random uint8 H×W images; with `train`, each has 1-4 random instances."""
    height, width = size
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        batch = []
        for _ in range(batch_size):
            image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=gen)
            item = {"image": image, "height": height, "width": width}
            if train:
                n = int(torch.randint(1, 5, (), generator=gen))
                # Boxes of 1/8 to 1/2 of each side, anywhere in the image.
                wh = torch.rand(n, 2, generator=gen) * 3 / 8 + 1 / 8
                x0y0 = torch.rand(n, 2, generator=gen) * (1 - wh)
                scale = torch.tensor([width, height], dtype=torch.float32)
                boxes = (torch.cat([x0y0, x0y0 + wh], dim=1) * scale.repeat(2)).round()
                masks = torch.zeros(n, height, width, dtype=torch.bool)
                for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
                    mask[y0:y1, x0:x1] = True
                item["instances"] = Instances(
                    (height, width),
                    gt_boxes=Boxes(boxes),
                    gt_classes=torch.randint(
                        0, cfg.MODEL.ROI_HEADS.NUM_CLASSES, (n,), generator=gen
                    ),
                    gt_masks=BitMasks(masks),
                )
            batch.append(item)
        batches.append(batch)
    return batches


def _batches(cfg: CfgNode, input_size: Sequence[int] | None, count: int, train: bool) -> list[Any]:
    """The batches held in memory: synthetic ones of `input_size`, else from the dataset."""
    if input_size:
        per_process = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size() if train else 1
        return _synthetic_batches(cfg, input_size, count, per_process, train)
    if train:
        return _load_batches(build_detection_train_loader(cfg), count)
    return _load_batches(build_detection_test_loader(cfg, cfg.DATASETS.TEST[0]), count)


def _torchvision_model(cfg: CfgNode, train: bool) -> torch.nn.Module:
    """torchvision's Mask R-CNN R50-FPN, randomly initialized, resizing as `cfg` at test/train."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    model = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1
    )
    if train:
        model.transform.min_size = (cfg.INPUT.MIN_SIZE_TRAIN[0],)
        model.transform.max_size = cfg.INPUT.MAX_SIZE_TRAIN
    else:
        model.transform.min_size = (cfg.INPUT.MIN_SIZE_TEST,)
        model.transform.max_size = cfg.INPUT.MAX_SIZE_TEST
    return model.to(cfg.MODEL.DEVICE).train(train)


def _to_torchvision(
    batch: list[dict[str, Any]], image_format: str, device: torch.device
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A segtron batch as torchvision's inputs: RGB images in [0, 1] and targets (if any)."""
    images, targets = [], []
    for item in batch:
        image = item["image"].to(device).float() / 255
        images.append(image.flip(0) if image_format == "BGR" else image)
        if "instances" in item:
            inst = item["instances"]
            masks = inst.gt_masks
            if isinstance(masks, PolygonMasks):
                masks = BitMasks.from_polygon_masks(masks, *inst.image_size)
            targets.append(
                {
                    "boxes": inst.gt_boxes.tensor.to(device),
                    "labels": inst.gt_classes.to(device) + 1,
                    "masks": masks.tensor.to(device, torch.uint8),
                }
            )
    return images, targets


class _UnpackBatch(torch.nn.Module):
    """Calls a torchvision detector on an ``(images, targets)`` batch, as a trainer calls models."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: tuple[list[torch.Tensor], list[dict]]) -> dict[str, torch.Tensor]:
        return self.model(*batch)


def _time_training(
    cfg: CfgNode,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[Any],
    per_image: float,
    iters: int,
    warmup: int,
) -> dict[str, float]:
    """Time `warmup` + `iters` trainer steps of `model` cycling over `batches`."""
    device = _model_device(model)
    model = create_ddp_model(model, broadcast_buffers=False)
    trainer = build_step_trainer(cfg, model, itertools.cycle(batches), optimizer)
    stopwatch = _Stopwatch(warmup, device)
    progress = [hooks.PeriodicWriter([CommonMetricPrinter(warmup + iters)], LOG_PERIOD)]
    trainer.register_hooks(
        [stopwatch, hooks.IterationTimer(warmup), *(progress if comm.is_main_process() else [])]
    )
    _reset_peak_memory(device)
    trainer.train(0, warmup + iters)
    return {
        "images": per_image * iters,
        "iters": iters,
        "seconds": stopwatch.seconds,
        **_peak_memory(device),
    }


def benchmark_train(
    cfg: CfgNode,
    iters: int,
    warmup: int,
    input_size: Sequence[int] | None = None,
    torchvision_reference: bool = False,
) -> dict[str, dict[str, float]]:
    """Time training iterations of this process on batches held in memory.

    Args:
        cfg: the full config.
        iters: timed iterations.
        warmup: iterations run before the clock starts.
        input_size: (H, W) of synthetic images to use instead of the training set.
        torchvision_reference: also time torchvision's Mask R-CNN on the same batches.

    Returns:
        For "train" (and "torchvision_train"): ``images``, ``iters``, ``seconds`` of the timed
        iterations and the peak memory.
    """
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    batches = _batches(cfg, input_size, min(warmup + iters, MAX_CACHED_BATCHES), train=True)
    per_image = sum(len(b) for b in batches) / len(batches)
    optimizer = build_optimizer(cfg, model)
    results = {"train": _time_training(cfg, model, optimizer, batches, per_image, iters, warmup)}
    if torchvision_reference:
        del model, optimizer
        model = _torchvision_model(cfg, train=True)
        device = _model_device(model)
        batches = [_to_torchvision(b, cfg.INPUT.FORMAT, device) for b in batches]
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(
            params,
            lr=cfg.SOLVER.BASE_LR,
            momentum=cfg.SOLVER.MOMENTUM,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )
        results["torchvision_train"] = _time_training(
            cfg, _UnpackBatch(model), optimizer, batches, per_image, iters, warmup
        )
    return results


def _time_inference(
    task: str,
    step: Callable[[Any], Any],
    batches: list[Any],
    iters: int,
    warmup: int,
    device: torch.device,
) -> dict[str, float]:
    """Time `warmup` + `iters` calls of `step` under ``torch.no_grad``, cycling over `batches`."""
    data = itertools.cycle(batches)
    total = warmup + iters
    _reset_peak_memory(device)
    _synchronize(device)
    start = time.perf_counter()
    images = 0
    with torch.no_grad():
        for i in range(total):
            if i == warmup:
                _synchronize(device)
                start = time.perf_counter()
            batch = next(data)
            step(batch)
            if i >= warmup:
                images += len(batch)
            _log_progress(task, i + 1, total, start)
    _synchronize(device)
    seconds = time.perf_counter() - start
    return {"images": images, "iters": iters, "seconds": seconds, **_peak_memory(device)}


def benchmark_eval(
    cfg: CfgNode,
    iters: int,
    warmup: int,
    input_size: Sequence[int] | None = None,
    torchvision_reference: bool = False,
) -> dict[str, dict[str, float]]:
    """Time inference of this process on batches of ``DATASETS.TEST[0]`` held in memory.

    Args:
        cfg: the full config.
        iters: timed batches (of one image each, as the test loader gives them).
        warmup: batches run before the clock starts.
        input_size: (H, W) of synthetic images to use instead of the test set.
        torchvision_reference: also time torchvision's Mask R-CNN on the same batches.

    Returns:
        For "eval" (and "torchvision_eval"): ``images``, ``iters``, ``seconds`` of the timed
        batches and the peak memory.
    """
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    device = _model_device(model)
    batches = _batches(cfg, input_size, min(warmup + iters, MAX_CACHED_BATCHES), train=False)
    results = {"eval": _time_inference("eval", model, batches, iters, warmup, device)}
    if torchvision_reference:
        del model
        model = _torchvision_model(cfg, train=False)
        batches = [_to_torchvision(b, cfg.INPUT.FORMAT, device)[0] for b in batches]
        results["torchvision_eval"] = _time_inference(
            "torchvision_eval", model, batches, iters, warmup, device
        )
    return results


_BENCHMARKS = {"eval": benchmark_eval, "train": benchmark_train}


def combine(task: str, per_process: Sequence[dict[str, float]]) -> dict[str, float]:
    """The figures of a task over all processes, from each process's measurement.

    Args:
        task: "data", "eval" or "train", or "torchvision_eval" or "torchvision_train".
        per_process: what the task's benchmark function returned on each process.

    Returns:
        ``images_per_s`` (all images over the slowest process's time), ``iters_per_s`` and
        ``s_per_iter`` (train), ``ms_per_iter`` and ``s_per_image`` (eval, per process) and the
        largest peak memory.
    """
    seconds = max(m["seconds"] for m in per_process)
    iters = per_process[0]["iters"]
    images = sum(m["images"] for m in per_process)
    figures = {"images_per_s": images / seconds}
    if task.endswith("train"):
        figures["iters_per_s"] = iters / seconds
        figures["s_per_iter"] = seconds / iters
    if task.endswith("eval"):
        figures["ms_per_iter"] = 1000 * seconds / iters
        figures["s_per_image"] = seconds * len(per_process) / images
    for key in ("peak_gpu_memory_mb", "peak_rss_mb"):
        if key in per_process[0]:
            figures[key] = max(m[key] for m in per_process)
    figures["seconds"] = seconds
    return figures


def _device_name(cfg: CfgNode) -> str:
    device = torch.device(cfg.MODEL.DEVICE)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def setup(args: argparse.Namespace) -> CfgNode:
    """The frozen config of this process, with logging set up and the random seed set.

    Args:
        args: the parsed command line.

    Returns:
        The config.
    """
    cfg = get_config(args.config_file, args.opts)
    if args.input_size:
        _input_size(cfg, args.input_size)
    cfg.freeze()
    rank = comm.get_rank()
    setup_logger(distributed_rank=rank)
    setup_logger(distributed_rank=rank, name="fvcore")
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    logger.info(f"Benchmarking {args.config_file} on {_device_name(cfg)}: tasks {args.tasks}")
    return cfg


def run(args: argparse.Namespace) -> None:
    """Run the tasks on this process; the main process prints and saves the figures.

    Args:
        args: the parsed command line.
    """
    cfg = setup(args)
    results, notes = {}, []
    for task in (t for t in TASKS if t in args.tasks):
        if task == "data" and args.input_size:
            notes.append("data task skipped: --input-size uses synthetic images, no data loader")
            logger.info(notes[-1])
            continue
        logger.info(f"Task {task}: {args.warmup} warm-up and {args.iters} timed iterations")
        if task == "data":
            measured = {"data": benchmark_data(cfg, args.iters, args.warmup)}
        else:
            measured = _BENCHMARKS[task](
                cfg, args.iters, args.warmup, args.input_size, args.torchvision_reference
            )
        gathered = comm.gather(measured)
        if comm.is_main_process():
            for name in measured:
                results[name] = combine(name, [m[name] for m in gathered])
                figures = ", ".join(f"{k}={v:.4g}" for k, v in results[name].items())
                logger.info(f"Task {name}: {figures}")
        comm.synchronize()
    if not comm.is_main_process():
        return
    report = {
        "config_file": args.config_file,
        "opts": list(args.opts or []),
        "device": _device_name(cfg),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "num_processes": comm.get_world_size(),
        "threads": torch.get_num_threads(),
        "batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "test_batch_size_per_process": 1,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "amp": bool(cfg.SOLVER.AMP.ENABLED),
        "iters": args.iters,
        "warmup": args.warmup,
        "input_size": args.input_size,
        "torchvision_reference": args.torchvision_reference,
        "notes": notes,
        "results": results,
    }
    rows = [[task, k, f"{v:.4g}"] for task, figures in results.items() for k, v in figures.items()]
    print(tabulate(rows, headers=["task", "metric", "value"], tablefmt="pipe"))
    output = args.output or os.path.join(cfg.OUTPUT_DIR, "benchmark.json")
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    with open(output, "w") as f:
        json.dump(report, f, indent=2)
    logger.info(f"Benchmark results saved to {output}")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, check it, and run the benchmark on every process.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        0; a bad command line or config exits with status 2 and a message.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    split_tasks_and_opts(parser, args, TASKS)
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be at least 1 and --warmup at least 0.")
    if args.input_size and min(args.input_size) < 1:
        parser.error("--input-size needs two positive sizes.")
    try:
        cfg = get_config(args.config_file, args.opts)
    except (OSError, KeyError, ValueError) as e:
        parser.error(str(e))
    if "eval" in args.tasks and not args.input_size and not len(cfg.DATASETS.TEST):
        parser.error("The eval task needs a dataset in DATASETS.TEST.")
    backend = "gloo" if str(cfg.MODEL.DEVICE).startswith("cpu") else None
    launch(run, args.num_gpus, dist_url="auto", args=(args,), backend=backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
