#!/usr/bin/env python
"""Train or evaluate any segtron model from its config file.

    python tools/train_net.py --config-file configs/Synthetic/semantic_R_18_FPN.yaml
    python tools/train_net.py --config-file CFG --resume
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS OUTPUT_DIR/model_final.pth
    python tools/train_net.py --config-file CFG --num-gpus 8
    python tools/train_net.py --config-file CFG --num-gpus 2 MODEL.DEVICE cpu   # two gloo processes

Every installed project's config keys and models are available (segtron.projects). Writes
``config.yaml``, ``log.txt``, ``metrics.json``, TensorBoard events, checkpoints and
``final_results.{json,txt}`` (the last evaluation) under ``OUTPUT_DIR``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import numbers
import os
import sys
from collections.abc import Mapping
from typing import Any

from segtron.checkpoint import DetectionCheckpointer
from segtron.config import CfgNode
from segtron.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from segtron.evaluation import format_results_table, verify_results
from segtron.projects import get_config
from segtron.utils import comm

logger = logging.getLogger("segtron.tools.train_net")


def setup(args: argparse.Namespace) -> CfgNode:
    """Build the frozen config of the run and prepare its output folder and logs."""
    cfg = get_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def _json_safe(value: Any) -> Any:
    """`value` with NaN and infinite numbers as None, so that it is standard JSON.

    Metrics of classes absent from the ground truth and the predictions (``IoU-<class>``, ...)
    are NaN; ``json.dump`` would write them as ``NaN``, which strict JSON readers reject.
    """
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value) if not isinstance(value, numbers.Integral) else int(value)
        return value if not isinstance(value, float) or math.isfinite(value) else None
    return value


def write_final_results(cfg: CfgNode, results: Mapping[str, Any] | None) -> None:
    """Write the last evaluation to OUTPUT_DIR/final_results.json and .txt (main process).

    NaN metrics are written as ``null`` in the JSON file (``nan`` in the table).
    """
    if not results or not comm.is_main_process():
        return
    table = format_results_table(results)
    logger.info(f"Final evaluation:\n{table}")
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with open(os.path.join(cfg.OUTPUT_DIR, "final_results.json"), "w") as f:
        json.dump(_json_safe(results), f, indent=2, allow_nan=False)
    with open(os.path.join(cfg.OUTPUT_DIR, "final_results.txt"), "w") as f:
        f.write(table + "\n")


def main(args: argparse.Namespace) -> Mapping[str, Any] | None:
    """Train (or, with --eval-only, evaluate) the model of ``args.config_file``."""
    cfg = setup(args)
    if args.eval_only:
        model = DefaultTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = DefaultTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        write_final_results(cfg, results)
        return results
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    write_final_results(cfg, results)
    return results


def _backend(args: argparse.Namespace) -> str | None:
    """gloo when the config asks for CPU (so ``--num-gpus 2 MODEL.DEVICE cpu`` works)."""
    device = get_config(args.config_file, args.opts).MODEL.DEVICE
    return "gloo" if str(device).startswith("cpu") else None


def cli(argv: list[str] | None = None) -> int:
    """Parse the command line and launch `main` on every process."""
    args = default_argument_parser().parse_args(argv)
    try:
        backend = _backend(args)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"train_net.py: error: {e}", file=sys.stderr)
        return 2
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        backend=backend,
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli())
