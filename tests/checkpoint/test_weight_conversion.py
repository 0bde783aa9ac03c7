"""Caffe2 and torchvision weights renamed to Detectron2 names and loaded into ResNets."""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from segtron import modeling
from segtron.checkpoint import (
    DetectionCheckpointer,
    align_and_update_state_dicts,
    convert_c2_detectron_names,
    convert_torchvision_resnet_names,
    is_torchvision_resnet,
)
from segtron.config import get_cfg

R50_CONFIG = str(
    Path(__file__).resolve().parents[2]
    / "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
)
_BRANCH = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}
_BN_SUFFIX = {"weight": "s", "bias": "b"}


def _c2_name(d2_key: str) -> str | None:
    """The MSRA Caffe2 blob of a Detectron2 ResNet key; None for statistics C2 does not store."""
    match = re.fullmatch(r"stem\.conv1\.(norm\.)?(\w+)", d2_key) or re.fullmatch(
        r"(res\d)\.(\d+)\.(\w+)\.(norm\.)?(\w+)", d2_key
    )
    assert match, d2_key
    *module, norm, param = match.groups()
    if param.startswith("running"):
        return None
    if not module:
        return f"res_conv1_bn_{_BN_SUFFIX[param]}" if norm else "conv1_w"
    stage, block, conv = module
    base = f"{stage}_{block}_{_BRANCH[conv]}"
    return f"{base}_bn_{_BN_SUFFIX[param]}" if norm else f"{base}_w"


def _write(path, obj) -> str:
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return str(path)


@pytest.mark.parametrize("wrap_in_blobs", [False, True])
def test_caffe2_pkl_into_tiny_detector(tmp_path, detector, c2_blobs, caplog, wrap_in_blobs):
    data = {"blobs": c2_blobs, "cfg": "yaml text"} if wrap_in_blobs else c2_blobs
    caplog.set_level(logging.INFO, logger="segtron")
    DetectionCheckpointer(detector).load(_write(tmp_path / "R-tiny.pkl", data))

    resnet = detector.backbone.bottom_up
    np.testing.assert_array_equal(resnet.stem.conv1.weight.detach().numpy(), c2_blobs["conv1_w"])
    np.testing.assert_array_equal(resnet.stem.conv1.norm.bias.numpy(), c2_blobs["res_conv1_bn_b"])
    block = resnet.res3[0]
    np.testing.assert_array_equal(block.conv2.norm.weight.numpy(), c2_blobs["res3_0_branch2b_bn_s"])
    np.testing.assert_array_equal(
        block.shortcut.weight.detach().numpy(), c2_blobs["res3_0_branch1_w"]
    )
    assert torch.all(block.conv3.norm.running_mean == 0)
    assert torch.all(block.conv3.norm.running_var == 1)
    log = caplog.text
    assert "backbone.fpn_lateral2.{bias, weight}" in log and "box_head.{bias, weight}" in log
    assert "fc1000" not in log.split("Loaded")[-1] and "momentum" not in log


def test_detectron_head_names_and_background_class():
    rng = np.random.default_rng(0)
    blobs = {
        name: torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        for name, shape in {
            "fpn_inner_res2_2_sum_lateral_w": (4, 8, 1, 1),
            "fpn_res3_3_sum_b": (4,),
            "conv_rpn_fpn2_w": (4, 4, 3, 3),
            "rpn_cls_logits_fpn2_b": (3,),
            "rpn_bbox_pred_fpn2_w": (12, 4, 1, 1),
            "fc6_w": (8, 16),
            "fc7_b": (8,),
            "cls_score_w": (3, 8),
            "bbox_pred_w": (12, 8),
            "_[mask]_fcn1_w": (4, 4, 3, 3),
            "mask_fcn_logits_w": (3, 4, 1, 1),
            "res_conv1_bn_s": (4,),
            "res_conv1_bn_rm": (4,),
            "fpn_inner_res4_5_sum_lateral_gn_s": (4,),
        }.items()
    }
    renamed, original = convert_c2_detectron_names(blobs)
    assert set(renamed) == {
        "fpn_lateral2.weight",
        "fpn_output3.bias",
        "proposal_generator.rpn_head.conv.weight",
        "proposal_generator.rpn_head.objectness_logits.bias",
        "proposal_generator.rpn_head.anchor_deltas.weight",
        "box_head.fc1.weight",
        "box_head.fc2.bias",
        "cls_score.weight",
        "bbox_pred.weight",
        "mask_head.mask_fcn1.weight",
        "mask_head.predictor.weight",
        "stem.conv1.norm.weight",
        "stem.conv1.norm.running_mean",
        "fpn_lateral4.norm.weight",
    }
    assert original["mask_head.mask_fcn1.weight"] == "_[mask]_fcn1_w"
    scores = blobs["cls_score_w"]
    torch.testing.assert_close(renamed["cls_score.weight"], torch.cat([scores[1:], scores[:1]]))
    torch.testing.assert_close(renamed["bbox_pred.weight"], blobs["bbox_pred_w"][4:])
    torch.testing.assert_close(
        renamed["mask_head.predictor.weight"], blobs["mask_fcn_logits_w"][1:]
    )
    # A BN with stored statistics keeps them instead of getting identity ones.
    torch.testing.assert_close(renamed["stem.conv1.norm.running_mean"], blobs["res_conv1_bn_rm"])


