#!/usr/bin/env python
"""Train or evaluate any segtron model from its config file.

    python tools/train_net.py --config-file configs/Synthetic/semantic_R_18_FPN.yaml
    python tools/train_net.py --config-file CFG --resume
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS OUTPUT_DIR/model_final.pth
    python tools/train_net.py --config-file CFG --num-gpus 8
    python tools/train_net.py --config-file CFG --num-gpus 2 MODEL.DEVICE cpu   # two gloo processes

Every installed project's config keys and models are available (segtron.projects). Writes
``config.yaml``, ``log.txt``, ``metrics.json``, TensorBoard events, checkpoints and
``final_results.{json,txt}`` (the last evaluation) under ``OUTPUT_DIR``. With
``TEST.AUG.ENABLED True``, semantic models are also evaluated with test-time augmentation
(``TEST.AUG.MIN_SIZES``, ``MAX_SIZE``, ``FLIP``); those results have keys ending in ``_TTA``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import numbers
import os
import sys
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from segtron.checkpoint import DetectionCheckpointer
from segtron.config import CfgNode
from segtron.engine import (
    DefaultTrainer,
    default_argument_parser,
    default_setup,
    hooks,
    launch,
)
from segtron.evaluation import DatasetEvaluator, format_results_table, verify_results
from segtron.modeling import SemanticSegmentorWithTTA
from segtron.projects import get_config
from segtron.utils import comm

logger = logging.getLogger("segtron.tools.train_net")


class Trainer(DefaultTrainer):
    """`DefaultTrainer` that also evaluates with test-time augmentation when TEST.AUG.ENABLED.

    As in Detectron2's train_net: the results with augmentation have keys with a "_TTA" suffix
    (``sem_seg_TTA``) and the evaluators write under ``OUTPUT_DIR/inference_TTA``.
    """

    def __init__(self, cfg: CfgNode) -> None:
        self._last_tta_results: Mapping[str, Any] | None = None
        super().__init__(cfg)

    def build_hooks(self) -> list[hooks.HookBase | None]:
        """The default hooks, plus an evaluation with TTA right after the plain one."""
        ret = super().build_hooks()
        if self.cfg.TEST.AUG.ENABLED:
            # Same place on every process, and before the writers, which then record it.
            index = 1 + max(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook))
            ret.insert(index, hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self._eval_with_tta))
        return ret

    def _eval_with_tta(self) -> Mapping[str, Any]:
        self._last_tta_results = self.test_with_TTA(self.cfg, self.model)
        return self._last_tta_results

    def train(self) -> Mapping[str, Any] | None:
        """Train; return the last evaluation results, with TTA ones when TEST.AUG.ENABLED."""
        results = super().train()
        if self._last_tta_results:
            results = {**(results or {}), **self._last_tta_results}
        return results

    @classmethod
    def test_with_TTA(cls, cfg: CfgNode, model: Any) -> Mapping[str, Any]:
        """Evaluate `model` wrapped in `SemanticSegmentorWithTTA`; keys get a "_TTA" suffix."""
        logger.info("Running inference with test-time augmentation ...")
        model = SemanticSegmentorWithTTA(cfg, model)
        evaluators: list[DatasetEvaluator | None] = []
        for name in cfg.DATASETS.TEST:
            try:
                folder = os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name)
                evaluators.append(cls.build_evaluator(cfg, name, output_folder=folder))
            except NotImplementedError:
                evaluators.append(None)  # test() warns and skips the dataset
        results = cls.test(cfg, model, evaluators)
        return OrderedDict((f"{k}_TTA", v) for k, v in results.items())


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
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results = {**results, **Trainer.test_with_TTA(cfg, model)}
        if comm.is_main_process():
            verify_results(cfg, results)
        write_final_results(cfg, results)
        return results
    trainer = Trainer(cfg)
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
