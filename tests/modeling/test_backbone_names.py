"""Checkpoint compatibility: the R50-FPN backbone has exactly Detectron2's state-dict names.

The expected names and shapes are written out from the documented layout of Detectron2's
Mask R-CNN R50-FPN (a table of stages below), never read from our modules, so that a
Detectron2 model-zoo state dict maps one to one onto ``build_backbone(cfg)``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from segtron.config import get_cfg
from segtron.modeling import build_backbone

CONFIG = (
    Path(__file__).resolve().parents[2]
    / "configs"
    / "COCO-InstanceSegmentation"
    / "mask_rcnn_R_50_FPN_1x.yaml"
)

# ResNet-50: (stage, blocks, in_channels, bottleneck_channels, out_channels).
R50_STAGES = [
    ("res2", 3, 64, 64, 256),
    ("res3", 4, 256, 128, 512),
    ("res4", 6, 512, 256, 1024),
    ("res5", 3, 1024, 512, 2048),
]
FPN_CHANNELS = 256
# Detectron2's FrozenBatchNorm2d keeps these four buffers (no num_batches_tracked).
FROZEN_BN = ("weight", "bias", "running_mean", "running_var")


def conv_with_frozen_bn(prefix: str, out_c: int, in_c: int, k: int) -> dict[str, tuple]:
    entries = {f"{prefix}.weight": (out_c, in_c, k, k)}
    entries.update({f"{prefix}.norm.{name}": (out_c,) for name in FROZEN_BN})
    return entries


def expected_r50_fpn_names() -> dict[str, tuple]:
    expected = conv_with_frozen_bn("backbone.bottom_up.stem.conv1", 64, 3, 7)
    for stage, blocks, in_c, mid_c, out_c in R50_STAGES:
        for i in range(blocks):
            block = f"backbone.bottom_up.{stage}.{i}"
            block_in = in_c if i == 0 else out_c
            expected.update(conv_with_frozen_bn(f"{block}.conv1", mid_c, block_in, 1))
            expected.update(conv_with_frozen_bn(f"{block}.conv2", mid_c, mid_c, 3))
            expected.update(conv_with_frozen_bn(f"{block}.conv3", out_c, mid_c, 1))
            if i == 0:
                expected.update(conv_with_frozen_bn(f"{block}.shortcut", out_c, in_c, 1))
    for level, (_, _, _, _, out_c) in enumerate(R50_STAGES, start=2):
        expected[f"backbone.fpn_lateral{level}.weight"] = (FPN_CHANNELS, out_c, 1, 1)
        expected[f"backbone.fpn_lateral{level}.bias"] = (FPN_CHANNELS,)
        expected[f"backbone.fpn_output{level}.weight"] = (FPN_CHANNELS, FPN_CHANNELS, 3, 3)
        expected[f"backbone.fpn_output{level}.bias"] = (FPN_CHANNELS,)
    return expected


def test_mask_rcnn_r50_fpn_backbone_names_match_detectron2() -> None:
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    backbone = build_backbone(cfg)
    actual = {f"backbone.{k}": tuple(v.shape) for k, v in backbone.state_dict().items()}
    expected = expected_r50_fpn_names()
    assert sorted(set(expected) - set(actual)) == [], "missing"
    assert sorted(set(actual) - set(expected)) == [], "extra"
    assert actual == expected
    # stem: 5 entries; bottlenecks: 16 blocks x 15 + 4 shortcuts x 5; FPN: 4 levels x 4.
    assert len(actual) == 5 + 16 * 15 + 4 * 5 + 16 == 281


def test_mask_rcnn_r50_fpn_block_zero_layout() -> None:
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    backbone = build_backbone(cfg)
    res3 = backbone.bottom_up.res3[0]
    # STRIDE_IN_1X1 (MSRA weights): the stride of block 0 is on its first 1x1 convolution.
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1
    assert res3.conv1.stride == (2, 2) and res3.conv2.stride == (1, 1)
    assert res3.shortcut.stride == (2, 2)
    # FREEZE_AT 2: stem and res2 are not trained, res3 on are.
    trainable = {k.split(".")[1] for k, p in backbone.named_parameters() if p.requires_grad}
    assert "stem" not in trainable and "res2" not in trainable
    assert {"res3", "res4", "res5"} <= trainable
    with torch.no_grad():
        outputs = backbone(torch.zeros(1, 3, 64, 64))
    assert [tuple(v.shape[-2:]) for v in outputs.values()] == [
        (16, 16),
        (8, 8),
        (4, 4),
        (2, 2),
        (1, 1),
    ]
