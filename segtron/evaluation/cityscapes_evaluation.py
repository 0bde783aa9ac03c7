"""Cityscapes instance and semantic evaluation through the official ``cityscapesscripts``.

Predictions are written in Cityscapes' submission format to a temporary folder shared by all
processes of one machine, then scored by the main process with the official scripts against
the ground truth under the dataset's ``gt_dir`` of the images processed (unlike Detectron2,
which takes every ground-truth file, so that an image the test loader skipped as unreadable
neither makes the script fail for want of a prediction nor counts as missed).
``cityscapesscripts`` is optional: constructing an evaluator without it raises ImportError with
the command that installs it.

Unlike Detectron2, the instance script runs inside the temporary folder, so the
``matches.json`` it always writes to the current directory does not land in the user's folder.
The official scripts (cityscapesscripts 2.3) were written for older NumPy; their ``np`` is
given back the two behaviours they rely on that recent NumPy changed: ``numpy.in1d`` (removed
in 2.4; restored as ``numpy.isin`` of the flattened input, its documented equivalent) and a
whole-array ``numpy.count_nonzero`` returning a Python ``int`` (now a NumPy integer, which the
instance script's ``json.dumps`` of its matches cannot write).
"""

from __future__ import annotations

import glob
import importlib
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image

from segtron.data import MetadataCatalog
from segtron.evaluation.evaluator import DatasetEvaluator
from segtron.utils.comm import all_gather, gather, get_rank, synchronize
from segtron.utils.file_io import PathManager

__all__ = ["CityscapesInstanceEvaluator", "CityscapesSemSegEvaluator"]

logger = logging.getLogger(__name__)


class _NumpyForCityscapesScripts(ModuleType):
    """NumPy with the ``in1d`` and ``count_nonzero`` that cityscapesscripts 2.3 expects."""

    def __init__(self) -> None:
        super().__init__(np.__name__)

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def in1d(ar1: Any, ar2: Any, assume_unique: bool = False, invert: bool = False) -> np.ndarray:
        """Whether each element of the flattened ``ar1`` is in ``ar2`` (``numpy.in1d``)."""
        return np.isin(np.ravel(ar1), ar2, assume_unique=assume_unique, invert=invert)

    @staticmethod
    def count_nonzero(a: Any, axis: Any = None, *, keepdims: bool = False) -> Any:
        """``numpy.count_nonzero``, a Python ``int`` when counting over the whole array."""
        count = np.count_nonzero(a, axis=axis, keepdims=keepdims)
        return int(count) if axis is None and not keepdims else count


def _cityscapes_module(name: str) -> ModuleType:
    """Import ``cityscapesscripts.<name>``, with installation advice when it is missing.

    A module using NumPy as ``np`` gets ``_NumpyForCityscapesScripts`` in its place.
    """
    try:
        module = importlib.import_module(f"cityscapesscripts.{name}")
    except ImportError as e:
        raise ImportError(
            "Cityscapes evaluation needs cityscapesscripts; install it with "
            '`pip install -e ".[cityscapes]"` (or `pip install cityscapesscripts`).'
        ) from e
    if getattr(module, "np", None) is np:
        module.np = _NumpyForCityscapesScripts()
    return module


def _frame_key(path: str) -> str:
    """``<city>_<sequence>_<frame>`` of a Cityscapes file: how the scripts pair files."""
    return "_".join(os.path.basename(path).split("_")[:3])


