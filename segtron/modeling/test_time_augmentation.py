"""Test-time augmentation for semantic segmentation: `DatasetMapperTTA` and
`SemanticSegmentorWithTTA`.

The API follows ``detectron2.modeling.test_time_augmentation``: a mapper turns one input dict
into its augmented copies (resized to each of ``TEST.AUG.MIN_SIZES`` with ``TEST.AUG.MAX_SIZE``,
each also flipped horizontally when ``TEST.AUG.FLIP``), and a wrapper, built as
``SemanticSegmentorWithTTA(cfg, model, batch_size=3)``, runs the model on them and merges the
results. Detectron2 has such a wrapper only for R-CNN models; this one serves any model whose
outputs have ``sem_seg`` (SemanticSegmentor, PanopticFPN, project models).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from fvcore.transforms.transform import HFlipTransform, NoOpTransform, Transform
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from segtron.config import CfgNode, configurable
from segtron.data.transforms import (
    RandomFlip,
    ResizeShortestEdge,
    ResizeTransform,
    apply_augmentations,
)

__all__ = ["DatasetMapperTTA", "SemanticSegmentorWithTTA"]


class DatasetMapperTTA:
    """Makes the test-time augmented copies of one input dict of a model.

    Each copy is the input dict with "image" resized (short edge to one of `min_sizes`, long
    edge at most `max_size`) and possibly flipped, and "transforms": the transforms from the
    original image (of size "height" × "width") to the new one.
    """

    @configurable
    def __init__(self, min_sizes: Sequence[int], max_size: int, flip: bool = True) -> None:
        """Create the mapper.

        Args:
            min_sizes: the short-edge lengths to resize to.
            max_size: the upper bound of the long edge.
            flip: also make a horizontally flipped copy at each size.

        Raises:
            ValueError: when `min_sizes` is empty.
        """
        if not min_sizes:
            raise ValueError(
                "Test-time augmentation needs at least one size in TEST.AUG.MIN_SIZES."
            )
        self.min_sizes = [int(s) for s in min_sizes]
        self.max_size = max_size
        self.flip = flip

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, Any]:
        """Arguments from TEST.AUG.MIN_SIZES, MAX_SIZE and FLIP."""
        return {
            "min_sizes": cfg.TEST.AUG.MIN_SIZES,
            "max_size": cfg.TEST.AUG.MAX_SIZE,
            "flip": cfg.TEST.AUG.FLIP,
        }

    def __call__(self, dataset_dict: dict[str, Any]) -> list[dict[str, Any]]:
        """Augment one input dict.

        Args:
            dataset_dict: a model input with "image" (a C×H×W tensor) and optionally "height"
                and "width" (the original image's size; by default the image's).

        Returns:
            The augmented copies (other keys shared with `dataset_dict`, not copied).
        """
        image = dataset_dict["image"]
        numpy_image = image.permute(1, 2, 0).cpu().numpy()
        height, width = numpy_image.shape[:2]
        orig_shape = (dataset_dict.get("height", height), dataset_dict.get("width", width))
        if orig_shape != (height, width):
            pre_tfm: Transform = ResizeTransform(*orig_shape, height, width)
        else:
            pre_tfm = NoOpTransform()

        candidates = []
        for min_size in self.min_sizes:
            resize = ResizeShortestEdge(min_size, self.max_size)
            candidates.append([resize])
            if self.flip:
                candidates.append([resize, RandomFlip(prob=1.0)])

        ret = []
        for augmentations in candidates:
            new_image, tfms = apply_augmentations(augmentations, np.copy(numpy_image))
            augmented = dict(dataset_dict)
            augmented["image"] = torch.from_numpy(
                np.ascontiguousarray(new_image.transpose(2, 0, 1))
            )
            augmented["transforms"] = pre_tfm + tfms
            ret.append(augmented)
        return ret


class SemanticSegmentorWithTTA(nn.Module):
    """Runs a semantic segmentation model with test-time augmentation.

    Each image is segmented at every size and flip of the `DatasetMapperTTA`; each output is
    brought back to the original height and width (the model resizes it there, the wrapper
    undoes the flip), and the ``sem_seg`` scores are averaged. The result has only ``sem_seg``.
    """

    def __init__(
        self,
        cfg: CfgNode,
        model: nn.Module,
        tta_mapper: DatasetMapperTTA | None = None,
        batch_size: int = 3,
    ) -> None:
        """Wrap `model`.

        Args:
            cfg: the config (TEST.AUG.* build the default mapper).
            model: a model whose inference outputs have "sem_seg" (C×H×W scores at the input
                dict's "height" × "width"); a DistributedDataParallel is unwrapped.
            tta_mapper: makes the augmented inputs; by default ``DatasetMapperTTA(cfg)``.
            batch_size: how many augmented copies the model gets at once.
        """
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        self.cfg = cfg.clone()
        self.model = model
        self.tta_mapper = tta_mapper if tta_mapper is not None else DatasetMapperTTA(cfg)
        self.batch_size = batch_size

    def forward(self, batched_inputs: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        """Segment each image with test-time augmentation.

        Args:
            batched_inputs: model inputs, each with "image" and optionally "height"/"width"
                (the size of the output; by default the image's). A "sem_seg" label map is
                ignored.

        Returns:
            One dict per image with "sem_seg": the averaged (C, height, width) scores.

        Raises:
            ValueError: when the model's outputs have no "sem_seg", or not at the asked size.
        """
        return [self._inference_one_image(x) for x in batched_inputs]

    def _inference_one_image(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        inputs = {k: v for k, v in inputs.items() if k != "sem_seg"}
        if "image" not in inputs:
            raise ValueError("SemanticSegmentorWithTTA needs an 'image' tensor in every input.")
        inputs.setdefault("height", inputs["image"].shape[-2])
        inputs.setdefault("width", inputs["image"].shape[-1])
        augmented = self.tta_mapper(inputs)

        total: torch.Tensor | None = None
        for start in range(0, len(augmented), self.batch_size):
            batch = augmented[start : start + self.batch_size]
            with torch.no_grad():
                outputs = self.model(batch)
            for aug_input, output in zip(batch, outputs):
                scores = self._check_output(output, inputs["height"], inputs["width"]).float()
                if any(isinstance(t, HFlipTransform) for t in aug_input["transforms"].transforms):
                    scores = scores.flip(dims=[-1])
                total = scores if total is None else total + scores
        return {"sem_seg": total / len(augmented)}

    def _check_output(self, output: Any, height: int, width: int) -> torch.Tensor:
        name = type(self.model).__name__
        if not isinstance(output, dict) or "sem_seg" not in output:
            keys = sorted(output) if isinstance(output, dict) else type(output).__name__
            raise ValueError(
                f"Test-time augmentation (TEST.AUG.ENABLED True) supports models whose outputs "
                f"have 'sem_seg'; {name} returned {keys}. Set TEST.AUG.ENABLED False for it."
            )
        scores = output["sem_seg"]
        if tuple(scores.shape[-2:]) != (height, width):
            raise ValueError(
                f"{name} returned 'sem_seg' of size {tuple(scores.shape[-2:])} for an input with "
                f"height, width = {(height, width)}; test-time augmentation (TEST.AUG.ENABLED) "
                "needs models that resize their outputs to the input's 'height' and 'width'."
            )
        return scores
