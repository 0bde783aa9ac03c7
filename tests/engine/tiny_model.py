"""A tiny semantic model and a training entry point for the engine tests.

Not a test module (no ``test_`` prefix): tests import it by name after putting this folder on
``sys.path``, so that processes spawned by ``launch`` can import it too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segtron.config import get_cfg
from segtron.data import DatasetCatalog
from segtron.data.datasets import register_synthetic
from segtron.engine import DefaultTrainer, HookBase, default_setup
from segtron.modeling import META_ARCH_REGISTRY
from segtron.structures import ImageList
from segtron.utils.events import get_event_storage

PREFIX = "enginetest"


class _TinySegModelBase(nn.Module):
    """Two convolutions predicting the 5 synthetic classes at full resolution."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 5, 1)
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(-1, 1, 1), False)

    def forward(self, batched_inputs):
        images = ImageList.from_tensors(
            [(x["image"].float() - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        )
        logits = self.conv2(F.relu(self.conv1(images.tensor)))
        if self.training:
            targets = ImageList.from_tensors(
                [x["sem_seg"] for x in batched_inputs], pad_value=255
            ).tensor
            return self.losses(F.cross_entropy(logits, targets.long(), ignore_index=255))
        results = []
        for i, x in enumerate(batched_inputs):
            h, w = images.image_sizes[i]
            out = logits[i : i + 1, :, :h, :w]
            size = (x.get("height", h), x.get("width", w))
            results.append({"sem_seg": F.interpolate(out, size=size, mode="bilinear")[0]})
        return results

    def losses(self, loss):
        return {"loss_sem_seg": loss}


@META_ARCH_REGISTRY.register()
class TinySegModel(_TinySegModelBase):
    """The tiny model."""


@META_ARCH_REGISTRY.register()
class TinyNaNModel(_TinySegModelBase):
    """The tiny model whose loss becomes NaN at iteration 4."""

    def losses(self, loss):
        if get_event_storage().iter == 4:
            loss = loss * float("nan")
        return {"loss_sem_seg": loss, "loss_const": loss.detach() * 0}


def register_data(root: str) -> None:
    """Register (once) and generate the small synthetic datasets under `root`."""
    if f"{PREFIX}_train_sem_seg" not in DatasetCatalog:
        register_synthetic(root, prefix=PREFIX, num_images={"train": 8, "val": 4})
    DatasetCatalog.get(f"{PREFIX}_val_sem_seg")


def make_cfg(root: str, output_dir: str, *opts: str):
    """A config that trains the tiny model for 8 iterations on the synthetic data."""
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.META_ARCHITECTURE",
            "TinySegModel",
            "MODEL.DEVICE",
            "cpu",
            "MODEL.PIXEL_STD",
            "[57.375, 57.12, 58.395]",
            "DATASETS.TRAIN",
            f"('{PREFIX}_train_sem_seg',)",
            "DATASETS.TEST",
            f"('{PREFIX}_val_sem_seg',)",
            "INPUT.MIN_SIZE_TRAIN",
            "(48, 64)",
            "INPUT.MAX_SIZE_TRAIN",
            "100",
            "INPUT.MIN_SIZE_TEST",
            "64",
            "INPUT.MAX_SIZE_TEST",
            "100",
            "DATALOADER.NUM_WORKERS",
            "0",
            "SOLVER.IMS_PER_BATCH",
            "4",
            "SOLVER.BASE_LR",
            "0.05",
            "SOLVER.MAX_ITER",
            "8",
            "SOLVER.STEPS",
            "(6,)",
            "SOLVER.WARMUP_ITERS",
            "2",
            "SOLVER.CHECKPOINT_PERIOD",
            "3",
            "TEST.EVAL_PERIOD",
            "0",
            "SEED",
            "7",
            "OUTPUT_DIR",
            output_dir,
            *opts,
        ]
    )
    register_data(root)
    return cfg


class SimulatedKill(Exception):
    """Raised by `CrashAt` to stop a run abruptly."""


class CrashAt(HookBase):
    """A hook that stops the run at the start of a given iteration (a simulated kill)."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def before_step(self) -> None:
        if self.trainer.iter == self.iteration:
            raise SimulatedKill(f"simulated kill at iteration {self.iteration}")


def train_main(root: str, output_dir: str, opts: tuple[str, ...], resume: bool, crash_at: int):
    """Train (in the current process or as one of several launched ones)."""
    cfg = make_cfg(root, output_dir, *opts)
    default_setup(cfg, None)
    trainer = DefaultTrainer(cfg)
    if crash_at >= 0:
        trainer.register_hooks([CrashAt(crash_at)])
    trainer.resume_or_load(resume=resume)
    return trainer.train()
