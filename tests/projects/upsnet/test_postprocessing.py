"""Tests of UPSNet's inference rules, and of the unknown class's effect on PQ."""

from __future__ import annotations

import torch

from segtron.evaluation.panoptic_quality import pq_compute_single_image
from segtron.projects.upsnet import (
    combine_panoptic,
    panoptic_logits,
    paste_mask_logits,
    remove_overlapping_masks,
    select_panoptic_instances,
)
from segtron.structures import Boxes, Instances


def test_remove_overlapping_masks_same_class_only() -> None:
    masks = torch.zeros(5, 10, 10, dtype=torch.bool)
    masks[0, :, :5] = True  # kept first
    masks[1, :, 3:8] = True  # 40% on mask 0, same class: removed
    masks[2, :, :5] = True  # 100% on mask 0 but another class: kept
    masks[3, :, 4:9] = True  # 20% on mask 0: kept
    classes = torch.tensor([0, 0, 1, 0, 0])  # mask 4 is empty: removed
    assert remove_overlapping_masks(masks, classes, 0.3).tolist() == [0, 2, 3]
    # At 0.5, mask 3 is 80% on masks 0 and 1 together.
    assert remove_overlapping_masks(masks, classes, 0.5).tolist() == [0, 1, 2]


def test_select_panoptic_instances_threshold_agnostic_nms_and_cap() -> None:
    inst = Instances((50, 50))
    inst.pred_boxes = Boxes(
        torch.tensor(
            [[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [40, 40, 45, 45], [0, 30, 9, 40]],
            dtype=torch.float32,
        )
    )
    inst.scores = torch.tensor([0.9, 0.95, 0.7, 0.5, 0.65])
    inst.pred_classes = torch.tensor([0, 1, 2, 0, 1])  # 0 and 1 overlap across classes
    assert select_panoptic_instances(inst, 0.6, 0.5, 100).tolist() == [1, 2, 4]
    assert select_panoptic_instances(inst, 0.6, 0.5, 2).tolist() == [1, 2]
    assert select_panoptic_instances(inst, 0.99, 0.5, 100).tolist() == []


def test_combine_panoptic_relabel_unknown_and_small_stuff() -> None:
    num_stuff, height, width = 2, 10, 10
    pan = torch.zeros(height, width, dtype=torch.long)  # stuff 0 everywhere ...
    pan[5:, :] = 1  # ... stuff 1 below
    pan[0:2, 0:2] = 2  # instance 0 (class 0) on its own class
    pan[0:2, 5:10] = 3  # instance 1 (class 1): 60% stuff 0 in the semantic map
    pan[3:5, 5:10] = 4  # instance 2 (class 1): 40% stuff 1, 60% class 0
    pan[8:10, 8:10] = 5  # the unknown class
    sem = torch.zeros(height, width, dtype=torch.long)
    sem[5:, :] = 1
    sem[0:2, 0:2] = num_stuff + 0
    sem[0:2, 8:10] = num_stuff + 1
    sem[3:5, 5:7] = 1
    sem[3:5, 7:10] = num_stuff + 0
    classes = torch.tensor([0, 1, 1])
    seg, info = combine_panoptic(
        pan,
        sem,
        classes,
        num_stuff,
        scores=torch.tensor([0.75, 0.5, 0.25]),
        instance_ids=torch.tensor([4, 7, 9]),
        stuff_area_limit=30,
    )
    by_id = {s["id"]: s for s in info}
    assert set(torch.unique(seg).tolist()) == set(by_id) | {0}
    things = [s for s in info if s["isthing"]]
    assert [(s["category_id"], s["instance_id"], s["score"]) for s in things] == [
        (0, 4, 0.75),
        (1, 9, 0.25),
    ]
    assert (seg[0:2, 0:2] == things[0]["id"]).all() and (seg[3:5, 5:] == things[1]["id"]).all()
    # Instance 1 joined stuff 0 (category 1 in the separated labels): 50 - 4 - 10 pixels.
    stuff = {s["category_id"]: s for s in info if not s["isthing"]}
    assert (seg[0:2, 5:10] == stuff[1]["id"]).all()
    assert stuff[1]["area"] == int((seg == stuff[1]["id"]).sum()) == 36
    assert (seg[8:10, 8:10] == 0).all()  # unknown -> VOID
    assert stuff[2]["area"] == 50 - 4
    # With a larger limit, stuff 0 (36 px, relabelled instance included) is VOID, not listed.
    seg, info = combine_panoptic(pan, sem, classes, num_stuff, stuff_area_limit=40)
    assert [s["category_id"] for s in info if not s["isthing"]] == [2]
    top = pan[0:5]
    assert (seg[0:5][(top == 0) | (top == num_stuff + 1)] == 0).all()


# Categories of the PQ test, in the dataset's ids: two things and one stuff.
_CATEGORIES = {1: {"isthing": 1}, 2: {"isthing": 1}, 10: {"isthing": 0}}


def _wrong_class_scene(unknown: bool):
    """A 16x16 image of stuff "ground" with one circle (rows/cols 4..9), which the detector
    calls a square. The semantic head is right: thing channel "circle" wins on the shape."""
    num_stuff, height, width = 1, 16, 16
    sem = torch.full((3, height, width), -4.0)  # [ground, circle, square]
    sem[0] = 3.0
    sem[0, 4:10, 4:10] = -2.0
    sem[1, 4:10, 4:10] = 6.0
    sem[2, 4:10, 4:10] = 0.0
    boxes = torch.tensor([[4.0, 4.0, 10.0, 10.0]])
    classes = torch.tensor([1])  # "square": wrong
    pasted = paste_mask_logits(torch.full((1, 28, 28), 2.0), boxes, (height, width))
    logits = panoptic_logits(sem, boxes, classes, pasted, num_stuff, unknown)
    return combine_panoptic(logits.argmax(0), sem.argmax(0), classes, num_stuff, stuff_area_limit=0)


def _pq_stats(panoptic_seg, segments_info):
    gt = torch.full((16, 16), 1, dtype=torch.int64)
    gt[4:10, 4:10] = 2
    gt_ann = {
        "image_id": 1,
        "segments_info": [
            {"id": 1, "category_id": 10, "area": 256 - 36, "iscrowd": 0},
            {"id": 2, "category_id": 1, "area": 36, "iscrowd": 0},
        ],
    }
    to_dataset = {(True, 0): 1, (True, 1): 2, (False, 1): 10}
    pred_ann = {
        "segments_info": [
            {"id": s["id"], "category_id": to_dataset[(s["isthing"], s["category_id"])]}
            for s in segments_info
        ]
    }
    stat = pq_compute_single_image(gt_ann, pred_ann, gt.numpy(), panoptic_seg.numpy(), _CATEGORIES)
    return stat, stat.pq_average(_CATEGORIES, None)[0]


def test_unknown_turns_a_wrong_class_false_positive_into_void() -> None:
    seg_off, info_off = _wrong_class_scene(unknown=False)
    seg_on, info_on = _wrong_class_scene(unknown=True)
    # Without unknown the square is a segment; with unknown its pixels are VOID.
    assert [s["category_id"] for s in info_off if s["isthing"]] == [1]
    assert not [s for s in info_on if s["isthing"]]
    assert (seg_on[4:10, 4:10] == 0).all()

    stat_off, pq_off = _pq_stats(seg_off, info_off)
    stat_on, pq_on = _pq_stats(seg_on, info_on)
    # Off: ground TP (IoU 1), circle FN, square FP -> PQ = (1 + 0 + 0) / 3.
    assert (stat_off[10].tp, stat_off[1].fn, stat_off[2].fp) == (1, 1, 1)
    assert pq_off["pq"] == 1 / 3 and pq_off["n"] == 3
    # On: ground TP, circle FN, no FP; the square category is not scored -> PQ = 1 / 2.
    assert (stat_on[10].tp, stat_on[1].fn, stat_on[2].fp) == (1, 1, 0)
    assert pq_on["pq"] == 1 / 2 and pq_on["n"] == 2
    assert sum(s.fp for s in stat_on.pq_per_cat.values()) < sum(
        s.fp for s in stat_off.pq_per_cat.values()
    )