@contextmanager
def _working_directory(path: str) -> Iterator[None]:
    """Run the body with ``path`` as the current directory."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


class CityscapesEvaluator(DatasetEvaluator):
    """Base class: manages the shared results folder. Single-machine only.

    Args:
        dataset_name: a registered dataset whose metadata has ``gt_dir`` (and ``thing_classes``
            for instance evaluation).
    """

    def __init__(self, dataset_name: str) -> None:
        self._labels = _cityscapes_module("helpers.labels")
        self._metadata = MetadataCatalog.get(dataset_name)
        self._cpu_device = torch.device("cpu")

    def reset(self) -> None:
        self._working_dir = tempfile.TemporaryDirectory(prefix="cityscapes_eval_")
        # Every process writes into the folder of rank 0.
        self._temp_dir = all_gather(self._working_dir.name)[0]
        if self._temp_dir != self._working_dir.name:
            self._working_dir.cleanup()
        logger.info("Writing Cityscapes results to temporary directory %s ...", self._temp_dir)
        self._processed: list[str] = []

    def _basename(self, input_dict: dict) -> str:
        """The image's file name without extension, recorded as processed."""
        basename = os.path.splitext(os.path.basename(input_dict["file_name"]))[0]
        self._processed.append(basename)
        return basename

    def _processed_frames(self) -> set[str] | None:
        """The frames processed by every process, on the main process (None elsewhere)."""
        synchronize()
        processed = gather(self._processed, dst=0)
        if get_rank() > 0:
            return None
        return {_frame_key(name) for names in processed for name in names}

    def _evaluate_with(self, script: str, gt_pattern: str, frames: set[str]) -> dict:
        """Run the official ``script`` on the ground truths of `frames` matching the pattern."""
        try:
            cityscapes_eval = _cityscapes_module(f"evaluation.{script}")
            args = cityscapes_eval.args
            args.predictionPath = os.path.abspath(self._temp_dir)
            args.predictionWalk = None
            args.JSONOutput = False
            args.colorized = False
            args.gtInstancesFile = os.path.join(self._temp_dir, "gtInstances.json")
            gt_files = self._ground_truths(gt_pattern, frames)
            if script == "evalInstanceLevelSemanticLabeling":
                pred_files = [cityscapes_eval.getPrediction(gt, args) for gt in gt_files]
            else:
                pred_files = [cityscapes_eval.getPrediction(args, gt) for gt in gt_files]
            logger.info("Evaluating results under %s ...", self._temp_dir)
            # The instance script writes matches.json to the current directory.
            with _working_directory(self._temp_dir):
                return cityscapes_eval.evaluateImgLists(pred_files, gt_files, args)
        finally:
            self._working_dir.cleanup()

    def _ground_truths(self, gt_pattern: str, frames: set[str]) -> list[str]:
        """The ground-truth files of `frames` under ``gt_dir`` matching ``*/<gt_pattern>``."""
        gt_dir = os.path.abspath(PathManager.get_local_path(self._metadata.gt_dir))
        gt_files = sorted(glob.glob(os.path.join(glob.escape(gt_dir), "*", gt_pattern)))
        if not gt_files:
            raise FileNotFoundError(f"No ground truth '*/{gt_pattern}' under {gt_dir}.")
        processed = [gt for gt in gt_files if _frame_key(gt) in frames]
        if not processed:
            raise FileNotFoundError(
                f"No ground truth '*/{gt_pattern}' under {gt_dir} for the {len(frames)} "
                "processed images."
            )
        if len(processed) < len(gt_files):
            logger.info(
                "Scoring the %d processed images of the %d in %s.",
                len(processed),
                len(gt_files),
                gt_dir,
            )
        return processed


class CityscapesInstanceEvaluator(CityscapesEvaluator):
    """Instance segmentation AP and AP50 with Cityscapes' official script.

    Results: ``{"segm": {"AP", "AP50"}}`` in percent (main process only).
    """

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        name2label = self._labels.name2label
        for input_dict, output in zip(inputs, outputs):
            basename = self._basename(input_dict)
            pred_txt = os.path.join(self._temp_dir, basename + "_pred.txt")
            lines = []
            if "instances" in output:
                instances = output["instances"].to(self._cpu_device)
                for i in range(len(instances)):
                    class_name = self._metadata.thing_classes[int(instances.pred_classes[i])]
                    png_name = f"{basename}_{i}_{class_name}.png"
                    mask = instances.pred_masks[i].numpy().astype(np.uint8)
                    Image.fromarray(mask * 255).save(os.path.join(self._temp_dir, png_name))
                    score = float(instances.scores[i])
                    lines.append(f"{png_name} {name2label[class_name].id} {score}\n")
            # An empty file still tells the script that the image has no predictions.
            with open(pred_txt, "w") as f:
                f.writelines(lines)

    def evaluate(self) -> OrderedDict | None:
        frames = self._processed_frames()
        if frames is None:
            return None
        averages = self._evaluate_with(
            "evalInstanceLevelSemanticLabeling", "*_gtFine_instanceIds.png", frames
        )["averages"]
        return OrderedDict(segm={"AP": averages["allAp"] * 100, "AP50": averages["allAp50%"] * 100})


class CityscapesSemSegEvaluator(CityscapesEvaluator):
    """Semantic segmentation IoU / iIoU (classes and categories) with the official script.

    Predictions are train ids (the argmax of ``sem_seg``) mapped to Cityscapes label ids.
    Results: ``{"sem_seg": {"IoU", "iIoU", "IoU_sup", "iIoU_sup"}}`` in percent.
    """

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        train_id_to_label = self._labels.trainId2label
        for input_dict, output in zip(inputs, outputs):
            train_ids = output["sem_seg"].argmax(dim=0).to(self._cpu_device).numpy()
            pred = np.full(train_ids.shape, 255, dtype=np.uint8)
            for train_id, label in train_id_to_label.items():
                if not label.ignoreInEval:
                    pred[train_ids == train_id] = label.id
            pred_file = os.path.join(self._temp_dir, self._basename(input_dict) + "_pred.png")
            Image.fromarray(pred).save(pred_file)

    def evaluate(self) -> OrderedDict | None:
        frames = self._processed_frames()
        if frames is None:
            return None
        scores = self._evaluate_with(
            "evalPixelLevelSemanticLabeling", "*_gtFine_labelIds.png", frames
        )
        return OrderedDict(
            sem_seg={
                "IoU": 100.0 * scores["averageScoreClasses"],
                "iIoU": 100.0 * scores["averageScoreInstClasses"],
                "IoU_sup": 100.0 * scores["averageScoreCategories"],
                "iIoU_sup": 100.0 * scores["averageScoreInstCategories"],
            }
        )
