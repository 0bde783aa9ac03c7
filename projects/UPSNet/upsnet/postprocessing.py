"""UPSNet's inference rules around the panoptic head.

- :func:`select_panoptic_instances`: score threshold, class-agnostic NMS and a cap on the
  detections that enter the panoptic head;
- :func:`remove_overlapping_masks`: drop a mask mostly covered by higher-scored kept masks of
  its class;
- :func:`combine_panoptic`: turn the argmax of the panoptic logits into ``(panoptic_seg,
  segments_info)``: unknown pixels are VOID, an instance lying mostly on one stuff class of the
  semantic prediction becomes that stuff, small stuff segments become VOID.
"""

from __future__ import annotations

from typing import Any

import torch

from segtron.layers import nms
from segtron.structures import Instances

__all__ = ["combine_panoptic", "remove_overlapping_masks", "select_panoptic_instances"]


def select_panoptic_instances(
    instances: Instances, score_thresh: float, nms_thresh: float, max_instances: int
) -> torch.Tensor:
    """Indices of the detections that enter the panoptic head, by decreasing score.

    Args:
        instances: detections with ``pred_boxes`` and ``scores``.
        score_thresh: keep scores at or above this.
        nms_thresh: IoU threshold of the class-agnostic NMS.
        max_instances: keep at most this many.

    Returns:
        int64 indices into ``instances``.
    """
    scores = instances.scores
    candidates = torch.nonzero(scores >= score_thresh).flatten()
    boxes = instances.pred_boxes.tensor[candidates].float()
    keep = nms(boxes, scores[candidates].float(), nms_thresh)
    return candidates[keep[:max_instances]]


def remove_overlapping_masks(
    masks: torch.Tensor, classes: torch.Tensor, overlap_thresh: float
) -> torch.Tensor:
    """Greedily keep masks, in the given order (by decreasing score), unless covered.

    A mask is dropped when it is empty or when more than ``overlap_thresh`` of its pixels are
    already covered by kept masks of the same class.

    Args:
        masks: (k, H, W) bool masks sorted by decreasing score.
        classes: (k,) classes.
        overlap_thresh: the covered fraction above which a mask is dropped.

    Returns:
        int64 indices of the kept masks, in order.
    """
    covered: dict[int, torch.Tensor] = {}
    keep = []
    for i, (mask, cls) in enumerate(zip(masks, classes.tolist())):
        area = int(mask.sum())
        if area == 0:
            continue
        taken = covered.get(cls)
        if taken is not None and int((mask & taken).sum()) / area > overlap_thresh:
            continue
        keep.append(i)
        covered[cls] = mask.clone() if taken is None else taken | mask
    return torch.tensor(keep, dtype=torch.long, device=masks.device)


def combine_panoptic(
    panoptic_labels: torch.Tensor,
    semantic_labels: torch.Tensor,
    classes: torch.Tensor,
    num_stuff: int,
    *,
    scores: torch.Tensor | None = None,
    instance_ids: torch.Tensor | None = None,
    relabel_thresh: float = 0.5,
    stuff_area_limit: float = 4096,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Segments of the argmax of the panoptic logits.

    Label ``s < S`` is stuff s; ``S + j`` is instance j; any larger label (the unknown class)
    is VOID. An instance keeps its pixels when the semantic prediction there is mostly its own
    class; otherwise, when at least ``relabel_thresh`` of them are one stuff class, they join
    that stuff; otherwise it stays an instance. Stuff segments (one per class) smaller than
    ``stuff_area_limit`` pixels become VOID.

    Args:
        panoptic_labels: (H, W) argmax of the panoptic logits.
        semantic_labels: (H, W) argmax of the semantic logits (stuff first, then things).
        classes: (k,) thing classes of the instances.
        num_stuff: S.
        scores: (k,) instance scores, reported in ``segments_info``.
        instance_ids: (k,) indices of the instances in the model's "instances" output.
        relabel_thresh: see above.
        stuff_area_limit: see above.

    Returns:
        ``panoptic_seg``: (H, W) int32 segment ids, 0 = VOID; ``segments_info``: per segment
        "id", "isthing", "category_id" (thing class, or stuff channel + 1: the "separated"
        convention where 0 is "things"), and for things "score" and "instance_id", for stuff
        "area".
    """
    panoptic_seg = torch.zeros_like(panoptic_labels, dtype=torch.int32)
    stuff_labels = panoptic_labels.clone()
    stuff_labels[panoptic_labels >= num_stuff] = -1
    segments_info: list[dict[str, Any]] = []
    for j, cls in enumerate(classes.tolist()):
        region = panoptic_labels == num_stuff + j
        area = int(region.sum())
        if area == 0:
            continue
        counts = torch.bincount(semantic_labels[region].flatten())
        majority = int(counts.argmax())
        if majority != num_stuff + cls and majority < num_stuff:
            if int(counts[majority]) / area >= relabel_thresh:
                stuff_labels[region] = majority
                continue
        segment_id = len(segments_info) + 1
        panoptic_seg[region] = segment_id
        info: dict[str, Any] = {"id": segment_id, "isthing": True, "category_id": cls}
        if scores is not None:
            info["score"] = float(scores[j])
        if instance_ids is not None:
            info["instance_id"] = int(instance_ids[j])
        segments_info.append(info)
    for stuff in torch.unique(stuff_labels).tolist():
        if stuff < 0:
            continue
        region = stuff_labels == stuff
        area = int(region.sum())
        if area < stuff_area_limit:
            continue
        segment_id = len(segments_info) + 1
        panoptic_seg[region] = segment_id
        segments_info.append(
            {"id": segment_id, "isthing": False, "category_id": stuff + 1, "area": area}
        )
    return panoptic_seg, segments_info
