"""The :class:`PanopticDeepLab` meta-architecture (Cheng et al., 2020), in ``META_ARCH_REGISTRY``.

A backbone, a semantic decoder (``sem_seg_head``) and an instance decoder (``ins_embed_head``,
center heatmap and offsets); inference groups thing pixels around the predicted centers
(`post_processing`). Module names are Detectron2's, so its checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segtron.config import configurable
from segtron.data import MetadataCatalog
from segtron.layers import move_device_like
from segtron.modeling import (
    META_ARCH_REGISTRY,
    Backbone,
    build_backbone,
    build_sem_seg_head,
    sem_seg_postprocess,
)
from segtron.structures import ImageList

from .heads import (
    INS_EMBED_BRANCHES_REGISTRY,
    PanopticDeepLabInsEmbedHead,
    PanopticDeepLabSemSegHead,
    build_ins_embed_branch,
)
from .post_processing import get_instance_predictions, get_panoptic_segmentation

# The heads live in `heads`; Detectron2 defines them in this module, so they are importable
# from here too.
__all__ = [
    "INS_EMBED_BRANCHES_REGISTRY",
    "PanopticDeepLab",
    "PanopticDeepLabInsEmbedHead",
    "PanopticDeepLabSemSegHead",
    "build_ins_embed_branch",
]

_TARGET_KEYS = ("sem_seg", "center", "center_weights", "offset", "offset_weights")


@META_ARCH_REGISTRY.register()
class PanopticDeepLab(nn.Module):
    """Bottom-up panoptic segmentation: semantic labels plus class-agnostic instance centers.

    Training inputs carry the targets of ``PanopticDeeplabDatasetMapper``; inference returns
    per image ``sem_seg`` (C×H×W logits), ``panoptic_seg`` (an H×W id map with ids
    ``class * label_divisor + k`` and -1 for void, and ``None`` segments info) and, with
    ``predict_instances``, ``instances`` for AP.

    Unlike Detectron2, when the output size (``height``/``width``) differs from the network's
    input size, the offsets are rescaled with the maps, so that grouping stays right.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        ins_embed_head: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        thing_ids: Sequence[int],
        label_divisor: int,
        stuff_area: int,
        center_threshold: float,
        nms_kernel: int,
        top_k: int,
        predict_instances: bool = True,
        size_divisibility: int = -1,
        benchmark_network_speed: bool = False,
    ) -> None:
        """Create the model.

        Args:
            backbone: the feature extractor.
            sem_seg_head: a `PanopticDeepLabSemSegHead` (or a head with its interface).
            ins_embed_head: a `PanopticDeepLabInsEmbedHead`.
            pixel_mean, pixel_std: input normalization, per channel.
            thing_ids: contiguous ids of the thing classes.
            label_divisor: panoptic id = class * label_divisor + instance number.
            stuff_area: stuff segments smaller than this become void.
            center_threshold: minimum center heatmap value of an instance.
            nms_kernel: max-pooling window of the center NMS.
            top_k: maximum number of instances per image.
            predict_instances: also output ``instances``.
            size_divisibility: pad inputs to multiples of this; -1 uses the backbone's.
            benchmark_network_speed: inference returns ``[]`` right after the network.
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.ins_embed_head = ins_embed_head
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.thing_ids = sorted(int(i) for i in thing_ids)
        self.label_divisor = label_divisor
        self.stuff_area = stuff_area
        self.threshold = center_threshold
        self.nms_kernel = nms_kernel
        self.top_k = top_k
        self.predict_instances = predict_instances
        self.size_divisibility = size_divisibility
        self.benchmark_network_speed = benchmark_network_speed

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        """Build from MODEL.* and the metadata of DATASETS.TRAIN[0] (thing ids, label divisor).

        Raises:
            ValueError: the two USE_DEPTHWISE_SEPARABLE_CONV keys disagree, or the metadata
                has no thing classes.
        """
        pdl = cfg.MODEL.PANOPTIC_DEEPLAB
        if pdl.USE_DEPTHWISE_SEPARABLE_CONV != cfg.MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV:
            raise ValueError(
                "MODEL.PANOPTIC_DEEPLAB.USE_DEPTHWISE_SEPARABLE_CONV and "
                "MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV must be equal (the latter "
                "builds both heads); set both."
            )
        if not cfg.DATASETS.TRAIN:
            raise ValueError(
                "PanopticDeepLab reads its thing classes from the metadata of "
                "cfg.DATASETS.TRAIN[0], which is empty: set DATASETS.TRAIN."
            )
        meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
        if not meta.get("thing_dataset_id_to_contiguous_id", None):
            raise ValueError(
                f"The metadata of {cfg.DATASETS.TRAIN[0]!r} (DATASETS.TRAIN[0]) has no "
                "thing_dataset_id_to_contiguous_id: use a standard panoptic dataset such as "
                "'coco_2017_train_panoptic' or 'synthetic_train_panoptic'."
            )
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "sem_seg_head": build_sem_seg_head(cfg, backbone.output_shape()),
            "ins_embed_head": build_ins_embed_branch(cfg, backbone.output_shape()),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "thing_ids": list(meta.thing_dataset_id_to_contiguous_id.values()),
            "label_divisor": meta.get("label_divisor", 1000),
            "stuff_area": pdl.STUFF_AREA,
            "center_threshold": pdl.CENTER_THRESHOLD,
            "nms_kernel": pdl.NMS_KERNEL,
            "top_k": pdl.TOP_K_INSTANCE,
            "predict_instances": pdl.PREDICT_INSTANCES,
            "size_divisibility": pdl.SIZE_DIVISIBILITY,
            "benchmark_network_speed": pdl.BENCHMARK_NETWORK_SPEED,
        }

    @property
    def device(self) -> torch.device:
        """The device the model's tensors are on."""
        return self.pixel_mean.device

    def _batch(self, batched_inputs: list[dict], key: str, divisibility: int, pad: float = 0):
        tensors = [move_device_like(x[key], self.pixel_mean) for x in batched_inputs]
        return ImageList.from_tensors(tensors, divisibility, pad).tensor

    def forward(self, batched_inputs: list[dict[str, Any]]) -> Any:
        """Segment a batch of images, or compute the training losses.

        Args:
            batched_inputs: one dict per image with "image" (C×H×W, 0-255, INPUT.FORMAT),
                optional "height"/"width" (output size), and in training the targets of
                ``PanopticDeeplabDatasetMapper``: "sem_seg", "sem_seg_weights" (optional),
                "center", "center_weights", "offset", "offset_weights".

        Returns:
            In training a dict of losses (``loss_sem_seg``, ``loss_center``, ``loss_offset``);
            in inference one dict per image (see the class docstring).

        Raises:
            ValueError: in training, when an input lacks a target.
        """
        divisibility = (
            self.size_divisibility
            if self.size_divisibility > 0
            else self.backbone.size_divisibility
        )
        images = [move_device_like(x["image"], self.pixel_mean) for x in batched_inputs]
        images = ImageList.from_tensors(
            [(x - self.pixel_mean) / self.pixel_std for x in images], divisibility
        )
        features = self.backbone(images.tensor)

        if self.training:
            missing = [k for k in _TARGET_KEYS if k not in batched_inputs[0]]
            if missing:
                raise ValueError(
                    f"PanopticDeepLab needs the targets {missing} in training; set "
                    "INPUT.DATASET_MAPPER_NAME to 'PanopticDeeplabDatasetMapper' and train on a "
                    "standard panoptic dataset."
                )
            return self._losses(batched_inputs, features, divisibility)

        sem_seg_results, _ = self.sem_seg_head(features)
        center_results, offset_results, _, _ = self.ins_embed_head(features)
        if self.benchmark_network_speed:
            return []
        processed_results = []
        for sem_seg, center, offset, input_per_image, image_size in zip(
            sem_seg_results, center_results, offset_results, batched_inputs, images.image_sizes
        ):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            processed_results.append(
                self._postprocess(sem_seg, center, offset, image_size, height, width)
            )
        return processed_results

    def _losses(self, batched_inputs: list[dict], features: dict, divisibility: int) -> dict:
        sem_seg = self._batch(
            batched_inputs, "sem_seg", divisibility, self.sem_seg_head.ignore_value
        )
        weights = (
            self._batch(batched_inputs, "sem_seg_weights", divisibility)
            if "sem_seg_weights" in batched_inputs[0]
            else None
        )
        losses = dict(self.sem_seg_head(features, sem_seg, weights)[1])
        _, _, center_losses, offset_losses = self.ins_embed_head(
            features,
            self._batch(batched_inputs, "center", divisibility).unsqueeze(1),
            self._batch(batched_inputs, "center_weights", divisibility),
            self._batch(batched_inputs, "offset", divisibility),
            self._batch(batched_inputs, "offset_weights", divisibility),
        )
        losses.update(center_losses)
        losses.update(offset_losses)
        return losses

    def _postprocess(
        self,
        sem_seg: torch.Tensor,
        center: torch.Tensor,
        offset: torch.Tensor,
        image_size: tuple[int, int],
        height: int,
        width: int,
    ) -> dict[str, Any]:
        """One image's outputs at (height, width) from its padded network outputs."""
        r = sem_seg_postprocess(sem_seg, image_size, height, width)
        c = sem_seg_postprocess(center, image_size, height, width)
        o = sem_seg_postprocess(offset, image_size, height, width)
        scale = o.new_tensor([height / image_size[0], width / image_size[1]]).view(2, 1, 1)
        panoptic, _ = get_panoptic_segmentation(
            r.argmax(dim=0, keepdim=True),
            c,
            o * scale,
            thing_ids=self.thing_ids,
            label_divisor=self.label_divisor,
            stuff_area=self.stuff_area,
            void_label=-1,
            threshold=self.threshold,
            nms_kernel=self.nms_kernel,
            top_k=self.top_k,
        )
        panoptic = panoptic.squeeze(0)
        result: dict[str, Any] = {"sem_seg": r, "panoptic_seg": (panoptic, None)}
        if self.predict_instances:
            result["instances"] = get_instance_predictions(
                panoptic, r, c, self.thing_ids, self.label_divisor
            )
        return result
