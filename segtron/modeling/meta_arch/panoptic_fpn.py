"""Panoptic FPN (Kirillov et al., 2019): Mask R-CNN plus a semantic head on the same FPN.

:class:`PanopticFPN` is registered in ``META_ARCH_REGISTRY``; it predicts instances and a
semantic map of stuff classes (class 0 being "any thing"), and combines them into a panoptic
segmentation with :func:`combine_semantic_and_instance_outputs`, the heuristic of the panoptic
API's ``combine_semantic_and_instance_predictions.py``. Names and behaviour follow
``detectron2.modeling.meta_arch.panoptic_fpn``, so Detectron2 checkpoints load unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from segtron.config import configurable
from segtron.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from segtron.structures import ImageList, Instances

from .build import META_ARCH_REGISTRY
from .rcnn import GeneralizedRCNN
from .semantic_seg import build_sem_seg_head

__all__ = ["PanopticFPN", "combine_semantic_and_instance_outputs"]

logger = logging.getLogger(__name__)


def _scale_loss_weight(
    weight: float | dict[str, float], factor: float, loss_names: tuple[str, ...] = ()
) -> float | dict[str, float]:
    """Multiply a head's ``loss_weight`` (a number or a dict of them by loss name) by ``factor``.

    Args:
        weight: the head's ``loss_weight``.
        factor: the multiplier.
        loss_names: the losses of the head; those a dict leaves out (weight 1) are added, so
            that they are scaled too.
    """
    if isinstance(weight, dict):
        complete = {name: 1.0 for name in loss_names} | weight
        return {name: value * factor for name, value in complete.items()}
    return weight * factor


@META_ARCH_REGISTRY.register()
class PanopticFPN(GeneralizedRCNN):
    """Mask R-CNN with a semantic segmentation head, combined into panoptic segmentation.

    The semantic head predicts the stuff classes and one class for all things (class 0). In
    training the losses of the RPN, the ROI heads and the semantic head are returned together.
    """

    @configurable
    def __init__(
        self,
        *,
        sem_seg_head: nn.Module,
        combine_overlap_thresh: float = 0.5,
        combine_stuff_area_thresh: float = 4096,
        combine_instances_score_thresh: float = 0.5,
        **kwargs: Any,
    ) -> None:
        """Create the model.

        Args:
            sem_seg_head: the semantic head (e.g. :class:`SemSegFPNHead`), called as
                ``sem_seg_head(features, targets)``.
            combine_overlap_thresh: an instance is dropped when more than this fraction of its
                mask is already covered by higher-scoring instances.
            combine_stuff_area_thresh: stuff regions smaller than this (in pixels) are dropped.
            combine_instances_score_thresh: instances scoring below this are dropped.
            **kwargs: the arguments of :class:`GeneralizedRCNN`.
        """
        super().__init__(**kwargs)
        self.sem_seg_head = sem_seg_head
        self.combine_overlap_thresh = combine_overlap_thresh
        self.combine_stuff_area_thresh = combine_stuff_area_thresh
        self.combine_instances_score_thresh = combine_instances_score_thresh

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        """:meth:`GeneralizedRCNN.from_config` plus MODEL.SEM_SEG_HEAD and MODEL.PANOPTIC_FPN.

        ``MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT`` scales the losses of the box predictor and
        of the mask head (not the RPN's), as in Detectron2. Unlike Detectron2, whose box
        predictor weights only the losses named in its ``loss_weight`` dict (by default just
        ``loss_box_reg``), it scales ``loss_cls`` too.
        """
        ret = super().from_config(cfg)
        panoptic = cfg.MODEL.PANOPTIC_FPN
        ret["sem_seg_head"] = build_sem_seg_head(cfg, ret["backbone"].output_shape())
        ret["combine_overlap_thresh"] = panoptic.COMBINE.OVERLAP_THRESH
        ret["combine_stuff_area_thresh"] = panoptic.COMBINE.STUFF_AREA_LIMIT
        ret["combine_instances_score_thresh"] = panoptic.COMBINE.INSTANCES_CONFIDENCE_THRESH
        if not panoptic.COMBINE.ENABLED:
            logger.warning(
                "MODEL.PANOPTIC_FPN.COMBINE.ENABLED is not used: the panoptic output is always "
                "computed; call model.inference(inputs, do_postprocess=False) for raw outputs."
            )
        weight = panoptic.INSTANCE_LOSS_WEIGHT
        if weight != 1.0:
            roi_heads = ret["roi_heads"]
            predictor, mask_head = roi_heads.box_predictor, roi_heads.mask_head
            predictor.loss_weight = _scale_loss_weight(
                predictor.loss_weight, weight, ("loss_cls", "loss_box_reg")
            )
            mask_head.loss_weight = _scale_loss_weight(mask_head.loss_weight, weight)
        return ret

    def forward(
        self, batched_inputs: list[dict[str, Any]]
    ) -> dict[str, torch.Tensor] | list[dict[str, Any]]:
        """Segment a batch of images, or compute the training losses.

        Args:
            batched_inputs: one dict per image (the output of ``DatasetMapper``) with
                "image": a (C, H, W) tensor in the config's INPUT.FORMAT, 0-255;
                "instances" and "sem_seg" (training): ground-truth :class:`Instances` and an
                (H, W) integer map of the semantic head's classes;
                "height", "width" (optional): the output size, by default that of "image".

        Returns:
            In training, a dict of scalar losses. In inference, one dict per image with
            "instances" (as :class:`GeneralizedRCNN`), "sem_seg" ((C, height, width) scores)
            and "panoptic_seg" (the output of :func:`combine_semantic_and_instance_outputs`).

        Raises:
            ValueError: in training, when "instances" or "sem_seg" is missing.
        """
        if not self.training:
            return self.inference(batched_inputs)
        missing = [key for key in ("instances", "sem_seg") if key not in batched_inputs[0]]
        if missing:
            raise ValueError(
                f"PanopticFPN needs {missing} in every input dict in training; use a "
                "'..._panoptic_separated' dataset, whose dicts have annotations and "
                "sem_seg_file_name, with DatasetMapper."
            )
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)

        gt_sem_seg = [self._move_to_current_device(x["sem_seg"]) for x in batched_inputs]
        gt_sem_seg = ImageList.from_tensors(
            gt_sem_seg,
            self.backbone.size_divisibility,
            self.sem_seg_head.ignore_value,
            self.backbone.padding_constraints,
        ).tensor.long()
        _, losses = self.sem_seg_head(features, gt_sem_seg)

        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses.update(proposal_losses)
        losses.update(detector_losses)
        return losses

    def inference(
        self, batched_inputs: list[dict[str, Any]], do_postprocess: bool = True
    ) -> list[dict[str, Any]] | tuple[list[Instances], torch.Tensor]:
        """Run inference on a batch.

        Args:
            batched_inputs: as in :meth:`forward`.
            do_postprocess: whether to rescale the outputs and combine them.

        Returns:
            With ``do_postprocess``, as :meth:`forward` in inference; otherwise
            ``(instances, sem_seg)``: the raw per-image :class:`Instances` and the (N, C, H, W)
            semantic scores of the padded batch.
        """
        if self.training:
            raise RuntimeError("PanopticFPN.inference() needs the model in eval mode.")
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        sem_seg_results, _ = self.sem_seg_head(features, None)
        proposals, _ = self.proposal_generator(images, features, None)
        detector_results, _ = self.roi_heads(images, features, proposals, None)
        if not do_postprocess:
            return detector_results, sem_seg_results

        processed_results = []
        for sem_seg_result, detector_result, input_per_image, image_size in zip(
            sem_seg_results, detector_results, batched_inputs, images.image_sizes
        ):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            sem_seg_r = sem_seg_postprocess(sem_seg_result, image_size, height, width)
            detector_r = detector_postprocess(detector_result, height, width)
            panoptic_r = combine_semantic_and_instance_outputs(
                detector_r,
                sem_seg_r.argmax(dim=0),
                self.combine_overlap_thresh,
                self.combine_stuff_area_thresh,
                self.combine_instances_score_thresh,
            )
            processed_results.append(
                {"sem_seg": sem_seg_r, "instances": detector_r, "panoptic_seg": panoptic_r}
            )
        return processed_results


def combine_semantic_and_instance_outputs(
    instance_results: Instances,
    semantic_results: torch.Tensor,
    overlap_threshold: float,
    stuff_area_thresh: float,
    instances_score_thresh: float,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Combine instance and semantic predictions into one panoptic segmentation.

    Instances are pasted from the highest score down, each on the pixels no earlier instance
    took; an instance is dropped when its score is below ``instances_score_thresh``, when its
    mask is empty, or when more than ``overlap_threshold`` of its mask is already taken. The
    remaining pixels are then filled with the semantic classes, except class 0 (the class of
    all things) and regions smaller than ``stuff_area_thresh``; what is left stays 0 (VOID).

    Instances of equal score are taken in index order (Detectron2's unstable sort leaves that
    order unspecified).

    Args:
        instance_results: the output of :func:`detector_postprocess`, with scores,
            pred_classes and pred_masks ((N, H, W) masks).
        semantic_results: an (H, W) tensor of contiguous semantic class ids; 0 means "thing".
        overlap_threshold: see above.
        stuff_area_thresh: see above.
        instances_score_thresh: see above.

    Returns:
        panoptic_seg: an (H, W) int32 tensor of segment ids, from 1; 0 is VOID.
        segments_info: one dict per segment: "id", "isthing", "category_id" (the thing's
        predicted class, or the semantic class index for stuff) and, for things, "score" and
        "instance_id" (its index in ``instance_results``), for stuff "area".

    Raises:
        ValueError: when the instances have no pred_masks.
    """
    if not instance_results.has("pred_masks"):
        raise ValueError(
            "combine_semantic_and_instance_outputs needs instance masks (pred_masks); enable "
            "the mask head with MODEL.MASK_ON True."
        )
    panoptic_seg = torch.zeros_like(semantic_results, dtype=torch.int32)
    instance_masks = instance_results.pred_masks.to(dtype=torch.bool, device=panoptic_seg.device)
    scores = instance_results.scores
    order = torch.sort(scores, descending=True, stable=True).indices
    segments_info: list[dict[str, Any]] = []

    for index in order.tolist():
        score = scores[index].item()
        if score < instances_score_thresh:
            break
        mask = instance_masks[index]
        mask_area = mask.sum().item()
        if mask_area == 0:
            continue
        taken = panoptic_seg > 0
        overlap = (mask & taken).sum().item()
        if overlap / mask_area > overlap_threshold:
            continue
        if overlap > 0:
            mask = mask & ~taken
        segment_id = len(segments_info) + 1
        panoptic_seg[mask] = segment_id
        segments_info.append(
            {
                "id": segment_id,
                "isthing": True,
                "score": score,
                "category_id": instance_results.pred_classes[index].item(),
                "instance_id": index,
            }
        )

    for label in torch.unique(semantic_results).tolist():
        if label == 0:  # the class of all things: never a stuff segment
            continue
        mask = (semantic_results == label) & (panoptic_seg == 0)
        area = mask.sum().item()
        if area < stuff_area_thresh:
            continue
        segment_id = len(segments_info) + 1
        panoptic_seg[mask] = segment_id
        segments_info.append(
            {"id": segment_id, "isthing": False, "category_id": label, "area": area}
        )
    return panoptic_seg, segments_info
