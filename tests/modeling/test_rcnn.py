"""Tests of GeneralizedRCNN (Mask R-CNN) and ProposalNetwork on tiny synthetic-like inputs."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from rcnn_inputs import shapes_input, tiny_rcnn_cfg  # noqa: E402

from segtron.modeling import (  # noqa: E402
    META_ARCH_REGISTRY,
    GeneralizedRCNN,
    PanopticFPN,
    ProposalNetwork,
    build_model,
)
from segtron.structures import Boxes, Instances  # noqa: E402
from segtron.utils.events import EventStorage  # noqa: E402

RCNN_LOSSES = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}


@pytest.fixture(scope="module")
def model() -> GeneralizedRCNN:
    torch.manual_seed(0)
    return build_model(tiny_rcnn_cfg())


def test_meta_architectures_are_registered():
    assert META_ARCH_REGISTRY.get("GeneralizedRCNN") is GeneralizedRCNN
    assert META_ARCH_REGISTRY.get("ProposalNetwork") is ProposalNetwork
    assert META_ARCH_REGISTRY.get("PanopticFPN") is PanopticFPN


def test_structure_and_buffers(model):
    assert isinstance(model, GeneralizedRCNN)
    assert model.device == torch.device("cpu")
    assert model.input_format == "BGR"
    # pixel statistics come from the config, not from checkpoints (as in Detectron2)
    assert "pixel_mean" not in model.state_dict()
    assert model.pixel_mean.shape == (3, 1, 1)
    keys = set(model.state_dict())
    for key in (
        "backbone.bottom_up.res2.0.conv1.weight",
        "proposal_generator.rpn_head.conv.weight",
        "roi_heads.box_head.fc1.weight",
        "roi_heads.mask_head.predictor.weight",
    ):
        assert key in keys


def test_training_returns_the_five_finite_losses(model):
    model.train()
    torch.manual_seed(0)
    with EventStorage():
        losses = model([shapes_input(), shapes_input((64, 96))])
    assert set(losses) == RCNN_LOSSES
    for name, value in losses.items():
        assert value.dim() == 0 and math.isfinite(value.item()), name
    sum(losses.values()).backward()
    grad = model.backbone.bottom_up.stem.conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    model.zero_grad()


def test_training_without_instances_is_a_clear_error(model):
    model.train()
    with pytest.raises(ValueError, match="instances"):
        model([{"image": torch.zeros(3, 32, 32)}])


def test_inference_rescales_to_each_inputs_size(model):
    model.eval()
    inputs = [shapes_input((128, 160)), shapes_input((64, 96))]
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    for out, size in zip(outputs, [(128, 160), (64, 96)]):
        instances = out["instances"]
        assert instances.image_size == size
        assert len(instances) > 0
        assert instances.pred_masks.dtype == torch.bool
        assert instances.pred_masks.shape == (len(instances), *size)
        assert instances.scores.shape == instances.pred_classes.shape == (len(instances),)
        boxes = instances.pred_boxes.tensor
        assert (boxes[:, 2] <= size[1]).all() and (boxes[:, 3] <= size[0]).all()
        assert (boxes >= 0).all()
    # An explicit output size doubles the boxes and masks.
    with torch.no_grad():
        same = model([shapes_input((64, 96))])[0]["instances"]
        doubled = model([shapes_input((64, 96), height=128, width=192)])[0]["instances"]
    assert doubled.image_size == (128, 192) and doubled.pred_masks.shape[1:] == (128, 192)
    torch.testing.assert_close(doubled.pred_boxes.tensor, same.pred_boxes.tensor * 2)


def test_inference_without_postprocess_and_with_given_boxes(model):
    model.eval()
    inputs = [shapes_input(height=128, width=160)]
    with torch.no_grad():
        raw = model.inference(inputs, do_postprocess=False)
        given = Instances((64, 80))
        given.pred_boxes = Boxes(torch.tensor([[10.0, 8.0, 34.0, 30.0]]))
        given.pred_classes = torch.tensor([1])
        with_boxes = model.inference(inputs, detected_instances=[given])
    assert isinstance(raw[0], Instances) and raw[0].image_size == (64, 80)
    assert raw[0].pred_masks.shape[1:] == (1, 28, 28)  # not pasted yet
    result = with_boxes[0]["instances"]
    assert len(result) == 1 and result.pred_masks.shape == (1, 128, 160)
    torch.testing.assert_close(result.pred_boxes.tensor, torch.tensor([[20.0, 16, 68, 60]]))


def test_visualization_of_training_batches():
    cfg = tiny_rcnn_cfg()
    cfg.VIS_PERIOD = 1
    torch.manual_seed(0)
    model = build_model(cfg).train()
    with EventStorage() as storage:
        model([shapes_input()])
    # (the mask head may add its own image: only the meta-architecture's is checked)
    ((image, _),) = [(img, it) for name, img, it in storage._vis_data if "proposals" in name]
    assert image.shape == (3, 64, 160)  # ground truth and proposals side by side
    with pytest.raises(ValueError, match="input_format"):
        GeneralizedRCNN(
            backbone=model.backbone,
            proposal_generator=model.proposal_generator,
            roi_heads=model.roi_heads,
            pixel_mean=[0.0, 0.0, 0.0],
            pixel_std=[1.0, 1.0, 1.0],
            vis_period=10,
        )


def test_proposal_network():
    cfg = tiny_rcnn_cfg()
    cfg.MODEL.META_ARCHITECTURE = "ProposalNetwork"
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model, ProposalNetwork)
    model.train()
    with EventStorage():
        losses = model([shapes_input()])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    model.eval()
    with torch.no_grad():
        (out,) = model([shapes_input((128, 160))])
    proposals = out["proposals"]
    assert proposals.image_size == (128, 160)
    assert 0 < len(proposals) <= cfg.MODEL.RPN.POST_NMS_TOPK_TEST
    assert proposals.has("objectness_logits")


def test_precomputed_proposals_are_required_without_proposal_generator(model):
    no_rpn = GeneralizedRCNN(
        backbone=model.backbone,
        proposal_generator=None,
        roi_heads=model.roi_heads,
        pixel_mean=[103.53, 116.28, 123.675],
        pixel_std=[1.0, 1.0, 1.0],
    ).eval()
    with pytest.raises(ValueError, match="proposals"):
        no_rpn([shapes_input()])
    proposals = Instances((64, 80))
    proposals.proposal_boxes = Boxes(torch.tensor([[10.0, 8.0, 34.0, 30.0]]))
    proposals.objectness_logits = torch.tensor([1.0])
    with torch.no_grad():
        (out,) = no_rpn([shapes_input(proposals=proposals)])
    assert len(out["instances"]) <= 3  # one proposal, at most one detection per class
