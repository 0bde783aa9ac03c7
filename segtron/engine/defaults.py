"""The default ways to run segtron: argument parser, setup, predictor and trainer.

Names and behaviour follow Detectron2's ``engine/defaults.py``. segtron additions:
``DefaultTrainer`` seeds the random generators at every iteration from the run's seed, the rank
and the iteration, and checkpoints the training data stream (see
`segtron.data.samplers.TrainingBatchSampler`), so a resumed run reproduces an uninterrupted one;
a resume request without a checkpoint says so and starts from ``MODEL.WEIGHTS``; and
``build_evaluator`` picks evaluators from the dataset's metadata.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from segtron.checkpoint import DetectionCheckpointer
from segtron.config import CfgNode
from segtron.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from segtron.data import transforms as T
from segtron.data.samplers import TrainingBatchSampler
from segtron.engine import hooks
from segtron.engine.train_loop import AMPTrainer, SimpleTrainer, TrainerBase
from segtron.evaluation import (
    DatasetEvaluator,
    build_evaluator,
    inference_on_dataset,
    print_csv_format,
)
from segtron.evaluation.testing import verify_results
from segtron.modeling import build_model
from segtron.solver import build_lr_scheduler, build_optimizer
from segtron.utils import comm
from segtron.utils.env import seed_all_rng
from segtron.utils.events import CommonMetricPrinter, EventWriter, JSONWriter, TensorboardXWriter
from segtron.utils.file_io import PathManager
from segtron.utils.logger import setup_logger

__all__ = [
    "DefaultPredictor",
    "DefaultTrainer",
    "build_step_trainer",
    "create_ddp_model",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "split_tasks_and_opts",
]

logger = logging.getLogger(__name__)


# Recent torch renamed DDP's broadcast_buffers to forward_sync_buffers.
_DDP_SYNC_BUFFERS_ARG = (
    "forward_sync_buffers"
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else "broadcast_buffers"
)


def default_argument_parser(epilog: str | None = None) -> argparse.ArgumentParser:
    """Detectron2's command-line flags for training and evaluation scripts.

    Args:
        epilog: text shown after the flags in ``--help``.

    Returns:
        The parser: ``--config-file``, ``--resume``, ``--eval-only``, ``--num-gpus``,
        ``--num-machines``, ``--machine-rank``, ``--dist-url`` and trailing ``KEY VALUE`` opts.
    """
    parser = argparse.ArgumentParser(
        epilog=epilog
        or (
            "Examples:\n"
            "  python tools/train_net.py --config-file cfg.yaml\n"
            "  python tools/train_net.py --config-file cfg.yaml --num-gpus 8\n"
            "  python tools/train_net.py --config-file cfg.yaml --eval-only MODEL.WEIGHTS m.pth\n"
            "  python tools/train_net.py --config-file cfg.yaml --num-gpus 2 MODEL.DEVICE cpu\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="resume from OUTPUT_DIR/last_checkpoint (model, optimizer, scheduler, iteration, "
        "data order); without a checkpoint, start from MODEL.WEIGHTS",
    )
    parser.add_argument("--eval-only", action="store_true", help="perform evaluation only")
    parser.add_argument("--num-gpus", type=int, default=1, help="number of processes per machine")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument(
        "--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)"
    )
    # A port derived from the user id, so that two users of one machine do not collide.
    port = 2**15 + 2**14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2**14
    parser.add_argument(
        "--dist-url",
        default=f"tcp://127.0.0.1:{port}",
        help="initialization URL for torch.distributed ('auto' picks a free local port)",
    )
    parser.add_argument(
        "opts",
        help="Modify config options at the end of the command: space-separated KEY VALUE pairs, "
        "e.g. SOLVER.BASE_LR 0.001 MODEL.DEVICE cpu",
        default=None,
        nargs=argparse.REMAINDER,
    )
    return parser


def split_tasks_and_opts(
    parser: argparse.ArgumentParser, args: argparse.Namespace, choices: Sequence[str]
) -> None:
    """Give back to ``args.opts`` the ``KEY VALUE`` overrides that ``args.tasks`` swallowed.

    With ``--tasks`` taking several values, in ``--tasks flop MODEL.DEVICE cuda`` argparse reads
    everything after ``--tasks`` as tasks; the overrides start at the first upper-case word.
    Unknown tasks (or none) end the program through ``parser.error``.

    Args:
        parser: the tool's parser.
        args: its parsed arguments, with ``tasks`` and ``opts``; changed in place.
        choices: the valid tasks.
    """
    tasks = list(args.tasks)
    split = next((i for i, t in enumerate(tasks) if t not in choices and t.isupper()), len(tasks))
    args.tasks, args.opts = tasks[:split], tasks[split:] + list(args.opts or [])
    invalid = [t for t in args.tasks if t not in choices] or ([] if args.tasks else ["(none)"])
    if invalid:
        parser.error(
            f"argument --tasks: invalid choice: {invalid[0]!r} (choose from {', '.join(choices)})"
        )


def default_setup(cfg: CfgNode, args: argparse.Namespace | None) -> None:
    """Prepare a run: output folder, loggers, config dump, seeds, cudnn.

    Writes ``OUTPUT_DIR/log.txt`` (``log.txt.rank<N>`` on the other ranks) and, on the main
    process, ``OUTPUT_DIR/config.yaml``.

    Args:
        cfg: the full config.
        args: the parsed command line (logged), or None.
    """
    output_dir = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    if comm.is_main_process() and output_dir:
        PathManager.mkdirs(output_dir)
    setup_logger(output_dir, distributed_rank=rank, name="fvcore")
    log = setup_logger(output_dir, distributed_rank=rank, name="segtron")
    log.info(f"Rank of current process: {rank}. World size: {comm.get_world_size()}")
    if rank == 0 and dist.is_available() and dist.is_initialized():
        log.info(
            f"Initialized torch.distributed: backend {dist.get_backend()}, world size "
            f"{dist.get_world_size()}, {comm.get_local_size()} process(es) on this machine."
        )
    log.info(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    if args is not None:
        log.info(f"Command line arguments: {args}")
        config_file = getattr(args, "config_file", "")
        if config_file:
            with PathManager.open(config_file) as f:
                log.info(f"Contents of args.config_file={config_file}:\n{f.read()}")
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        with PathManager.open(path, "w") as f:
            f.write(cfg.dump())
        log.info(f"Full config saved to {path}")
    seed = seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    log.info(f"Random seed of this process: {seed}")
    if not (args is not None and getattr(args, "eval_only", False)):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


def default_writers(output_dir: str, max_iter: int | None = None) -> list[EventWriter]:
    """The console printer, ``OUTPUT_DIR/metrics.json`` and TensorBoard writers."""
    PathManager.mkdirs(output_dir)
    return [
        CommonMetricPrinter(max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardXWriter(output_dir),
    ]


def create_ddp_model(
    model: nn.Module,
    *,
    fp16_compression: bool = False,
    broadcast_buffers: bool | None = None,
    **kwargs: Any,
) -> Any:
    """Wrap `model` in DistributedDataParallel when more than one process runs.

    Args:
        model: the model, already on its device.
        fp16_compression: compress gradients to fp16 for the all-reduce (NCCL).
        broadcast_buffers: re-send rank 0's buffers (e.g. BN statistics) at every forward;
            passed under the name this torch version uses.
        **kwargs: more DistributedDataParallel arguments.
    """
    if comm.get_world_size() == 1:
        return model
    if broadcast_buffers is not None:
        kwargs[_DDP_SYNC_BUFFERS_ARG] = broadcast_buffers
    if next(model.parameters()).device.type == "cuda" and "device_ids" not in kwargs:
        kwargs["device_ids"] = [comm.get_local_rank()]
    ddp = DistributedDataParallel(model, **kwargs)
    if fp16_compression:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        ddp.register_comm_hook(state=None, hook=default_hooks.fp16_compress_hook)
    return ddp


def build_step_trainer(
    cfg: CfgNode, model: nn.Module, data_loader: Any, optimizer: torch.optim.Optimizer
) -> SimpleTrainer:
    """`AMPTrainer` (``SOLVER.AMP.PRECISION``) when ``SOLVER.AMP.ENABLED``, else `SimpleTrainer`."""
    if not cfg.SOLVER.AMP.ENABLED:
        return SimpleTrainer(model, data_loader, optimizer)
    precision = cfg.SOLVER.AMP.PRECISION
    if precision not in ("float16", "bfloat16"):
        raise ValueError(
            f"SOLVER.AMP.PRECISION must be 'float16' or 'bfloat16', got {precision!r}."
        )
    return AMPTrainer(model, data_loader, optimizer, precision=getattr(torch, precision))


class DefaultPredictor:
    """Run a model from a config on one BGR image, end to end.

    Loads ``MODEL.WEIGHTS``, resizes the image as at test time (``INPUT.MIN_SIZE_TEST``,
    ``INPUT.MAX_SIZE_TEST``), converts it to ``INPUT.FORMAT`` and returns the model's output
    at the image's original size.
    """

    def __init__(self, cfg: CfgNode) -> None:
        """Build the model and load its weights.

        Args:
            cfg: the full config.
        """
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {self.input_format!r}.")

    def __call__(self, original_image: np.ndarray) -> dict[str, Any]:
        """Predict on one image.

        Args:
            original_image: H×W×3 uint8 image in BGR order (as ``cv2.imread`` reads it).

        Returns:
            The model's output dict for the image (``instances``, ``sem_seg``,
            ``panoptic_seg``…).
        """
        if original_image.ndim != 3 or original_image.shape[2] != 3:
            raise ValueError(
                f"DefaultPredictor expects an H×W×3 BGR image, got shape {original_image.shape}."
            )
        with torch.no_grad():
            if self.input_format == "RGB":
                original_image = original_image[:, :, ::-1]
            height, width = original_image.shape[:2]
            image = self.aug.get_transform(original_image).apply_image(original_image)
            tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
            tensor = tensor.to(torch.float32).to(self.cfg.MODEL.DEVICE)
            return self.model([{"image": tensor, "height": height, "width": width}])[0]


class DefaultTrainer(TrainerBase):
    """A trainer with the default behaviour, built from a config.

    It builds the model, optimizer, LR scheduler, data loader, checkpointer and hooks
    (iteration timer, LR scheduler, precise BN, periodic checkpointer, periodic evaluation,
    writers); trains with `SimpleTrainer` or `AMPTrainer`; evaluates on ``DATASETS.TEST``.
    Override the ``build_*`` class methods to change a part.

    Example::

        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
    """

    def __init__(self, cfg: CfgNode) -> None:
        """Build everything the training needs.

        Args:
            cfg: the full config.
        """
        super().__init__()
        if not logging.getLogger("segtron").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.seed = int(cfg.SEED) if cfg.SEED >= 0 else comm.shared_random_seed()
        self._data_state: Mapping[str, Any] | None = None
        self._last_eval_results: Mapping[str, Any] | None = None
        self.register_hooks(self.build_hooks())

    @property
    def model(self) -> nn.Module:
        """The (possibly DDP-wrapped) model being trained."""
        return self._trainer.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer."""
        return self._trainer.optimizer

    @property
    def data_loader(self) -> Any:
        """The training data loader."""
        return self._trainer.data_loader

    def resume_or_load(self, resume: bool = True) -> None:
        """Resume from ``OUTPUT_DIR/last_checkpoint``, or load ``MODEL.WEIGHTS``.

        Resuming restores the model, optimizer, scheduler, grad scaler, iteration and the
        position in the training data; training continues at the next iteration. With
        ``resume`` and no checkpoint, the run starts from ``MODEL.WEIGHTS`` and says so.

        Args:
            resume: whether to look for a checkpoint in ``OUTPUT_DIR``.
        """
        if resume and not self.checkpointer.has_checkpoint():
            weights = self.cfg.MODEL.WEIGHTS
            start = (
                f"MODEL.WEIGHTS = {weights!r}"
                if weights
                else "random initialization (MODEL.WEIGHTS is empty)"
            )
            logger.warning(
                f"--resume: no checkpoint found in {self.cfg.OUTPUT_DIR!r} (no last_checkpoint "
                f"file); starting a new run from {start}."
            )
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = self.iter + 1
            logger.info(f"Resumed from {self.checkpointer.get_checkpoint_file()}.")
            self._reposition_data_loader()

    def _reposition_data_loader(self) -> None:
        batch_sampler = getattr(self.data_loader, "batch_sampler", None)
        if not isinstance(batch_sampler, TrainingBatchSampler) or self._data_state is None:
            logger.warning(
                "The training data loader cannot be repositioned; the resumed run reads a "
                "different data order than an uninterrupted one would."
            )
            return
        batch_sampler.load_state_dict(self._data_state, start_batch=self.start_iter)

    def build_hooks(self) -> list[hooks.HookBase | None]:
        """The default hooks: timer, LR scheduler, precise BN, checkpointer, evaluation, writers."""
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = 0  # PreciseBN needs no parallel loading
        precise_bn = None
        if cfg.TEST.PRECISE_BN.ENABLED and hooks.get_bn_modules(self.model):
            precise_bn = hooks.PreciseBN(
                cfg.TEST.EVAL_PERIOD,
                self.model,
                self.build_train_loader(cfg),
                cfg.TEST.PRECISE_BN.NUM_ITER,
            )
        ret: list[hooks.HookBase | None] = [
            hooks.IterationTimer(),
            hooks.LRScheduler(),
            precise_bn,
        ]
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))

        def test_and_save_results() -> Mapping[str, Any]:
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=20))
        return ret

    def build_writers(self) -> list[EventWriter]:
        """The default writers (console, metrics.json, TensorBoard)."""
        return default_writers(self.cfg.OUTPUT_DIR, self.max_iter)

    def train(self) -> Mapping[str, Any] | None:
        """Train from ``start_iter`` to ``SOLVER.MAX_ITER``.

        Returns:
            The last evaluation results, if any evaluation ran.
        """
        super().train(self.start_iter, self.max_iter)
        if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
            if self._last_eval_results is None:
                raise RuntimeError("TEST.EXPECTED_RESULTS is set but no evaluation ran.")
            verify_results(self.cfg, self._last_eval_results)
        return self._last_eval_results

    def run_step(self) -> None:
        """One iteration of the inner trainer, with the iteration's random seed."""
        seed_all_rng(self._iteration_seed(self.iter))
        self._trainer.iter = self.iter
        self._trainer.run_step()

    def _iteration_seed(self, iteration: int) -> int:
        sequence = np.random.SeedSequence([self.seed, comm.get_rank(), iteration])
        return int(sequence.generate_state(1)[0] % 2**31)

    def state_dict(self) -> dict[str, Any]:
        """The base state, the inner trainer's, the run's seed and the data stream's state."""
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        ret["seed"] = self.seed
        batch_sampler = getattr(self.data_loader, "batch_sampler", None)
        if isinstance(batch_sampler, TrainingBatchSampler):
            ret["data_loader"] = batch_sampler.state_dict()
        return ret

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])
        self.seed = int(state_dict.get("seed", self.seed))
        self._data_state = state_dict.get("data_loader")

    @classmethod
    def build_model(cls, cfg: CfgNode) -> nn.Module:
        """`segtron.modeling.build_model`, logging the model."""
        model = build_model(cfg)
        logging.getLogger(__name__).info(f"Model:\n{model}")
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        """`segtron.solver.build_optimizer`."""
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer) -> Any:
        """`segtron.solver.build_lr_scheduler`."""
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> Any:
        """`segtron.data.build_detection_train_loader` with the config's mapper."""
        return build_detection_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str) -> Any:
        """`segtron.data.build_detection_test_loader` for one dataset."""
        return build_detection_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None
    ) -> DatasetEvaluator:
        """The evaluators for a dataset, chosen by its metadata's ``evaluator_type``."""
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(
        cls,
        cfg: CfgNode,
        model: nn.Module,
        evaluators: DatasetEvaluator | Sequence[DatasetEvaluator | None] | None = None,
    ) -> Mapping[str, Any]:
        """Evaluate `model` on every dataset of ``DATASETS.TEST``.

        Args:
            cfg: the full config.
            model: the model to evaluate.
            evaluators: one per test dataset; None builds them with `build_evaluator`.

        Returns:
            ``{task: {metric: value}}`` for a single dataset, else ``{dataset: results}``.
        """
        if isinstance(evaluators, DatasetEvaluator):
            evaluators = [evaluators]
        if evaluators is not None and len(evaluators) != len(cfg.DATASETS.TEST):
            raise ValueError(
                f"{len(evaluators)} evaluators for {len(cfg.DATASETS.TEST)} test datasets."
            )
        results: OrderedDict[str, Any] = OrderedDict()
        for idx, dataset_name in enumerate(cfg.DATASETS.TEST):
            data_loader = cls.build_test_loader(cfg, dataset_name)
            evaluator = evaluators[idx] if evaluators is not None else None
            if evaluator is None:
                try:
                    evaluator = cls.build_evaluator(cfg, dataset_name)
                except NotImplementedError as e:
                    logger.warning(f"No evaluator for {dataset_name!r}, skipping it: {e}")
                    results[dataset_name] = {}
                    continue
            results_i = inference_on_dataset(model, data_loader, evaluator)
            results[dataset_name] = results_i
            if comm.is_main_process():
                if not isinstance(results_i, Mapping):
                    raise TypeError(
                        f"The evaluator of {dataset_name!r} must return a dict, got {results_i!r}."
                    )
                logger.info(f"Evaluation results for {dataset_name} in csv format:")
                print_csv_format(results_i)
        if len(results) == 1:
            return next(iter(results.values()))
        return results

    @staticmethod
    def auto_scale_workers(cfg: CfgNode, num_workers: int) -> CfgNode:
        """Scale batch size, LR, iterations and periods linearly to `num_workers` processes.

        Only when ``SOLVER.REFERENCE_WORLD_SIZE`` is set (non-zero) and differs from
        `num_workers`, as in Detectron2.
        """
        old_world_size = cfg.SOLVER.REFERENCE_WORLD_SIZE
        if old_world_size == 0 or old_world_size == num_workers:
            return cfg
        cfg = cfg.clone()
        frozen = cfg.is_frozen()
        cfg.defrost()
        if cfg.SOLVER.IMS_PER_BATCH % old_world_size != 0:
            raise ValueError("SOLVER.IMS_PER_BATCH must divide by SOLVER.REFERENCE_WORLD_SIZE.")
        scale = num_workers / old_world_size
        bs = cfg.SOLVER.IMS_PER_BATCH = int(round(cfg.SOLVER.IMS_PER_BATCH * scale))
        lr = cfg.SOLVER.BASE_LR = cfg.SOLVER.BASE_LR * scale
        max_iter = cfg.SOLVER.MAX_ITER = int(round(cfg.SOLVER.MAX_ITER / scale))
        cfg.SOLVER.WARMUP_ITERS = int(round(cfg.SOLVER.WARMUP_ITERS / scale))
        cfg.SOLVER.STEPS = tuple(int(round(s / scale)) for s in cfg.SOLVER.STEPS)
        cfg.TEST.EVAL_PERIOD = int(round(cfg.TEST.EVAL_PERIOD / scale))
        cfg.SOLVER.CHECKPOINT_PERIOD = int(round(cfg.SOLVER.CHECKPOINT_PERIOD / scale))
        cfg.SOLVER.REFERENCE_WORLD_SIZE = num_workers
        logger.info(
            f"Auto-scaling the config to batch_size={bs}, learning_rate={lr}, "
            f"max_iter={max_iter}, warmup={cfg.SOLVER.WARMUP_ITERS}."
        )
        if frozen:
            cfg.freeze()
        return cfg
