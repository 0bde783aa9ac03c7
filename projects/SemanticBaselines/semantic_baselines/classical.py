"""``ClassicalSegmentor``: Otsu, k-means and GrabCut under the model contract, without training.

A parameter-free meta-architecture (``MODEL.META_ARCHITECTURE: "ClassicalSegmentor"``) that
``tools/train_net.py --eval-only`` evaluates like any model. ``MODEL.CLASSICAL.METHOD`` picks
the method of :mod:`.classical_methods`; its segments are named by a :class:`ClassModel` fitted,
when the model is built, on the first ``MODEL.CLASSICAL.TRAIN_IMAGES`` images of
``DATASETS.TRAIN[0]`` (never on the test split). The statistics are buffers, saved with the
model. The output is a one-hot (C, height, width) ``sem_seg`` score map.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from segtron.config import configurable
from segtron.data import DatasetCatalog
from segtron.data.detection_utils import read_image
from segtron.modeling import META_ARCH_REGISTRY

from .classical_methods import (
    ClassModel,
    grabcut_segments,
    kmeans_segments,
    name_segments,
    otsu_segments,
    pixel_features,
    split_components,
)

__all__ = ["CLASSICAL_METHODS", "ClassicalSegmentor", "fit_class_model_on_dataset"]

CLASSICAL_METHODS = ("otsu", "kmeans", "grabcut")
logger = logging.getLogger(__name__)


def fit_class_model_on_dataset(
    dataset_name: str, num_classes: int, ignore_value: int, input_format: str, max_images: int
) -> ClassModel:
    """Fit a :class:`ClassModel` on the first images of a semantic segmentation dataset.

    Args:
        dataset_name: a registered dataset whose dicts have ``sem_seg_file_name``.
        num_classes: number of classes.
        ignore_value: label to skip.
        input_format: channel order the images are read in (the model's INPUT.FORMAT).
        max_images: number of images to read.

    Returns:
        The fitted model.

    Raises:
        ValueError: when the dataset has no semantic labels.
    """
    dicts = DatasetCatalog.get(dataset_name)[: max(1, max_images)]
    if not dicts or "sem_seg_file_name" not in dicts[0]:
        raise ValueError(
            f"ClassicalSegmentor names its segments from the semantic labels of "
            f"cfg.DATASETS.TRAIN[0] = {dataset_name!r}, which has no 'sem_seg_file_name'; use a "
            "semantic segmentation dataset (e.g. synthetic_train_sem_seg)."
        )

    def samples():
        for d in dicts:
            labels = np.asarray(Image.open(d["sem_seg_file_name"]))
            yield read_image(d["file_name"], format=input_format), labels

    model = ClassModel.fit(samples(), num_classes, ignore_value)
    logger.info(f"ClassicalSegmentor: class statistics from {len(dicts)} images of {dataset_name}")
    return model


@META_ARCH_REGISTRY.register()
class ClassicalSegmentor(nn.Module):
    """Segment with a classical method, name segments with training statistics.

    Args:
        method: "otsu", "kmeans" or "grabcut".
        class_model: the statistics that name the segments.
        input_format: channel order of the input images ("BGR", "RGB").
        split_components: name each connected component of a segment on its own.
        kmeans_k: number of k-means clusters.
        kmeans_attempts: k-means restarts.
        grabcut_iters: GrabCut iterations.
        grabcut_margin: relative width of GrabCut's initial background band.
    """

    @configurable
    def __init__(
        self,
        *,
        method: str,
        class_model: ClassModel,
        input_format: str = "BGR",
        split_components: bool = True,
        kmeans_k: int = 4,
        kmeans_attempts: int = 3,
        grabcut_iters: int = 5,
        grabcut_margin: float = 0.1,
    ) -> None:
        super().__init__()
        if method not in CLASSICAL_METHODS:
            raise ValueError(
                f"cfg.MODEL.CLASSICAL.METHOD = {method!r} is not supported: use one of "
                f"{list(CLASSICAL_METHODS)}"
            )
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"ClassicalSegmentor needs INPUT.FORMAT BGR or RGB: {input_format}")
        self.method = method
        self.input_format = input_format
        self.split_components = split_components
        self.kmeans_k = kmeans_k
        self.kmeans_attempts = kmeans_attempts
        self.grabcut_iters = grabcut_iters
        self.grabcut_margin = grabcut_margin
        self.register_buffer("class_means", torch.as_tensor(class_model.means))
        self.register_buffer("class_variances", torch.as_tensor(class_model.variances))
        self.register_buffer("class_log_prior", torch.as_tensor(class_model.log_prior))

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        """Arguments from MODEL.CLASSICAL.*, fitting the class model on DATASETS.TRAIN[0]."""
        c = cfg.MODEL.CLASSICAL
        if c.METHOD not in CLASSICAL_METHODS:
            raise ValueError(
                f"cfg.MODEL.CLASSICAL.METHOD = {c.METHOD!r} is not supported: use one of "
                f"{list(CLASSICAL_METHODS)}"
            )
        if not cfg.DATASETS.TRAIN:
            raise ValueError(
                "ClassicalSegmentor names its segments from training labels: set "
                "cfg.DATASETS.TRAIN (e.g. ('synthetic_train_sem_seg',))."
            )
        head = cfg.MODEL.SEM_SEG_HEAD
        class_model = fit_class_model_on_dataset(
            cfg.DATASETS.TRAIN[0],
            head.NUM_CLASSES,
            head.IGNORE_VALUE,
            cfg.INPUT.FORMAT,
            c.TRAIN_IMAGES,
        )
        return {
            "method": c.METHOD,
            "class_model": class_model,
            "input_format": cfg.INPUT.FORMAT,
            "split_components": c.SPLIT_COMPONENTS,
            "kmeans_k": c.KMEANS_K,
            "kmeans_attempts": c.KMEANS_ATTEMPTS,
            "grabcut_iters": c.GRABCUT_ITERS,
            "grabcut_margin": c.GRABCUT_MARGIN,
        }

    @property
    def device(self) -> torch.device:
        """The device of the outputs."""
        return self.class_means.device

    def _class_model(self) -> ClassModel:
        return ClassModel(
            self.class_means.cpu().numpy(),
            self.class_variances.cpu().numpy(),
            self.class_log_prior.cpu().numpy(),
        )

    def segments(self, image_bgr: np.ndarray) -> np.ndarray:
        """The unlabeled segments of an H×W×3 uint8 BGR image (H×W int map)."""
        if self.method == "otsu":
            return otsu_segments(image_bgr)
        if self.method == "kmeans":
            return kmeans_segments(image_bgr, self.kmeans_k, self.kmeans_attempts)
        return grabcut_segments(image_bgr, self.grabcut_iters, self.grabcut_margin)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class labels of an H×W×3 image in ``input_format`` (H×W int map)."""
        image = np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8))
        bgr = image if self.input_format == "BGR" else np.ascontiguousarray(image[..., ::-1])
        segments = self.segments(bgr)
        if self.split_components:
            segments = split_components(segments)
        log_posterior = self._class_model().log_posterior(pixel_features(image))
        return name_segments(segments, log_posterior)

    def forward(self, batched_inputs: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        """Segment each image.

        Args:
            batched_inputs: dicts with "image" ((3, H, W) tensor in ``input_format``, 0-255)
                and optionally "height"/"width" to resize the output to (nearest neighbour).

        Returns:
            One dict per image with "sem_seg": one-hot (num_classes, height, width) scores.

        Raises:
            RuntimeError: in training mode: the method has nothing to learn.
        """
        if self.training:
            raise RuntimeError(
                "ClassicalSegmentor has no parameters to train: evaluate it with "
                "tools/train_net.py --eval-only."
            )
        num_classes = self.class_means.shape[0]
        results = []
        for inputs in batched_inputs:
            image = inputs["image"]
            hwc = image.permute(1, 2, 0).cpu().numpy()
            if hwc.shape[-1] != 3:
                raise ValueError(f"ClassicalSegmentor needs 3-channel images, got {hwc.shape}")
            labels = torch.as_tensor(self.predict(hwc), device=self.device)
            height = inputs.get("height", image.shape[-2])
            width = inputs.get("width", image.shape[-1])
            if labels.shape != (height, width):
                labels = F.interpolate(labels[None, None].float(), size=(height, width))[0, 0]
            scores = F.one_hot(labels.long(), num_classes).permute(2, 0, 1).float()
            results.append({"sem_seg": scores})
        return results
