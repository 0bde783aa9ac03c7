#!/usr/bin/env python
"""Count a model's parameters, flops and activations, or print its structure.

    python tools/analyze_model.py --config-file configs/Synthetic/semantic_R_18_FPN.yaml \\
        --tasks parameter flop
    python tools/analyze_model.py --config-file CFG --tasks flop activation -n 20 MODEL.DEVICE cuda
    python tools/analyze_model.py --config-file CFG --tasks structure

Tasks (Detectron2's ``tools/analyze_model.py`` names):

* ``parameter``: fvcore's ``parameter_count_table`` by module (depth 5) and the total.
* ``flop``: fvcore's ``FlopCountAnalysis`` of the model in eval mode on the first
  ``--num-inputs`` images of ``DATASETS.TEST[0]``: the table by module (first image), the mean
  GFLOPs of each operator and the total GFLOPs, mean ± std over the images. fvcore counts one
  fused multiply-add as one flop; element-wise, padding and pooling ops are not counted (as in
  Detectron2), and other operators without a flop formula are named once in a warning.
* ``activation``: fvcore's ``ActivationCountAnalysis`` (outputs of convolutions and linear
  layers) on the same images: mean millions of activations per operator and the total.
* ``structure``: the model as ``print(model)`` shows it.

The model loads ``MODEL.WEIGHTS`` (when set) for flops and activations, since the outputs of a
detector, and so its cost, depend on its weights. Results go to stdout; progress and a summary of
each task go to the log.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from fvcore.nn import (
    ActivationCountAnalysis,
    FlopCountAnalysis,
    flop_count_table,
    parameter_count,
    parameter_count_table,
)
from fvcore.nn.jit_analysis import JitModelAnalysis
from tabulate import tabulate
from torch import nn

from segtron.checkpoint import DetectionCheckpointer
from segtron.config import CfgNode
from segtron.data import build_detection_test_loader
from segtron.engine.defaults import split_tasks_and_opts
from segtron.modeling import build_model
from segtron.projects import get_config
from segtron.structures import Instances
from segtron.utils.logger import setup_logger

logger = logging.getLogger("segtron.tools.analyze_model")

TASKS = ("parameter", "flop", "activation", "structure")

# Cheap operators that neither count counts, as in Detectron2: element-wise arithmetic,
# activations, padding, pooling, reductions, sorting and index computations.
_UNCOUNTED_OPS = (
    "aten::abs",
    "aten::add",
    "aten::add_",
    "aten::argmax",
    "aten::argsort",
    "aten::constant_pad_nd",
    "aten::div",
    "aten::div_",
    "aten::exp",
    "aten::log",
    "aten::log2",
    "aten::max",
    "aten::max_pool2d",
    "aten::meshgrid",
    "aten::mul",
    "aten::mul_",
    "aten::neg",
    "aten::nonzero_numpy",
    "aten::pad",
    "aten::reciprocal",
    "aten::relu",
    "aten::relu_",
    "aten::rsub",
    "aten::sigmoid",
    "aten::sigmoid_",
    "aten::softmax",
    "aten::sort",
    "aten::sqrt",
    "aten::sub",
    "aten::sum",
    "aten::topk",
    "torchvision::nms",
)
# Activations are the outputs of convolutions and linear layers only; these produce none.
_NO_ACTIVATION_OPS = (
    "aten::adaptive_avg_pool2d",
    "aten::batch_norm",
    "aten::grid_sampler",
    "aten::group_norm",
    "aten::instance_norm",
    "aten::layer_norm",
    "aten::upsample_bilinear2d",
    "aten::upsample_nearest2d",
)


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
        required=True,
        metavar="TASK",
        help=f"what to analyze, any of {', '.join(TASKS)}",
    )
    parser.add_argument(
        "-n",
        "--num-inputs",
        type=int,
        default=10,
        help="images to average flops and activations over",
    )
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        help="config overrides at the end of the command: KEY VALUE pairs",
    )
    return parser


def flatten_tensors(outputs: Any) -> list[torch.Tensor]:
    """Every tensor in a model's outputs, in a fixed order.

    Walks dicts (values in order), lists and tuples (such as ``panoptic_seg``'s
    ``(ids, segments_info)``), `Instances` (their fields) and structures that hold a ``tensor``
    (``Boxes``, ``BitMasks``, ``ImageList``…); numbers, strings and other objects are dropped.

    Args:
        outputs: what a segtron model returns.

    Returns:
        The tensors.
    """
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, Instances):
        outputs = outputs.get_fields()
    elif isinstance(getattr(outputs, "tensor", None), torch.Tensor):
        return [outputs.tensor]
    if isinstance(outputs, Mapping):
        outputs = list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        return [t for item in outputs for t in flatten_tensors(item)]
    return []


class TracingWrapper(nn.Module):
    """A segtron model seen as tensors in, tuple of tensors out, as jit tracing needs.

    The model takes a list of dicts and returns dicts of tensors, `Instances` and tuples. The
    wrapper keeps the dicts of an example batch: its inputs are the tensors of those dicts (in
    order), which it puts back in place before calling the model, and its output is every
    tensor of the model's output (see `flatten_tensors`). The other values of the dicts
    (``height``, ``width``…) are constants of the trace.

    Attributes:
        model: the wrapped model.
        flat_inputs: the tensors of the example batch, the inputs to trace with.
    """

    def __init__(self, model: nn.Module, batch: Sequence[Mapping[str, Any]]) -> None:
        """Wrap `model` for one example batch.

        Args:
            model: a segtron model.
            batch: a list of input dicts, as the test loader yields them.
        """
        super().__init__()
        self.model = model
        self._batch = [dict(d) for d in batch]
        self._slots = [
            (i, key)
            for i, d in enumerate(self._batch)
            for key, value in d.items()
            if isinstance(value, torch.Tensor)
        ]
        self.flat_inputs = tuple(self._batch[i][key] for i, key in self._slots)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the model on the example batch with its tensors replaced by `tensors`.

        Args:
            *tensors: one tensor per entry of ``flat_inputs``.

        Returns:
            Every tensor of the model's output.
        """
        if len(tensors) != len(self._slots):
            raise ValueError(f"Expected {len(self._slots)} input tensors, got {len(tensors)}.")
        batch = [dict(d) for d in self._batch]
        for (i, key), tensor in zip(self._slots, tensors):
            batch[i][key] = tensor
        return tuple(flatten_tensors(self.model(batch)))


