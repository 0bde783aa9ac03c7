"""Two-stage detectors: :class:`GeneralizedRCNN` (Faster / Mask R-CNN) and :class:`ProposalNetwork`.

Both are registered in ``META_ARCH_REGISTRY``. Module names (``backbone``,
``proposal_generator``, ``roi_heads``), constructor arguments and outputs are those of
``detectron2.modeling.meta_arch.rcnn``, so Detectron2 model-zoo checkpoints load into these
models unchanged and give the same predictions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from segtron.config import configurable
from segtron.layers import move_device_like
from segtron.modeling.backbone import Backbone, build_backbone
from segtron.modeling.postprocessing import detector_postprocess
from segtron.modeling.proposal_generator import build_proposal_generator
from segtron.modeling.roi_heads import build_roi_heads
from segtron.structures import ImageList, Instances
from segtron.utils.events import get_event_storage

from .build import META_ARCH_REGISTRY

__all__ = ["GeneralizedRCNN", "ProposalNetwork"]

_MAX_VIS_PROPOSALS = 20


def _normalize_and_batch(
    batched_inputs: list[dict[str, Any]],
    backbone: Backbone,
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
) -> ImageList:
    """Move the images to the model's device, normalize them and pad them into one batch."""
    images = [move_device_like(x["image"], pixel_mean) for x in batched_inputs]
    images = [(x - pixel_mean) / pixel_std for x in images]
    return ImageList.from_tensors(
        images, backbone.size_divisibility, padding_constraints=backbone.padding_constraints
    )


def _register_pixel_stats(
    module: nn.Module,
    pixel_mean: tuple[float, ...] | list[float],
    pixel_std: tuple[float, ...] | list[float],
) -> None:
    """Add ``pixel_mean`` / ``pixel_std`` as (C, 1, 1) buffers left out of the state dict."""
    if len(pixel_mean) != len(pixel_std):
        raise ValueError(
            f"pixel_mean {list(pixel_mean)} and pixel_std {list(pixel_std)} must have one value "
            "per input channel each."
        )
    # Not persistent (as in Detectron2): they come from the config, not from checkpoints.
    module.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
    module.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)


