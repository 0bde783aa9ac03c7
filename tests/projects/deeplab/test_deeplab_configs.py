"""Tests of the DeepLab config keys, the shipped configs, augmentations and train_net."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from segtron.config import CfgNode, get_cfg
from segtron.data import DATASET_MAPPER_REGISTRY, DatasetCatalog
from segtron.data import transforms as T
from segtron.data.datasets import register_synthetic
from segtron.modeling import build_model
from segtron.projects import get_config
from segtron.projects.deeplab import add_deeplab_config, build_sem_seg_train_aug

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "configs"
DEEPLAB_CONFIGS = sorted(CONFIGS.glob("*SemanticSegmentation*/deeplab*.yaml"))
DEEPLAB_CONFIGS += sorted(CONFIGS.glob("Synthetic/deeplab_v3*.yaml"))
CITYSCAPES = CONFIGS / "Cityscapes-SemanticSegmentation"


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    items: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, CfgNode):
            items |= _flatten(value, f"{prefix}{key}.")
        else:
            items[f"{prefix}{key}"] = value
    return items


def test_add_deeplab_config_adds_detectron2_defaults_and_changes_nothing() -> None:
    cfg = get_cfg()
    before = _flatten(cfg)
    add_deeplab_config(cfg)
    head = cfg.MODEL.SEM_SEG_HEAD
    assert cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA == 1.0
    assert head.LOSS_TYPE == "hard_pixel_mining"
    assert (head.PROJECT_FEATURES, head.PROJECT_CHANNELS) == (["res2"], [48])
    assert (head.ASPP_CHANNELS, head.ASPP_DILATIONS, head.ASPP_DROPOUT) == (256, [6, 12, 18], 0.1)
    assert head.USE_DEPTHWISE_SEPARABLE_CONV is False
    # Core keys Detectron2's function sets keep the core defaults.
    assert cfg.MODEL.RESNETS.RES5_MULTI_GRID == [1, 1, 1]
    assert cfg.MODEL.RESNETS.STEM_TYPE == "basic"
    assert (cfg.SOLVER.POLY_LR_POWER, cfg.SOLVER.POLY_LR_CONSTANT_ENDING) == (0.9, 0.0)
    # Only additions: every default keeps its value.
    after = _flatten(cfg)
    assert {key: after[key] for key in before} == before
    assert sorted(after.keys() - before.keys()) == [
        "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA",
        *(
            f"MODEL.SEM_SEG_HEAD.{key}"
            for key in (
                "ASPP_CHANNELS",
                "ASPP_DILATIONS",
                "ASPP_DROPOUT",
                "LOSS_TYPE",
                "PROJECT_CHANNELS",
                "PROJECT_FEATURES",
                "USE_DEPTHWISE_SEPARABLE_CONV",
            )
        ),
    ]


def test_add_deeplab_config_keeps_values_already_set() -> None:
    cfg = get_cfg()
    add_deeplab_config(cfg)
    cfg.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS = 64
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.75
    add_deeplab_config(cfg)
    assert cfg.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS == 64
    assert cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA == 0.75


def test_shipped_configs_are_found() -> None:
    names = {path.name for path in DEEPLAB_CONFIGS}
    assert {
        "deeplab_v3_R_103_os16_mg124_poly_90k_bs16.yaml",
        "deeplab_v3_plus_R_103_os16_mg124_poly_90k_bs16.yaml",
        "deeplab_v3_plus_R_50_os16_poly_160k_bs16.yaml",
        "deeplab_v3_R_18.yaml",
        "deeplab_v3_plus_R_18.yaml",
    } <= names


@pytest.mark.parametrize("path", DEEPLAB_CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_builds(path: Path) -> None:
    cfg = get_config(str(path), ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    head = cfg.MODEL.SEM_SEG_HEAD
    assert type(model.sem_seg_head).__name__ == head.NAME
    if head.NAME in ("DeepLabV3Head", "DeepLabV3PlusHead"):
        assert model.sem_seg_head.predictor.out_channels == head.NUM_CLASSES


def test_cityscapes_configs_have_detectron2_values() -> None:
    v3 = get_config(str(CITYSCAPES / "deeplab_v3_R_103_os16_mg124_poly_90k_bs16.yaml"))
    plus = get_config(str(CITYSCAPES / "deeplab_v3_plus_R_103_os16_mg124_poly_90k_bs16.yaml"))
    for cfg in (v3, plus):
        m, head = cfg.MODEL, cfg.MODEL.SEM_SEG_HEAD
        assert m.WEIGHTS == "detectron2://DeepLab/R-103.pkl"
        assert m.BACKBONE.NAME == "build_resnet_deeplab_backbone" and m.BACKBONE.FREEZE_AT == 0
        assert (m.RESNETS.DEPTH, m.RESNETS.STEM_TYPE, m.RESNETS.STEM_OUT_CHANNELS) == (
            101,
            "deeplab",
            128,
        )
        assert m.RESNETS.RES5_MULTI_GRID == [1, 2, 4] and m.RESNETS.RES5_DILATION == 2
        assert m.RESNETS.NORM == head.NORM == "SyncBN" and m.RESNETS.STRIDE_IN_1X1 is False
        assert (head.ASPP_CHANNELS, head.ASPP_DILATIONS, head.ASPP_DROPOUT) == (
            256,
            [6, 12, 18],
            0.1,
        )
        assert (head.NUM_CLASSES, head.LOSS_TYPE) == (19, "hard_pixel_mining")
        assert cfg.INPUT.FORMAT == "BGR" and m.PIXEL_MEAN == [123.675, 116.280, 103.530]
        assert (cfg.INPUT.CROP.TYPE, tuple(cfg.INPUT.CROP.SIZE)) == ("absolute", (512, 1024))
        assert cfg.INPUT.MIN_SIZE_TRAIN == (512, 768, 1024, 1280, 1536, 1792, 2048)
        s = cfg.SOLVER
        assert (s.LR_SCHEDULER_NAME, s.BASE_LR, s.MAX_ITER, s.IMS_PER_BATCH) == (
            "WarmupPolyLR",
            0.01,
            90000,
            16,
        )
        assert cfg.DATASETS.TEST == ("cityscapes_fine_sem_seg_val",)
    assert (v3.MODEL.SEM_SEG_HEAD.NAME, v3.MODEL.SEM_SEG_HEAD.COMMON_STRIDE) == (
        "DeepLabV3Head",
        16,
    )
    head = plus.MODEL.SEM_SEG_HEAD
    assert (head.NAME, head.COMMON_STRIDE, head.IN_FEATURES) == (
        "DeepLabV3PlusHead",
        4,
        ["res2", "res5"],
    )
    assert head.PROJECT_CHANNELS == [48] and plus.MODEL.RESNETS.OUT_FEATURES == ["res2", "res5"]


def test_train_augmentations_resize_then_crop_then_flip() -> None:
    cfg = get_config(str(CITYSCAPES / "deeplab_v3_R_103_os16_mg124_poly_90k_bs16.yaml"))
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.CROP.SIZE = [32, 48]
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.75
    augs = build_sem_seg_train_aug(cfg)
    assert [type(a).__name__ for a in augs] == [
        "ResizeShortestEdge",
        "RandomCrop_CategoryAreaConstraint",
        "RandomFlip",
    ]
    assert augs[1].single_category_max_area == 0.75 and augs[1].ignored_category == 255
    image = np.zeros((128, 256, 3), dtype=np.uint8)
    sem_seg = np.zeros((128, 256), dtype=np.uint8)
    sem_seg[:, 128:] = 1
    aug_input = T.AugInput(image, sem_seg=sem_seg)
    T.AugmentationList(augs)(aug_input)
    assert aug_input.image.shape == (32, 48, 3) and aug_input.sem_seg.shape == (32, 48)
    cfg.INPUT.CROP.ENABLED = False
    assert [type(a).__name__ for a in build_sem_seg_train_aug(cfg)] == [
        "ResizeShortestEdge",
        "RandomFlip",
    ]


@pytest.mark.parametrize(
    "config",
    sorted(
        str(p)
        for folder in ("Cityscapes", "ADE20K", "PascalVOC")
        for p in (REPO / "configs" / f"{folder}-SemanticSegmentation").glob("*.yaml")
        if not p.name.startswith("Base-")
    ),
)
def test_crop_training_configs_train_with_resize_then_crop(config: str) -> None:
    cfg = get_config(config)
    if not cfg.INPUT.CROP.ENABLED:
        pytest.skip("this config trains without crops")
    mapper = DATASET_MAPPER_REGISTRY.get(cfg.INPUT.DATASET_MAPPER_NAME)(cfg, True)
    names = [type(a).__name__ for a in mapper.augmentations.augs]
    assert names[:2] == ["ResizeShortestEdge", "RandomCrop_CategoryAreaConstraint"], config


@pytest.mark.slow
def test_one_train_step_through_train_net(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location(
        "_deeplab_train_net", REPO / "tools" / "train_net.py"
    )
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    prefix = "deeplabtest"
    if f"{prefix}_train_sem_seg" not in DatasetCatalog:
        register_synthetic(
            root=tmp_path / "data",
            prefix=prefix,
            num_images={"train": 4, "val": 2},
            image_size=(32, 40),
        )
    out = tmp_path / "out"
    opts = ["INPUT.MIN_SIZE_TRAIN", "(32,)", "INPUT.MIN_SIZE_TEST", "32", "SOLVER.MAX_ITER", "2"]
    opts += ["SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0"]
    opts += ["DATASETS.TRAIN", f"('{prefix}_train_sem_seg',)"]
    opts += ["DATASETS.TEST", f"('{prefix}_val_sem_seg',)", "OUTPUT_DIR", str(out)]
    config = str(CONFIGS / "Synthetic" / "deeplab_v3_plus_R_18.yaml")
    args = train_net.default_argument_parser().parse_args(["--config-file", config, *opts])
    torch.manual_seed(0)
    results = train_net.main(args)
    assert 0 <= results["sem_seg"]["mIoU"] <= 100
    assert (out / "model_final.pth").is_file() and (out / "final_results.txt").is_file()
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert losses and all(np.isfinite(losses))