def test_ambiguous_suffix_match_is_rejected():
    model = {"head_a.conv1.weight": torch.zeros(1), "head_b.conv1.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="head_a.conv1.weight.*head_b.conv1.weight"):
        align_and_update_state_dicts(model, {"conv1.weight": torch.ones(1)}, c2_conversion=False)


def test_longest_suffix_wins():
    model = {"backbone.stem.conv1.weight": torch.zeros(1), "backbone.res2.0.conv1.weight": 0}
    ckpt = {"stem.conv1.weight": torch.ones(1), "res2.0.conv1.weight": torch.full((1,), 2.0)}
    aligned, unmatched = align_and_update_state_dicts(model, ckpt, c2_conversion=False)
    assert aligned["backbone.res2.0.conv1.weight"].item() == 2.0
    assert aligned["backbone.stem.conv1.weight"].item() == 1.0 and unmatched == []


def test_torchvision_names():
    keys = [
        "conv1.weight",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer1.0.bn2.bias",
        "layer4.2.downsample.0.weight",
        "layer4.2.downsample.1.running_mean",
        "fc.weight",
    ]
    assert is_torchvision_resnet(keys) and not is_torchvision_resnet(["res2.0.conv1.weight"])
    assert list(convert_torchvision_resnet_names(dict.fromkeys(keys, 0))) == [
        "stem.conv1.weight",
        "stem.conv1.norm.running_var",
        "res2.0.conv1.weight",
        "res2.0.conv2.norm.bias",
        "res5.2.shortcut.weight",
        "res5.2.shortcut.norm.running_mean",
    ]


def _segtron_cfg(depth: int):
    cfg = get_cfg()
    cfg.merge_from_file(R50_CONFIG)
    if depth < 50:
        cfg.MODEL.RESNETS.DEPTH = depth
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    return cfg


def test_caffe2_r50_pkl_into_r50_fpn_backbone(tmp_path, caplog):
    backbone = modeling.build_backbone(_segtron_cfg(50))
    rng = np.random.default_rng(0)
    expected: dict[str, np.ndarray] = {}  # bottom_up key -> value it must get
    blobs: dict[str, np.ndarray] = {}
    for key, value in backbone.bottom_up.state_dict().items():
        name = _c2_name(key)
        if name is None:
            expected[key] = np.full(tuple(value.shape), float(key.endswith("running_var")))
            continue
        blobs[name] = expected[key] = rng.standard_normal(tuple(value.shape)).astype(np.float32)
    assert "res5_2_branch2c_bn_s" in blobs and "res4_5_branch2b_w" in blobs  # R-50 sized
    blobs.update(fc1000_w=np.zeros((1000, 2048), np.float32), fc1000_b=np.zeros(1000, np.float32))
    blobs["res2_0_branch2a_w_momentum"] = blobs["res2_0_branch2a_w"]

    caplog.set_level(logging.INFO, logger="segtron")
    DetectionCheckpointer(backbone).load(_write(tmp_path / "R-50.pkl", blobs))

    for key, value in backbone.bottom_up.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), expected[key], err_msg=key)
    table = caplog.text.split("Loaded")[-1]
    missing = [ln for ln in table.splitlines() if "missing" in ln]
    assert missing and all("fpn_" in ln for ln in missing)
    assert "unused" not in table


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_resnet_into_segtron_resnet(tmp_path, caplog, depth):
    cfg = _segtron_cfg(depth)
    resnet = modeling.build_resnet_backbone(cfg, modeling.ShapeSpec(channels=3))
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    with torch.no_grad():
        for buffer in reference.buffers():
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)  # statistics that are not the identity
    state = reference.state_dict()
    torch.save(state, tmp_path / f"resnet{depth}.pth")

    caplog.set_level(logging.INFO, logger="segtron")
    DetectionCheckpointer(resnet).load(str(tmp_path / f"resnet{depth}.pth"))

    loaded = resnet.state_dict()
    torch.testing.assert_close(loaded["stem.conv1.weight"], state["conv1.weight"])
    torch.testing.assert_close(loaded["stem.conv1.norm.running_var"], state["bn1.running_var"])
    torch.testing.assert_close(loaded["res2.0.conv2.weight"], state["layer1.0.conv2.weight"])
    torch.testing.assert_close(loaded["res3.1.conv1.norm.bias"], state["layer2.1.bn1.bias"])
    torch.testing.assert_close(
        loaded["res5.0.shortcut.norm.running_mean"], state["layer4.0.downsample.1.running_mean"]
    )
    log = caplog.text.split("Loaded")[-1]
    assert f"Loaded {len(loaded)} of {len(loaded)} model keys" in caplog.text
    assert "missing" not in log and "unused" not in log


def test_model_with_torchvision_names_round_trips(tmp_path):
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    DetectionCheckpointer(model, str(tmp_path)).save("tv")
    fresh = torchvision.models.resnet18(weights=None, num_classes=3)
    DetectionCheckpointer(fresh).load(str(tmp_path / "tv.pth"))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)
