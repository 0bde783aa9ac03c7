"""Panoptic-DeepLab post-processing as batched tensor operations (CPU or GPU).

:func:`get_panoptic_segmentation` turns the semantic labels, the center heatmap and the
offsets of one image into a panoptic id map, following Detectron2's
``panoptic_deeplab.post_processing`` rules: center threshold, max-pool NMS, top-k centers,
grouping of thing pixels to the nearest (pixel + offset) center, class by majority vote,
stuff kept where no instance is and its area reaches ``stuff_area``, ids
``class * label_divisor + k`` and ``void_label`` elsewhere. :func:`get_instance_predictions`
gives the thing segments as ``Instances`` with Detectron2's score (mean semantic probability
× center value at the mask's mean position) and boxes.

Unlike Detectron2 there is no Python loop over instances or classes: distances are computed
only for thing pixels, in bounded chunks, and votes, areas, scores and boxes come from
``bincount``/``scatter_reduce``. Detectron2 keeps the centers scoring strictly above the k-th
best peak (``top_k - 1`` of them when there are more than ``top_k`` peaks); this keeps the
``top_k`` best peaks. Otherwise the output is the same, instance numbering included.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from segtron.structures import Boxes, Instances

__all__ = [
    "find_instance_center",
    "get_instance_predictions",
    "get_instance_segmentation",
    "get_panoptic_segmentation",
    "group_pixels",
    "merge_semantic_and_instance",
]

# Chunks of the pixel × center distance matrix stay under this many elements (~64 MB float32).
_MAX_DISTANCE_ELEMENTS = 1 << 24


def find_instance_center(
    center_heatmap: torch.Tensor,
    threshold: float = 0.1,
    nms_kernel: int = 3,
    top_k: int | None = None,
) -> torch.Tensor:
    """Find the instance centers: local maxima of the heatmap above `threshold`.

    Args:
        center_heatmap: (1, H, W) (or (H, W)) center heatmap.
        threshold: peaks must score strictly above it.
        nms_kernel: side of the max-pooling window of the NMS (odd).
        top_k: keep at most this many of the best peaks; None keeps all.

    Returns:
        (K, 2) int64 (y, x) coordinates of the centers, in raster order.
    """
    if nms_kernel < 1 or nms_kernel % 2 == 0:
        raise ValueError(
            f"The NMS kernel must be a positive odd number (MODEL.PANOPTIC_DEEPLAB.NMS_KERNEL); "
            f"got {nms_kernel}."
        )
    heatmap = center_heatmap.reshape(1, 1, *center_heatmap.shape[-2:]).float()
    # A k×k max pool as a 1×k then a k×1 one: the same maxima, 2k instead of k² comparisons.
    pad = nms_kernel // 2
    pooled = F.max_pool2d(heatmap, (1, nms_kernel), stride=1, padding=(0, pad))
    pooled = F.max_pool2d(pooled, (nms_kernel, 1), stride=1, padding=(pad, 0))
    is_peak = (heatmap > threshold) & (heatmap == pooled)
    flat_index = is_peak.flatten().nonzero().squeeze(1)
    if top_k is not None and flat_index.numel() > top_k:
        scores = heatmap.flatten()[flat_index]
        flat_index = flat_index[scores.topk(top_k).indices].sort().values
    width = heatmap.shape[-1]
    return torch.stack([flat_index // width, flat_index % width], dim=1)


def group_pixels(
    center_points: torch.Tensor, offsets: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Give each pixel the 1-based index of the center nearest to (pixel + offset).

    Args:
        center_points: (K, 2) (y, x) centers, K ≥ 1.
        offsets: (2, H, W) (dy, dx) offsets.
        mask: optional (H, W) bool; only these pixels are grouped, the others get 0.

    Returns:
        (1, H, W) int64 instance ids in [0, K].
    """
    height, width = offsets.shape[-2:]
    if mask is None:
        mask = torch.ones(height, width, dtype=torch.bool, device=offsets.device)
    mask = mask.reshape(height, width)
    flat_index = mask.flatten().nonzero().squeeze(1)
    points = offsets.reshape(2, -1)[:, flat_index].float()
    points[0] += (flat_index // width).to(points.dtype)
    points[1] += (flat_index % width).to(points.dtype)
    centers = center_points.to(points)
    instance_id = torch.zeros(height * width, dtype=torch.int64, device=offsets.device)
    chunk = max(1, _MAX_DISTANCE_ELEMENTS // max(1, len(centers)))
    for start in range(0, flat_index.numel(), chunk):
        p = points[:, start : start + chunk]
        distance = (p[0, :, None] - centers[None, :, 0]).square_()
        distance += (p[1, :, None] - centers[None, :, 1]).square_()
        instance_id[flat_index[start : start + chunk]] = distance.argmin(dim=1) + 1
    return instance_id.reshape(1, height, width)


def get_instance_segmentation(
    sem_seg: torch.Tensor,
    center_heatmap: torch.Tensor,
    offsets: torch.Tensor,
    thing_seg: torch.Tensor,
    thing_ids: Iterable[int] | None = None,
    threshold: float = 0.1,
    nms_kernel: int = 3,
    top_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-agnostic instance ids of the thing pixels.

    Args:
        sem_seg: (1, H, W) semantic labels (kept for Detectron2's signature).
        center_heatmap: (1, H, W) center heatmap.
        offsets: (2, H, W) (dy, dx) offsets.
        thing_seg: (1, H, W) foreground mask (non-zero on thing pixels).
        thing_ids: unused (Detectron2's signature).
        threshold, nms_kernel, top_k: see :func:`find_instance_center`.

    Returns:
        (1, H, W) int64 ids (0 off things or when no center is found, else 1..K) and the
        (1, K, 2) centers.
    """
    del sem_seg, thing_ids
    center_points = find_instance_center(center_heatmap, threshold, nms_kernel, top_k)
    height, width = offsets.shape[-2:]
    if center_points.shape[0] == 0:
        ins_seg = torch.zeros(1, height, width, dtype=torch.int64, device=offsets.device)
    else:
        ins_seg = group_pixels(center_points, offsets, thing_seg.reshape(height, width) > 0)
    return ins_seg, center_points.unsqueeze(0)


def _thing_class_mask(thing_ids: Iterable[int], num_classes: int, device: torch.device):
    ids = torch.as_tensor(sorted({int(i) for i in thing_ids}), dtype=torch.int64, device=device)
    is_thing = torch.zeros(num_classes, dtype=torch.bool, device=device)
    return is_thing.index_fill_(0, ids[ids < num_classes], True)


def merge_semantic_and_instance(
    sem_seg: torch.Tensor,
    ins_seg: torch.Tensor,
    semantic_thing_seg: torch.Tensor,
    label_divisor: int,
    thing_ids: Iterable[int],
    stuff_area: int,
    void_label: int,
) -> torch.Tensor:
    """Merge semantic labels and class-agnostic instances into a panoptic id map.

    Each instance takes the most frequent label of its pixels (the smallest on a tie) and is
    numbered from 1 per class in the order of its instance id. Stuff classes keep the pixels
    that are in no instance if there are at least `stuff_area` of them.

    Args:
        sem_seg: (1, H, W) integer semantic labels (≥ 0).
        ins_seg: (1, H, W) instance ids, 0 = no instance.
        semantic_thing_seg: (1, H, W) foreground mask.
        label_divisor: panoptic id = class * label_divisor + instance number.
        thing_ids: contiguous ids of the thing classes.
        stuff_area: the minimum area of a stuff segment.
        void_label: the id of pixels in no segment.

    Returns:
        (1, H, W) int64 panoptic ids.
    """
    sem = sem_seg.reshape(-1).long()
    ins = ins_seg.reshape(-1).long()
    num_classes = int(sem.max()) + 1 if sem.numel() else 1
    num_instances = int(ins.max()) if ins.numel() else 0
    # One key per pixel: (instance, class) for pixels in an instance, (0, class) for pixels in
    # none, and a last key for instance pixels off the foreground (void, as in Detectron2).
    void_key = (num_instances + 1) * num_classes
    in_instance = (ins > 0) & (semantic_thing_seg.reshape(-1) > 0)
    key = torch.where(in_instance | (ins == 0), ins * num_classes + sem, void_key)
    counts = torch.bincount(key, minlength=void_key + 1)[:-1].reshape(-1, num_classes)

    votes = counts[1:]
    present = votes.sum(dim=1) > 0
    instance_class = votes.argmax(dim=1)
    # Number the instances of each class 1, 2, ... in the order of their ids.
    one_hot = F.one_hot(instance_class, num_classes) * present[:, None]
    number = one_hot.cumsum(dim=0).gather(1, instance_class[:, None])
    instance_lut = (instance_class[:, None] * label_divisor + number).expand(-1, num_classes)

    is_thing_class = _thing_class_mask(thing_ids, num_classes, sem.device)
    classes = torch.arange(num_classes, device=sem.device)
    keep_stuff = ~is_thing_class & (counts[0] >= stuff_area)
    stuff_lut = torch.where(keep_stuff, classes * label_divisor, void_label)
    lut = torch.cat([stuff_lut, instance_lut.reshape(-1), stuff_lut.new_tensor([void_label])])
    pan = lut[key]
    return pan.reshape(sem_seg.shape)


def get_panoptic_segmentation(
    sem_seg: torch.Tensor,
    center_heatmap: torch.Tensor,
    offsets: torch.Tensor,
    thing_ids: Iterable[int],
    label_divisor: int,
    stuff_area: int,
    void_label: int,
    threshold: float = 0.1,
    nms_kernel: int = 7,
    top_k: int | None = 200,
    foreground_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Panoptic segmentation of one image from Panoptic-DeepLab's outputs.

    Args:
        sem_seg: (1, H, W) integer semantic labels (the argmax of the scores).
        center_heatmap: (1, H, W) center heatmap.
        offsets: (2, H, W) (dy, dx) offsets, in pixels of this resolution.
        thing_ids: contiguous ids of the thing classes.
        label_divisor: panoptic id = class * label_divisor + instance number (from 1).
        stuff_area: stuff segments smaller than this become `void_label`.
        void_label: the id of pixels in no segment (Detectron2 uses -1).
        threshold: centers must score above it.
        nms_kernel: max-pooling window of the center NMS.
        top_k: the maximum number of centers.
        foreground_mask: optional (1, H, W) thing mask; by default the pixels whose label is
            a thing class.

    Returns:
        (1, H, W) int64 panoptic ids and the (1, K, 2) (y, x) centers.
    """
    for name, tensor, channels in (
        ("sem_seg", sem_seg, 1),
        ("center_heatmap", center_heatmap, 1),
        ("offsets", offsets, 2),
    ):
        if tensor.dim() != 3 or tensor.shape[0] != channels:
            raise ValueError(
                f"{name} must have shape ({channels}, H, W); got {tuple(tensor.shape)}."
            )
    if foreground_mask is not None:
        if foreground_mask.dim() != 3 or foreground_mask.shape[0] != 1:
            raise ValueError(
                f"foreground_mask must have shape (1, H, W); got {tuple(foreground_mask.shape)}."
            )
        thing_seg = foreground_mask
    else:
        num_classes = int(sem_seg.max()) + 1 if sem_seg.numel() else 1
        thing_seg = _thing_class_mask(thing_ids, num_classes, sem_seg.device)[sem_seg.long()]
    instance, center = get_instance_segmentation(
        sem_seg, center_heatmap, offsets, thing_seg, thing_ids, threshold, nms_kernel, top_k
    )
    panoptic = merge_semantic_and_instance(
        sem_seg, instance, thing_seg, label_divisor, thing_ids, stuff_area, void_label
    )
    return panoptic, center


def get_instance_predictions(
    panoptic: torch.Tensor,
    sem_seg_logits: torch.Tensor,
    center_heatmap: torch.Tensor,
    thing_ids: Iterable[int],
    label_divisor: int,
) -> Instances:
    """The thing segments of a panoptic id map as instance predictions (for AP).

    The score of a segment is the mean softmax probability of its class over its pixels times
    the center heatmap at its pixels' mean position (truncated to integers), as in Detectron2.
    The softmax is only evaluated on the segments' pixels.

    Args:
        panoptic: (H, W) panoptic ids (``class * label_divisor + k``; negative = void).
        sem_seg_logits: (C, H, W) class scores (logits).
        center_heatmap: (1, H, W) center heatmap.
        thing_ids: contiguous ids of the thing classes.
        label_divisor: the panoptic id divisor.

    Returns:
        ``Instances`` of image size (H, W) with ``pred_classes``, ``pred_masks`` (N×H×W bool),
        ``scores`` and ``pred_boxes`` (XYXY, x1/y1 one past the last pixel), sorted by id.
    """
    height, width = panoptic.shape
    device = panoptic.device
    flat = panoptic.reshape(-1)
    num_classes = sem_seg_logits.shape[0]
    is_thing_class = _thing_class_mask(thing_ids, num_classes, device)
    segment_class = torch.div(flat, label_divisor, rounding_mode="floor")
    valid = (flat >= 0) & (segment_class < num_classes)
    on_thing = valid & is_thing_class[segment_class.clamp(0, num_classes - 1)]
    pixel_index = on_thing.nonzero().squeeze(1)
    ids, inverse = torch.unique(flat[pixel_index], return_inverse=True)
    num = len(ids)
    ys = torch.div(pixel_index, width, rounding_mode="floor")
    xs = pixel_index % width
    classes = torch.div(ids, label_divisor, rounding_mode="floor")

    logits = sem_seg_logits.reshape(num_classes, -1)[:, pixel_index].float()
    prob = (logits.gather(0, classes[inverse][None]) - logits.logsumexp(dim=0)).exp()[0]
    area = torch.bincount(inverse, minlength=num).clamp(min=1).float()

    def mean(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(num, device=device).index_add_(0, inverse, values.float()) / area

    def reduce(values: torch.Tensor, op: str) -> torch.Tensor:
        init = torch.zeros(num, dtype=values.dtype, device=device)
        return init.scatter_reduce_(0, inverse, values, reduce=op, include_self=False)

    center_score = center_heatmap.reshape(height, width)[mean(ys).long(), mean(xs).long()]
    boxes = torch.stack(
        [reduce(xs, "amin"), reduce(ys, "amin"), reduce(xs, "amax") + 1, reduce(ys, "amax") + 1],
        dim=1,
    )
    masks = torch.zeros(num, height * width, dtype=torch.bool, device=device)
    masks[inverse, pixel_index] = True
    result = Instances((height, width))
    result.pred_classes = classes
    result.pred_masks = masks.reshape(num, height, width)
    result.scores = mean(prob) * center_score
    result.pred_boxes = Boxes(boxes.float())
    return result
