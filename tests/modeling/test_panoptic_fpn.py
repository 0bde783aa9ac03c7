"""Tests of PanopticFPN and of combine_semantic_and_instance_outputs."""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from rcnn_inputs import shapes_input, tiny_rcnn_cfg  # noqa: E402

from segtron.modeling import PanopticFPN, build_model  # noqa: E402
from segtron.modeling.meta_arch import combine_semantic_and_instance_outputs  # noqa: E402
from segtron.structures import Boxes, Instances  # noqa: E402
from segtron.utils.events import EventStorage  # noqa: E402

PANOPTIC_LOSSES = {
    "loss_sem_seg",
    "loss_rpn_cls",
    "loss_rpn_loc",
    "loss_cls",
    "loss_box_reg",
    "loss_mask",
}


def instances(masks: list[torch.Tensor], scores: list[float], classes: list[int]) -> Instances:
    """Post-processed predictions: full-size bool masks with their scores and classes."""
    result = Instances(tuple(masks[0].shape))
    result.pred_masks = torch.stack(masks)
    result.scores = torch.tensor(scores)
    result.pred_classes = torch.tensor(classes)
    result.pred_boxes = Boxes(torch.zeros(len(masks), 4))
    return result


def box_mask(y0: int, y1: int, x0: int, x1: int, size: tuple[int, int] = (10, 10)) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_combine_pastes_instances_by_score_then_stuff():
    semantic = torch.zeros(10, 10, dtype=torch.long)  # 0: the class of all things
    semantic[:5] = 1  # sky, top half
    semantic[5:] = 2  # ground, bottom half
    semantic[8:, 8:] = 0  # a "thing" region no instance covers: stays VOID
    preds = instances(
        [
            box_mask(0, 4, 0, 4),  # low score: pasted second, loses its overlap
            box_mask(2, 6, 2, 6),  # highest score: pasted first, whole
            box_mask(2, 6, 2, 5),  # fully covered by the first: dropped (overlap 1.0 > 0.5)
            box_mask(6, 8, 6, 8),  # below the score threshold: dropped
        ],
        scores=[0.8, 0.9, 0.7, 0.3],
        classes=[2, 0, 1, 1],
    )
    panoptic, segments = combine_semantic_and_instance_outputs(
        preds, semantic, overlap_threshold=0.5, stuff_area_thresh=5, instances_score_thresh=0.5
    )
    assert panoptic.dtype == torch.int32 and panoptic.shape == (10, 10)
    things = [s for s in segments if s["isthing"]]
    assert [(s["id"], s["instance_id"], s["category_id"]) for s in things] == [(1, 1, 0), (2, 0, 2)]
    assert things[0]["score"] == pytest.approx(0.9)
    assert (panoptic[2:6, 2:6] == 1).all()
    # the second instance keeps only the pixels the first did not take (4 of its 16 overlap)
    assert (panoptic == 2).sum() == 16 - 4
    stuff = [s for s in segments if not s["isthing"]]
    assert [(s["id"], s["category_id"]) for s in stuff] == [(3, 1), (4, 2)]
    # sky: 50 pixels less 12 of each instance; ground: 50 less the 4 "thing" pixels and 4 of
    # the first instance
    assert [s["area"] for s in stuff] == [26, 42]
    for info in stuff:
        assert (panoptic == info["id"]).sum() == info["area"]
    # class 0 never becomes a stuff segment: its uncovered pixels stay 0
    assert (panoptic[8:, 8:] == 0).all()
    assert [s["id"] for s in segments] == [1, 2, 3, 4]


def test_combine_overlap_threshold_and_small_stuff():
    semantic = torch.full((10, 10), 2, dtype=torch.long)
    semantic[9, 7:] = 1  # 3 pixels of class 1, under no instance: below the area threshold
    big = box_mask(0, 10, 0, 5)
    mostly_covered = box_mask(0, 10, 3, 6)  # 20 of its 30 pixels under `big`
    preds = instances([big, mostly_covered], scores=[0.95, 0.9], classes=[0, 1])
    strict, segments = combine_semantic_and_instance_outputs(preds, semantic, 0.5, 4, 0.5)
    assert [s["instance_id"] for s in segments if s["isthing"]] == [0]
    assert [(s["category_id"], s["area"]) for s in segments if not s["isthing"]] == [(2, 47)]
    assert (strict[9, 7:] == 0).all() and (strict == 0).sum() == 3
    lenient, segments = combine_semantic_and_instance_outputs(preds, semantic, 0.7, 3, 0.5)
    assert [s["instance_id"] for s in segments if s["isthing"]] == [0, 1]
    assert (lenient == 2).sum() == 10  # the second instance, less the pixels of the first
    assert [(s["category_id"], s["area"]) for s in segments if not s["isthing"]] == [
        (1, 3),
        (2, 37),
    ]


