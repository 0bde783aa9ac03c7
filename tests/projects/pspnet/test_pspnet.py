"""Tests of segtron.projects.pspnet: the pyramid pooling module, PSPNetHead, its config keys and
configs, and one training step through tools/train_net.py (tiny synthetic data, CPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from segtron.config import get_cfg
from segtron.data import DatasetCatalog
from segtron.data.datasets import register_synthetic
from segtron.layers import ShapeSpec
from segtron.modeling import SemanticSegmentor, build_model
from segtron.projects import get_config
from segtron.projects.pspnet import PSPNetHead, PyramidPoolingModule, add_pspnet_config

REPO = Path(__file__).resolve().parents[3]
CONFIGS = {
    "Synthetic/pspnet_R_18.yaml": 5,
    "Cityscapes-SemanticSegmentation/pspnet_R_101_os8.yaml": 19,
    "ADE20K-SemanticSegmentation/pspnet_R_50_os8.yaml": 150,
}
NUM_CLASSES = 3
SHAPES = {"res4": ShapeSpec(channels=24, stride=8), "res5": ShapeSpec(channels=32, stride=8)}


def make_head(**kwargs: Any) -> PSPNetHead:
    torch.manual_seed(0)
    args = {"in_feature": "res5", "num_classes": NUM_CLASSES, "conv_dims": 16, "aux_conv_dims": 8}
    return PSPNetHead(SHAPES, **{**args, **kwargs})


def make_features(height: int = 5, width: int = 7, batch: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {name: torch.randn(batch, s.channels, height, width) for name, s in SHAPES.items()}


def tiny_os8_cfg() -> Any:
    """The ADE20K config with a narrow ResNet-50 (OS8) and head, on CPU."""
    cfg = get_config(str(REPO / "configs" / "ADE20K-SemanticSegmentation/pspnet_R_50_os8.yaml"))
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN"]
        + ["MODEL.RESNETS.WIDTH_PER_GROUP", "4", "MODEL.RESNETS.STEM_OUT_CHANNELS", "16"]
        + ["MODEL.RESNETS.RES2_OUT_CHANNELS", "16", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "16"]
        + ["MODEL.PSPNET.AUX_CONVS_DIM", "8", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(NUM_CLASSES)]
    )
    return cfg


# --- pyramid pooling module -----------------------------------------------------------------


def test_ppm_pools_to_each_bin_and_concatenates_with_the_input() -> None:
    torch.manual_seed(0)
    ppm = PyramidPoolingModule(32, bins=(1, 2, 3, 6), norm="")
    x = torch.randn(2, 32, 9, 11)
    pooled_sizes = []
    for stage in ppm.stages:
        stage.register_forward_hook(lambda m, i, out: pooled_sizes.append(tuple(out.shape)))
    y = ppm(x)
    assert pooled_sizes == [(2, 8, b, b) for b in (1, 2, 3, 6)]  # C/4 = 8 channels per level
    assert y.shape == (2, 32 + 4 * 8, 9, 11)
    torch.testing.assert_close(y[:, :32], x)
    # Level 1 is the global average: constant over the map after upsampling.
    global_level = y[:, 32:40]
    torch.testing.assert_close(global_level, global_level[:, :, :1, :1].expand_as(global_level))
    expected = ppm.stages[0][1](x.mean(dim=(2, 3), keepdim=True))  # conv, ReLU
    torch.testing.assert_close(global_level[:, :, :1, :1], expected)


def test_ppm_bins_are_checked() -> None:
    with pytest.raises(ValueError, match="MODEL.PSPNET.BINS"):
        PyramidPoolingModule(32, bins=[])
    with pytest.raises(ValueError, match="MODEL.PSPNET.BINS"):
        PyramidPoolingModule(32, bins=[1, 0])
    with pytest.raises(ValueError, match="at least one channel"):
        PyramidPoolingModule(3, bins=[1, 2, 3, 6])


# --- head -------------------------------------------------------------------------------------


def test_aux_loss_only_in_training_and_weighted() -> None:
    head = make_head(dropout=0.0, aux_loss_weight=0.4)
    features = make_features()
    targets = torch.randint(0, NUM_CLASSES, (2, 37, 53))
    targets[:, :3] = -1  # ignored
    aux_calls = []
    head.aux_head.register_forward_hook(lambda m, i, out: aux_calls.append(out))

    head.train()
    _, losses = head(features, targets)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_aux"}
    # The auxiliary loss is 0.4 × the cross-entropy of res4's scores, upsampled ×8, cropped.
    aux_scores = F.interpolate(aux_calls[0], scale_factor=8, mode="bilinear", align_corners=False)[
        ..., :37, :53
    ]
    expected = 0.4 * F.cross_entropy(aux_scores, targets, ignore_index=-1)
    torch.testing.assert_close(losses["loss_sem_seg_aux"], expected)
    main_scores = F.interpolate(
        head.layers(features), scale_factor=8, mode="bilinear", align_corners=False
    )
    expected_main = F.cross_entropy(main_scores[..., :37, :53], targets, ignore_index=-1)
    torch.testing.assert_close(losses["loss_sem_seg"], expected_main)

    head.eval()
    aux_calls.clear()
    scores, losses = head(features)
    assert losses == {} and aux_calls == []
    assert scores.shape == (2, NUM_CLASSES, 40, 56)  # feature size × stride 8


def test_no_aux_head_with_zero_weight() -> None:
    head = make_head(aux_loss_weight=0.0)
    assert head.aux_head is None
    head.train()
    _, losses = head(make_features(), torch.zeros(2, 40, 56, dtype=torch.long))
    assert set(losses) == {"loss_sem_seg"}


def test_missing_features_are_named() -> None:
    with pytest.raises(ValueError, match=r"'res3' \(MODEL.PSPNET.AUX_IN_FEATURE\)"):
        make_head(aux_in_feature="res3")
    with pytest.raises(ValueError, match=r"'p5' \(MODEL.SEM_SEG_HEAD.IN_FEATURES\)"):
        make_head(in_feature="p5")
    cfg = tiny_os8_cfg()
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res4", "res5"]
    with pytest.raises(ValueError, match="MODEL.SEM_SEG_HEAD.IN_FEATURES to one name"):
        build_model(cfg)


@pytest.mark.parametrize("size", [(64, 64), (45, 61)])
def test_os8_model_outputs_at_input_size(size) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_os8_cfg())
    assert isinstance(model, SemanticSegmentor)
    assert {k: s.stride for k, s in model.backbone.output_shape().items()} == {"res4": 8, "res5": 8}
    model.eval()
    height, width = size
    image = torch.randint(0, 256, (3, height, width)).float()
    with torch.no_grad():
        out = model([{"image": image}, {"image": image, "height": 2 * height, "width": 7}])
    assert out[0]["sem_seg"].shape == (NUM_CLASSES, height, width)
    assert out[1]["sem_seg"].shape == (NUM_CLASSES, 2 * height, 7)

    model.train()
    losses = model([{"image": image, "sem_seg": torch.zeros(height, width, dtype=torch.long)}] * 2)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_aux"}
    assert all(torch.isfinite(v) for v in losses.values())


# --- config -----------------------------------------------------------------------------------


def test_config_function_only_adds_keys() -> None:
    cfg = get_cfg()
    before = cfg.dump()
    add_pspnet_config(cfg)
    assert cfg.MODEL.PSPNET.BINS == [1, 2, 3, 6] and cfg.MODEL.PSPNET.AUX_LOSS_WEIGHT == 0.4
    del cfg.MODEL["PSPNET"]
    assert cfg.dump() == before
    add_pspnet_config(cfg)
    cfg.MODEL.PSPNET.AUX_LOSS_WEIGHT = 0.2
    add_pspnet_config(cfg)  # again: the changed value is kept
    assert cfg.MODEL.PSPNET.AUX_LOSS_WEIGHT == 0.2


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_configs_load_and_build(name) -> None:
    cfg = get_config(str(REPO / "configs" / name), ["MODEL.DEVICE", "cpu"])
    if name.startswith("Synthetic"):  # the shared from-scratch recipe of the Synthetic configs
        assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupCosineLR" and cfg.SOLVER.OPTIMIZER == "ADAMW"
    else:  # the paper's poly policy
        assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR" and cfg.SOLVER.POLY_LR_POWER == 0.9
    model = build_model(cfg)
    head = model.sem_seg_head
    assert isinstance(head, PSPNetHead)
    assert head.predictor.out_channels == CONFIGS[name]
    assert head.ppm.bins == [1, 2, 3, 6] and head.aux_loss_weight == 0.4
    if not name.startswith("Synthetic"):
        assert head.in_feature == "res5" and head.aux_in_feature == "res4"
        assert head.common_stride == 8 and head.bottleneck.out_channels == 512


# --- tools/train_net.py -----------------------------------------------------------------------


@pytest.mark.slow
def test_one_train_step_through_train_net(tmp_path) -> None:
    prefix = "pspnettest"
    if f"{prefix}_train_sem_seg" not in DatasetCatalog:
        register_synthetic(
            root=tmp_path / "data",
            prefix=prefix,
            num_images={"train": 4, "val": 2},
            image_size=(32, 40),
        )
    spec = importlib.util.spec_from_file_location(
        "_pspnet_train_net", REPO / "tools" / "train_net.py"
    )
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    out = tmp_path / "out"
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", str(REPO / "configs" / "Synthetic" / "pspnet_R_18.yaml")]
        + ["SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"]
        + ["INPUT.MIN_SIZE_TRAIN", "(32,)", "INPUT.MIN_SIZE_TEST", "32", "TEST.EVAL_PERIOD", "0"]
        + ["DATASETS.TRAIN", f"('{prefix}_train_sem_seg',)"]
        + ["DATASETS.TEST", f"('{prefix}_val_sem_seg',)", "OUTPUT_DIR", str(out)]
    )
    results = train_net.main(args)
    assert 0 <= results["sem_seg"]["mIoU"] <= 100
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = next(m for m in metrics if "total_loss" in m)
    assert losses["loss_sem_seg_aux"] > 0 and losses["loss_sem_seg"] > 0
    assert (out / "model_final.pth").is_file()
