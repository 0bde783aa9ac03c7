"""The :class:`UPSNet` meta-architecture (Xiong et al., "UPSNet: A Unified Panoptic Segmentation
Network", CVPR 2019), registered in ``META_ARCH_REGISTRY``.

Mask R-CNN from the core (backbone, RPN, ``StandardROIHeads``) plus :class:`UPSNetSemanticHead`
and the parameter-free panoptic head of :mod:`.panoptic_head`. It trains on Panoptic FPN's
"separated" data (``DatasetMapper`` on a ``..._panoptic_separated`` dataset: instances with
masks, and semantic labels where 0 is any thing and 1..S the stuff classes) and predicts
``instances``, ``sem_seg`` in the same labels (channel 0 = log of the total thing probability)
and ``panoptic_seg``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from segtron.config import configurable
from segtron.modeling.meta_arch import META_ARCH_REGISTRY, GeneralizedRCNN, build_sem_seg_head
from segtron.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from segtron.structures import BitMasks, Boxes, ImageList, Instances

from .panoptic_head import (
    panoptic_logits,
    panoptic_targets,
    paste_mask_logits,
    sample_kept_instances,
    semantic_targets,
)
from .postprocessing import combine_panoptic, remove_overlapping_masks, select_panoptic_instances

__all__ = ["UPSNet"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class UPSNet(GeneralizedRCNN):
    """Mask R-CNN, a semantic head and a parameter-free panoptic head with an unknown class."""

    @configurable
    def __init__(
        self,
        *,
        sem_seg_head: nn.Module,
        num_stuff_classes: int,
        panoptic_loss_weight: float = 0.1,
        unknown_enabled: bool = True,
        box_keep_fraction: float = 0.7,
        instance_score_thresh: float = 0.6,
        instance_nms_thresh: float = 0.5,
        max_instances: int = 100,
        mask_overlap_thresh: float = 0.3,
        stuff_relabel_thresh: float = 0.5,
        stuff_area_limit: float = 4096,
        **kwargs: Any,
    ) -> None:
        """Create the model.

        Args:
            sem_seg_head: a :class:`UPSNetSemanticHead` (stuff channels, then things).
            num_stuff_classes: S, the number of stuff classes.
            panoptic_loss_weight: weight of the panoptic cross-entropy.
            unknown_enabled: predict the unknown class.
            box_keep_fraction: fraction of ground-truth instances kept in the panoptic head in
                training (with ``unknown_enabled``).
            instance_score_thresh: score threshold of the panoptic instances.
            instance_nms_thresh: IoU threshold of their class-agnostic NMS.
            max_instances: at most this many panoptic instances per image.
            mask_overlap_thresh: see :func:`remove_overlapping_masks`.
            stuff_relabel_thresh: see :func:`combine_panoptic`.
            stuff_area_limit: see :func:`combine_panoptic`.
            **kwargs: the arguments of :class:`GeneralizedRCNN`; its ROI heads need a mask
                branch with its own pooler (``StandardROIHeads`` with masks on).

        Raises:
            ValueError: no mask branch, or a keep fraction outside (0, 1].
        """
        super().__init__(**kwargs)
        if not getattr(self.roi_heads, "mask_on", False) or not hasattr(
            self.roi_heads, "mask_pooler"
        ):
            raise ValueError(
                "UPSNet needs the mask branch of StandardROIHeads: set MODEL.MASK_ON True and "
                "MODEL.ROI_HEADS.NAME 'StandardROIHeads'."
            )
        if not 0 < box_keep_fraction <= 1:
            raise ValueError(
                f"MODEL.UPSNET.BOX_KEEP_FRACTION must be in (0, 1], got {box_keep_fraction}."
            )
        self.sem_seg_head = sem_seg_head
        self.num_stuff_classes = num_stuff_classes
        self.panoptic_loss_weight = panoptic_loss_weight
        self.unknown_enabled = unknown_enabled
        self.box_keep_fraction = box_keep_fraction
        self.instance_score_thresh = instance_score_thresh
        self.instance_nms_thresh = instance_nms_thresh
        self.max_instances = max_instances
        self.mask_overlap_thresh = mask_overlap_thresh
        self.stuff_relabel_thresh = stuff_relabel_thresh
        self.stuff_area_limit = stuff_area_limit

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        """:meth:`GeneralizedRCNN.from_config` plus MODEL.SEM_SEG_HEAD and MODEL.UPSNET."""
        if "UPSNET" not in cfg.MODEL:
            raise KeyError(
                "The config has no MODEL.UPSNET keys: build it with "
                "segtron.projects.get_config, or call add_upsnet_config(cfg) first."
            )
        if cfg.MODEL.SEM_SEG_HEAD.NAME != "UPSNetSemanticHead":
            raise ValueError(
                f"UPSNet needs MODEL.SEM_SEG_HEAD.NAME 'UPSNetSemanticHead', got "
                f"{cfg.MODEL.SEM_SEG_HEAD.NAME!r}."
            )
        ret = super().from_config(cfg)
        u = cfg.MODEL.UPSNET
        ret.update(
            sem_seg_head=build_sem_seg_head(cfg, ret["backbone"].output_shape()),
            num_stuff_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1,
            panoptic_loss_weight=u.PANOPTIC_LOSS_WEIGHT,
            unknown_enabled=u.UNKNOWN_ENABLED,
            box_keep_fraction=u.BOX_KEEP_FRACTION,
            instance_score_thresh=u.INSTANCE_SCORE_THRESH,
            instance_nms_thresh=u.INSTANCE_NMS_THRESH,
            max_instances=u.MAX_INSTANCES,
            mask_overlap_thresh=u.MASK_OVERLAP_THRESH,
            stuff_relabel_thresh=u.STUFF_RELABEL_THRESH,
            stuff_area_limit=u.STUFF_AREA_LIMIT,
        )
        return ret

    def forward(
        self, batched_inputs: list[dict[str, Any]]
    ) -> dict[str, torch.Tensor] | list[dict[str, Any]]:
        """Segment a batch of images, or compute the training losses.

        Args:
            batched_inputs: one dict per image (the output of ``DatasetMapper``) with
                "image": a (C, H, W) tensor in the config's INPUT.FORMAT, 0-255;
                "instances" (training): ground truth with gt_boxes, gt_classes, gt_masks;
                "sem_seg" (training): (H, W) labels, 0 = any thing, 1..S stuff, 255 VOID;
                "height", "width" (optional): the output size, by default that of "image".

        Returns:
            In training, a dict of scalar losses. In inference, one dict per image with
            "instances" (as :class:`GeneralizedRCNN`), "sem_seg" ((S + 1, height, width)
            scores: channel 0 "things", then the stuff classes) and "panoptic_seg" (see
            :func:`combine_panoptic`; pixels of the unknown class are VOID).

        Raises:
            ValueError: in training, missing ground truth or labels out of range.
        """
        if not self.training:
            return self.inference(batched_inputs)
        missing = [k for k in ("instances", "sem_seg") if k not in batched_inputs[0]]
        if missing:
            raise ValueError(
                f"UPSNet needs {missing} in every input dict in training; use a "
                "'..._panoptic_separated' dataset (annotations with masks and "
                "sem_seg_file_name) with DatasetMapper and MODEL.MASK_ON True, or a standard "
                "panoptic dataset with separated metadata (e.g. "
                "'cityscapes_fine_panoptic_separated_train') with INPUT.DATASET_MAPPER_NAME "
                "'PanopticSeparatedDatasetMapper'."
            )
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        gt_sem_seg = ImageList.from_tensors(
            [self._move_to_current_device(x["sem_seg"]) for x in batched_inputs],
            self.backbone.size_divisibility,
            self.sem_seg_head.ignore_value,
            self.backbone.padding_constraints,
        ).tensor.long()
        self._check_labels(gt_sem_seg)

        proposals, losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses.update(detector_losses)

        sem_logits, sem_feats = self.sem_seg_head.layers(features)
        height, width = gt_sem_seg.shape[-2:]
        gt_masks = [self._bitmasks(x, height, width) for x in gt_instances]
        sem_targets = torch.stack(
            [
                semantic_targets(
                    sem, masks, x.gt_classes, self.num_stuff_classes, self.sem_seg_head.ignore_value
                )
                for sem, masks, x in zip(gt_sem_seg, gt_masks, gt_instances)
            ]
        )
        losses.update(self.sem_seg_head.losses(sem_logits, sem_targets))
        losses.update(
            self.sem_seg_head.roi_losses(sem_feats, [x.gt_boxes for x in gt_instances], sem_targets)
        )
        losses["loss_panoptic"] = self._panoptic_loss(
            features, sem_logits, gt_instances, gt_masks, gt_sem_seg
        )
        return losses

    def _check_labels(self, gt_sem_seg: torch.Tensor) -> None:
        labels = gt_sem_seg[gt_sem_seg != self.sem_seg_head.ignore_value]
        if labels.numel() and (int(labels.max()) > self.num_stuff_classes or labels.min() < 0):
            raise ValueError(
                f"UPSNet's 'sem_seg' labels must be 0 (any thing), 1..{self.num_stuff_classes} "
                f"(stuff, MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1) or the ignore value; found "
                f"{int(labels.min())}..{int(labels.max())}. Use a '..._panoptic_separated' "
                "dataset, or fix MODEL.SEM_SEG_HEAD.NUM_CLASSES."
            )

    @staticmethod
    def _bitmasks(instances: Instances, height: int, width: int) -> torch.Tensor:
        """(n, height, width) bool masks of the ground truth, zero-padded to the batch size."""
        if not instances.has("gt_masks"):
            raise ValueError("UPSNet needs instance masks: set MODEL.MASK_ON True.")
        masks = instances.gt_masks
        h, w = instances.image_size
        if not isinstance(masks, BitMasks):
            masks = BitMasks.from_polygon_masks(masks, h, w)
        tensor = masks.tensor.to(device=instances.gt_classes.device, dtype=torch.bool)
        return F.pad(tensor, (0, width - tensor.shape[-1], 0, height - tensor.shape[-2]))

    def _mask_logits(
        self, features: dict[str, torch.Tensor], boxes: list[Boxes], classes: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Per image, the (k, M, M) mask logits of the given boxes for the given classes."""
        roi_heads = self.roi_heads
        total = sum(len(b) for b in boxes)
        pooled = roi_heads.mask_pooler([features[f] for f in roi_heads.mask_in_features], boxes)
        logits = roi_heads.mask_head.layers(pooled)
        if logits.shape[1] == 1:
            logits = logits[:, 0]
        else:
            index = torch.arange(total, device=logits.device)
            logits = logits[index, torch.cat(classes).to(logits.device)]
        return list(logits.split([len(b) for b in boxes]))

    def _panoptic_loss(
        self,
        features: dict[str, torch.Tensor],
        sem_logits: torch.Tensor,
        gt_instances: list[Instances],
        gt_masks: list[torch.Tensor],
        gt_sem_seg: torch.Tensor,
    ) -> torch.Tensor:
        """Cross-entropy of the panoptic logits at the semantic head's stride, GT boxes."""
        stride = self.sem_seg_head.common_stride
        ignore = self.sem_seg_head.ignore_value
        keeps = [
            sample_kept_instances(len(x), self.box_keep_fraction).to(self.device)
            if self.unknown_enabled
            else torch.arange(len(x), device=self.device)
            for x in gt_instances
        ]
        boxes = [x.gt_boxes[k] for x, k in zip(gt_instances, keeps)]
        classes = [x.gt_classes[k] for x, k in zip(gt_instances, keeps)]
        mask_logits = self._mask_logits(features, boxes, classes)
        size = sem_logits.shape[-2:]
        total = sem_logits.new_zeros(())
        count = 0
        for i in range(len(gt_instances)):
            boxes_i = boxes[i].tensor / stride
            pasted = paste_mask_logits(mask_logits[i], boxes_i, size)
            logits = panoptic_logits(
                sem_logits[i],
                boxes_i,
                classes[i],
                pasted,
                self.num_stuff_classes,
                self.unknown_enabled,
            )
            # The label at the centre of each stride × stride cell.
            offset = stride // 2
            sem = gt_sem_seg[i, offset::stride, offset::stride][: size[0], : size[1]]
            masks = gt_masks[i][:, offset::stride, offset::stride][:, : size[0], : size[1]]
            target = panoptic_targets(
                sem, masks, keeps[i], self.num_stuff_classes, self.unknown_enabled, ignore
            )
            total = total + F.cross_entropy(
                logits[None].float(), target[None], ignore_index=ignore, reduction="sum"
            )
            count += int((target != ignore).sum())
        return total / max(count, 1) * self.panoptic_loss_weight

    def inference(self, batched_inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run inference on a batch.

        Args:
            batched_inputs: as in :meth:`forward`.

        Returns:
            As :meth:`forward` in inference.
        """
        if self.training:
            raise RuntimeError("UPSNet.inference() needs the model in eval mode.")
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        sem_logits = self.sem_seg_head.upsample(self.sem_seg_head.layers(features)[0])
        proposals, _ = self.proposal_generator(images, features, None)
        detections, _ = self.roi_heads(images, features, proposals, None)

        outputs, selections, net_boxes = [], [], []
        for sem, det, inputs, image_size in zip(
            sem_logits, detections, batched_inputs, images.image_sizes
        ):
            height = inputs.get("height", image_size[0])
            width = inputs.get("width", image_size[1])
            sem_r = sem_seg_postprocess(sem, image_size, height, width)
            det_r = detector_postprocess(det, height, width)
            selected = select_panoptic_instances(
                det_r, self.instance_score_thresh, self.instance_nms_thresh, self.max_instances
            )
            scale = torch.tensor(
                [image_size[1] / width, image_size[0] / height] * 2, device=self.device
            )
            net_boxes.append(Boxes(det_r.pred_boxes.tensor[selected] * scale))
            selections.append(selected)
            outputs.append({"sem_seg": sem_r, "instances": det_r})
        classes = [out["instances"].pred_classes[s] for out, s in zip(outputs, selections)]
        mask_logits = self._mask_logits(features, net_boxes, classes)
        for out, selected, logits in zip(outputs, selections, mask_logits):
            out["panoptic_seg"] = self._panoptic(out["sem_seg"], out["instances"], selected, logits)
            sem_r = out["sem_seg"]
            things = torch.logsumexp(sem_r[self.num_stuff_classes :], dim=0, keepdim=True)
            out["sem_seg"] = torch.cat([things, sem_r[: self.num_stuff_classes]])
        return outputs

    def _panoptic(
        self,
        sem_logits: torch.Tensor,
        instances: Instances,
        selected: torch.Tensor,
        mask_logits: torch.Tensor,
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """The panoptic output of one image at its output size."""
        boxes = instances.pred_boxes.tensor[selected]
        classes = instances.pred_classes[selected]
        pasted = paste_mask_logits(mask_logits, boxes, sem_logits.shape[-2:])
        keep = remove_overlapping_masks(pasted > 0, classes, self.mask_overlap_thresh)
        logits = panoptic_logits(
            sem_logits,
            boxes[keep],
            classes[keep],
            pasted[keep],
            self.num_stuff_classes,
            self.unknown_enabled,
        )
        return combine_panoptic(
            logits.argmax(dim=0),
            sem_logits.argmax(dim=0),
            classes[keep],
            self.num_stuff_classes,
            scores=instances.scores[selected][keep],
            instance_ids=selected[keep],
            relabel_thresh=self.stuff_relabel_thresh,
            stuff_area_limit=self.stuff_area_limit,
        )