def test_combine_without_instances_and_errors():
    semantic = torch.ones(6, 6, dtype=torch.long)
    empty = Instances((6, 6))
    empty.pred_masks = torch.zeros(0, 6, 6, dtype=torch.bool)
    empty.scores = torch.zeros(0)
    empty.pred_classes = torch.zeros(0, dtype=torch.long)
    panoptic, segments = combine_semantic_and_instance_outputs(empty, semantic, 0.5, 100, 0.5)
    assert segments == [] and (panoptic == 0).all()  # 36 pixels < 100
    no_masks = Instances((6, 6), scores=torch.ones(1), pred_classes=torch.zeros(1))
    with pytest.raises(ValueError, match="MASK_ON"):
        combine_semantic_and_instance_outputs(no_masks, semantic, 0.5, 0, 0.5)


def panoptic_input(size: tuple[int, int] = (64, 80), **extra: Any) -> dict[str, Any]:
    """`shapes_input` with Panoptic FPN's semantic labels: 0 things, 1 top, 2 bottom, 255."""
    data = shapes_input(size, **extra)
    height, width = size
    sem_seg = torch.ones(height, width, dtype=torch.long)
    sem_seg[height // 2 :] = 2
    sem_seg[data["instances"].gt_masks.tensor.any(dim=0)] = 0
    sem_seg[:2, :2] = 255
    return data | {"sem_seg": sem_seg}


def tiny_panoptic_cfg() -> Any:
    cfg = tiny_rcnn_cfg("Synthetic/panoptic_fpn_R_18.yaml")
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = 0.0
    return cfg


@pytest.fixture(scope="module")
def model() -> PanopticFPN:
    torch.manual_seed(0)
    return build_model(tiny_panoptic_cfg())


def test_config_values(model):
    assert isinstance(model, PanopticFPN)
    assert model.combine_overlap_thresh == 0.5
    assert model.combine_stuff_area_thresh == 256
    assert model.combine_instances_score_thresh == 0.0
    assert model.sem_seg_head.ignore_value == 255
    assert "sem_seg_head.predictor.weight" in model.state_dict()


def test_training_losses(model):
    model.train()
    torch.manual_seed(0)
    with EventStorage():
        losses = model([panoptic_input(), panoptic_input((64, 96))])
    assert set(losses) == PANOPTIC_LOSSES
    assert all(math.isfinite(v.item()) for v in losses.values())
    with pytest.raises(ValueError, match="sem_seg"):
        model([shapes_input()])


def test_inference_outputs(model):
    model.eval()
    with torch.no_grad():
        outputs = model([panoptic_input(height=128, width=160), panoptic_input((64, 96))])
    for out, size in zip(outputs, [(128, 160), (64, 96)]):
        assert set(out) == {"sem_seg", "instances", "panoptic_seg"}
        assert out["sem_seg"].shape == (3, *size)
        assert out["instances"].image_size == size
        panoptic, segments = out["panoptic_seg"]
        assert panoptic.shape == size and panoptic.dtype == torch.int32
        assert sorted(torch.unique(panoptic[panoptic > 0]).tolist()) == sorted(
            s["id"] for s in segments
        )
        assert any(s["isthing"] for s in segments)  # the score threshold is 0
    with torch.no_grad():
        raw_instances, raw_sem_seg = model.inference([panoptic_input()], do_postprocess=False)
    assert raw_sem_seg.shape == (1, 3, 64, 96)  # padded to the backbone's divisibility
    assert raw_instances[0].image_size == (64, 80)


def test_instance_loss_weight_scales_box_and_mask_losses():
    cfg = tiny_panoptic_cfg()
    losses = {}
    for weight in (1.0, 2.0):
        cfg.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT = weight
        torch.manual_seed(0)
        model = build_model(cfg).train()
        torch.manual_seed(1)
        with EventStorage():
            losses[weight] = {k: v.item() for k, v in model([panoptic_input()]).items()}
    for name in ("loss_cls", "loss_box_reg", "loss_mask"):
        assert losses[2.0][name] == pytest.approx(2 * losses[1.0][name], rel=1e-4), name
    for name in ("loss_rpn_cls", "loss_rpn_loc", "loss_sem_seg"):
        assert losses[2.0][name] == pytest.approx(losses[1.0][name], rel=1e-4), name