@META_ARCH_REGISTRY.register()
class GeneralizedRCNN(nn.Module):
    """A generalized R-CNN: a backbone, a region proposal generator and per-region heads.

    Faster R-CNN and Mask R-CNN are instances of it, depending on the ROI heads. Input images
    are normalized with ``pixel_mean``/``pixel_std`` and padded to the backbone's size
    divisibility; predictions are rescaled to each input's "height"/"width".
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        proposal_generator: nn.Module | None,
        roi_heads: nn.Module,
        pixel_mean: tuple[float, ...] | list[float],
        pixel_std: tuple[float, ...] | list[float],
        input_format: str | None = None,
        vis_period: int = 0,
    ) -> None:
        """Create the model.

        Args:
            backbone: the feature extractor.
            proposal_generator: a module called as ``proposal_generator(images, features,
                gt_instances)`` that returns ``(proposals, losses)``; None to read
                precomputed proposals from the inputs' "proposals".
            roi_heads: a module called as ``roi_heads(images, features, proposals,
                gt_instances)`` that returns ``(results, losses)``.
            pixel_mean: per-channel mean subtracted from the input images.
            pixel_std: per-channel standard deviation the input images are divided by.
            input_format: channel order of the inputs ("BGR", "RGB", ...); needed to
                visualize training batches.
            vis_period: visualize ground-truth boxes and proposals every ``vis_period``
                training iterations into the event storage; 0 disables it.

        Raises:
            ValueError: when ``vis_period > 0`` without ``input_format``, or when the pixel
                statistics have different lengths.
        """
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.input_format = input_format
        self.vis_period = vis_period
        if vis_period > 0 and input_format is None:
            raise ValueError("GeneralizedRCNN(vis_period > 0) needs input_format to visualize.")
        _register_pixel_stats(self, pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        """Build the backbone, proposal generator and ROI heads from MODEL.*; INPUT.FORMAT,
        VIS_PERIOD, MODEL.PIXEL_MEAN / PIXEL_STD."""
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, backbone.output_shape()),
            "roi_heads": build_roi_heads(cfg, backbone.output_shape()),
            "input_format": cfg.INPUT.FORMAT,
            "vis_period": cfg.VIS_PERIOD,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self) -> torch.device:
        """The device the model's tensors are on."""
        return self.pixel_mean.device

    def _move_to_current_device(self, x: Any) -> Any:
        return move_device_like(x, self.pixel_mean)

    def visualize_training(
        self, batched_inputs: list[dict[str, Any]], proposals: list[Instances]
    ) -> None:
        """Put an image of the ground-truth boxes beside the top proposals into the storage.

        Only the first image of the batch is drawn: the ground truth on the left, up to 20
        top-scoring proposals on the right.

        Args:
            batched_inputs: the model's inputs, with "instances".
            proposals: the proposals of each image, sorted by decreasing objectness.
        """
        from segtron.data.detection_utils import convert_image_to_rgb
        from segtron.utils.visualizer import Visualizer

        inputs, props = batched_inputs[0], proposals[0]
        img = convert_image_to_rgb(inputs["image"].permute(1, 2, 0), self.input_format)
        gt_img = Visualizer(img).overlay_instances(boxes=inputs["instances"].gt_boxes).get_image()
        top = props.proposal_boxes[:_MAX_VIS_PROPOSALS].tensor.detach().cpu().numpy()
        prop_img = Visualizer(img).overlay_instances(boxes=top).get_image()
        vis_img = np.concatenate((gt_img, prop_img), axis=1).transpose(2, 0, 1)
        get_event_storage().put_image(
            "Left: GT bounding boxes;  Right: Predicted proposals", vis_img
        )

    def forward(
        self, batched_inputs: list[dict[str, Any]]
    ) -> dict[str, torch.Tensor] | list[dict[str, Instances]]:
        """Detect objects in a batch of images, or compute the training losses.

        Args:
            batched_inputs: one dict per image (the output of ``DatasetMapper``) with
                "image": a (C, H, W) tensor in the config's INPUT.FORMAT, 0-255;
                "instances" (training): ground-truth :class:`Instances` (gt_boxes,
                gt_classes, gt_masks for Mask R-CNN);
                "proposals" (optional): precomputed proposals, used when the model has no
                proposal generator;
                "height", "width" (optional): the size to rescale the predictions to,
                usually the original image size; by default the size of "image".

        Returns:
            In training, a dict of scalar losses. In inference, one dict per image with
            "instances": :class:`Instances` with pred_boxes, scores, pred_classes and, with a
            mask head, pred_masks ((N, height, width) bool masks).

        Raises:
            ValueError: in training, when the inputs have no "instances".
        """
        if not self.training:
            return self.inference(batched_inputs)
        if "instances" not in batched_inputs[0]:
            raise ValueError(
                f"{type(self).__name__} needs ground-truth 'instances' in every input dict in "
                "training; use a mapper that reads annotations (e.g. DatasetMapper)."
            )
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)

        if self.proposal_generator is not None:
            proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        else:
            proposals, proposal_losses = self._given_proposals(batched_inputs), {}

        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)

        losses: dict[str, torch.Tensor] = {}
        losses.update(detector_losses)
        losses.update(proposal_losses)
        return losses

    def inference(
        self,
        batched_inputs: list[dict[str, Any]],
        detected_instances: list[Instances] | None = None,
        do_postprocess: bool = True,
    ) -> list[dict[str, Instances]] | list[Instances]:
        """Run inference on a batch.

        Args:
            batched_inputs: as in :meth:`forward`.
            detected_instances: optional known detections, one :class:`Instances` per image
                with pred_boxes and pred_classes; box detection is then skipped and only the
                other per-region outputs (masks) are predicted.
            do_postprocess: whether to rescale the outputs to each input's height/width.

        Returns:
            With ``do_postprocess``, as :meth:`forward` in inference; otherwise the raw
            per-image :class:`Instances` at the network's input size.
        """
        if self.training:
            raise RuntimeError(f"{type(self).__name__}.inference() needs the model in eval mode.")
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)

        if detected_instances is None:
            if self.proposal_generator is not None:
                proposals, _ = self.proposal_generator(images, features, None)
            else:
                proposals = self._given_proposals(batched_inputs)
            results, _ = self.roi_heads(images, features, proposals, None)
        else:
            detected_instances = [x.to(self.device) for x in detected_instances]
            results = self.roi_heads.forward_with_given_boxes(features, detected_instances)

        if do_postprocess:
            return GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
        return results

    def _given_proposals(self, batched_inputs: list[dict[str, Any]]) -> list[Instances]:
        """The precomputed proposals of the inputs, for a model without proposal generator."""
        if "proposals" not in batched_inputs[0]:
            raise ValueError(
                f"{type(self).__name__} has no proposal generator, so every input dict needs "
                "precomputed 'proposals' (MODEL.LOAD_PROPOSALS with DATASETS.PROPOSAL_FILES_*)."
            )
        return [x["proposals"].to(self.device) for x in batched_inputs]

    def preprocess_image(self, batched_inputs: list[dict[str, Any]]) -> ImageList:
        """Normalize, pad and batch the input images.

        Args:
            batched_inputs: as in :meth:`forward`.

        Returns:
            The padded batch, with each image's size before padding.
        """
        return _normalize_and_batch(batched_inputs, self.backbone, self.pixel_mean, self.pixel_std)

    @staticmethod
    def _postprocess(
        instances: list[Instances],
        batched_inputs: list[dict[str, Any]],
        image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Instances]]:
        """Rescale each image's predictions to its input's "height"/"width" (default: as is)."""
        processed_results = []
        for results_per_image, input_per_image, image_size in zip(
            instances, batched_inputs, image_sizes
        ):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            processed_results.append(
                {"instances": detector_postprocess(results_per_image, height, width)}
            )
        return processed_results