def _build_model(cfg: CfgNode, load_weights: bool) -> nn.Module:
    model = build_model(cfg)
    if load_weights:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model


def _test_batches(cfg: CfgNode, num_inputs: int) -> list[list[dict[str, Any]]]:
    """The first `num_inputs` batches of the test loader of ``DATASETS.TEST[0]``.

    Batches left empty by unreadable images are passed over.
    """
    loader = build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])
    batches = list(itertools.islice((b for b in loader if len(b)), num_inputs))
    if not batches:
        raise ValueError(f"{cfg.DATASETS.TEST[0]} has no readable image to analyze.")
    if len(batches) < num_inputs:
        logger.warning(
            f"{cfg.DATASETS.TEST[0]} has only {len(batches)} readable images; using them all."
        )
    return batches


def _count(
    model: nn.Module,
    batches: Sequence[list[dict[str, Any]]],
    analysis_class: type[JitModelAnalysis],
    ignored_ops: Sequence[str],
) -> list[JitModelAnalysis]:
    """Run one fvcore analysis per batch; warn once about the operators it could not count."""
    analyses = []
    unsupported: Counter[str] = Counter()
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing scripts segtron's script_if_tracing helpers; recent torch deprecates scripting.
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        for i, batch in enumerate(batches):
            wrapper = TracingWrapper(model, batch)
            analysis = analysis_class(wrapper, wrapper.flat_inputs)
            analysis.set_op_handle(**dict.fromkeys(ignored_ops))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            analysis.total()  # traces the model now
            unsupported.update(analysis.unsupported_ops())
            analyses.append(analysis)
            logger.info(f"{analysis_class.__name__}: input {i + 1}/{len(batches)} done")
    if unsupported:
        ops = ", ".join(f"{op} ({n} calls)" for op, n in unsupported.most_common())
        note = ""
        if "prim::CallFunction" in unsupported:
            note = "; prim::CallFunction calls a scripted function, whose operators are not seen"
        logger.warning(f"Not counted by {analysis_class.__name__}: {ops}{note}.")
    return analyses