@META_ARCH_REGISTRY.register()
class ProposalNetwork(nn.Module):
    """A backbone and a proposal generator: a model that only predicts object proposals."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        proposal_generator: nn.Module,
        pixel_mean: tuple[float, ...] | list[float],
        pixel_std: tuple[float, ...] | list[float],
    ) -> None:
        """Create the model.

        Args:
            backbone: the feature extractor.
            proposal_generator: see :class:`GeneralizedRCNN`.
            pixel_mean: per-channel mean subtracted from the input images.
            pixel_std: per-channel standard deviation the input images are divided by.
        """
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        _register_pixel_stats(self, pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        """Build the backbone and proposal generator; MODEL.PIXEL_MEAN / PIXEL_STD."""
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, backbone.output_shape()),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self) -> torch.device:
        """The device the model's tensors are on."""
        return self.pixel_mean.device

    def forward(
        self, batched_inputs: list[dict[str, Any]]
    ) -> dict[str, torch.Tensor] | list[dict[str, Instances]]:
        """Predict proposals for a batch, or compute the proposal losses in training.

        Args:
            batched_inputs: as in :meth:`GeneralizedRCNN.forward`.

        Returns:
            In training, a dict of scalar losses. In inference, one dict per image with
            "proposals": :class:`Instances` with proposal_boxes and objectness_logits, at the
            input's "height"/"width".
        """
        images = _normalize_and_batch(
            batched_inputs, self.backbone, self.pixel_mean, self.pixel_std
        )
        features = self.backbone(images.tensor)
        if "instances" in batched_inputs[0]:
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        else:
            gt_instances = None
        # Proposals are computed in training too, although only the losses are used.
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        if self.training:
            return proposal_losses

        processed_results = []
        for results_per_image, input_per_image, image_size in zip(
            proposals, batched_inputs, images.image_sizes
        ):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            processed_results.append(
                {"proposals": detector_postprocess(results_per_image, height, width)}
            )
        return processed_results