def _summary(analyses: Sequence[JitModelAnalysis], scale: float) -> tuple[str, float, float]:
    """The mean count of each operator as a table, and the total's mean and std, over inputs."""
    by_operator: Counter[str] = Counter()
    for analysis in analyses:
        by_operator.update(analysis.by_operator())
    rows = [[op, count / len(analyses) / scale] for op, count in by_operator.most_common()]
    table = tabulate(rows, headers=["operator", "mean"], tablefmt="pipe", floatfmt=".4f")
    totals = np.array([analysis.total() for analysis in analyses], dtype=np.float64) / scale
    return table, float(totals.mean()), float(totals.std())


def do_parameter(cfg: CfgNode) -> str:
    """The parameter table by module (depth 5) and the total number of parameters.

    Args:
        cfg: the full config.

    Returns:
        The text printed.
    """
    model = _build_model(cfg, load_weights=False)
    total = parameter_count(model)[""]
    logger.info(f"parameter: {total:,} parameters")
    return f"{parameter_count_table(model, max_depth=5)}\nTotal parameters: {total:,}"


def do_flop(cfg: CfgNode, num_inputs: int) -> str:
    """Flops by module and operator, and total GFLOPs (mean ± std over the inputs).

    Args:
        cfg: the full config.
        num_inputs: test images to average over.

    Returns:
        The text printed.
    """
    model = _build_model(cfg, load_weights=True)
    batches = _test_batches(cfg, num_inputs)
    analyses = _count(model, batches, FlopCountAnalysis, _UNCOUNTED_OPS)
    table, mean, std = _summary(analyses, 1e9)
    logger.info(f"flop: {mean:.4f}±{std:.4f} GFLOPs over {len(analyses)} inputs")
    return (
        "Flops by module (first input):\n"
        f"{flop_count_table(analyses[0], max_depth=5)}\n\n"
        f"GFLOPs by operator (mean over {len(analyses)} inputs):\n{table}\n\n"
        f"Total GFLOPs: {mean:.4f}±{std:.4f} (mean±std over {len(analyses)} inputs)"
    )


def do_activation(cfg: CfgNode, num_inputs: int) -> str:
    """Activations by operator, and the total in millions (mean ± std over the inputs).

    Args:
        cfg: the full config.
        num_inputs: test images to average over.

    Returns:
        The text printed.
    """
    model = _build_model(cfg, load_weights=True)
    batches = _test_batches(cfg, num_inputs)
    ignored = _UNCOUNTED_OPS + _NO_ACTIVATION_OPS
    analyses = _count(model, batches, ActivationCountAnalysis, ignored)
    table, mean, std = _summary(analyses, 1e6)
    logger.info(f"activation: {mean:.4f}±{std:.4f} M activations over {len(analyses)} inputs")
    return (
        f"Million activations by operator (mean over {len(analyses)} inputs):\n{table}\n\n"
        f"Total million activations: {mean:.4f}±{std:.4f} "
        f"(mean±std over {len(analyses)} inputs)"
    )


def do_structure(cfg: CfgNode) -> str:
    """The model's structure as ``print(model)`` shows it.

    Args:
        cfg: the full config.

    Returns:
        The text printed.
    """
    return f"Model structure:\n{_build_model(cfg, load_weights=False)}"


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the tasks, printing their results.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        0; a bad command line or config exits with status 2 and a message.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    split_tasks_and_opts(parser, args, TASKS)
    if args.num_inputs < 1:
        parser.error("--num-inputs must be at least 1.")
    try:
        cfg = get_config(args.config_file, args.opts)
    except (OSError, KeyError, ValueError) as e:
        parser.error(str(e))
    if {"flop", "activation"} & set(args.tasks) and not len(cfg.DATASETS.TEST):
        parser.error("The flop and activation tasks need a dataset in DATASETS.TEST.")
    cfg.freeze()
    setup_logger()
    setup_logger(name="fvcore")
    logger.info(f"Analyzing {args.config_file}: tasks {args.tasks}")
    for task in args.tasks:
        if task == "parameter":
            text = do_parameter(cfg)
        elif task == "flop":
            text = do_flop(cfg, args.num_inputs)
        elif task == "activation":
            text = do_activation(cfg, args.num_inputs)
        else:
            text = do_structure(cfg)
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
