"""The semantic baselines' configs load through segtron.projects.get_config and build; one
train step and one --eval-only run through tools/train_net.py on tiny synthetic data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from segtron.data import DatasetCatalog
from segtron.data.datasets import register_synthetic
from segtron.modeling import build_model
from segtron.projects import get_config
from segtron.projects.semantic_baselines import (
    ClassicalSegmentor,
    FCNHead,
    PixelClassifierHead,
    SegNet,
    UNet,
)

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "configs"
PREFIX = "sbtest"
# Narrow the full-size models so that building them stays fast.
SMALL = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.VGG.CHANNELS_PER_STAGE", "[4,4,8,8,8]"]
SMALL += ["MODEL.FCN.FC_CHANNELS", "8", "MODEL.UNET.BASE_CHANNELS", "4"]

TRAINED = {
    "Synthetic/fcn8s_vgg16.yaml": ("build_vgg16_backbone", FCNHead, 8),
    "Synthetic/fcn16s_vgg16.yaml": ("build_vgg16_backbone", FCNHead, 16),
    "Synthetic/fcn8s_R_18.yaml": ("build_resnet_backbone", FCNHead, 8),
    "Synthetic/fcn32s_vgg16.yaml": ("build_vgg16_backbone", FCNHead, 32),
    "Synthetic/unet.yaml": (UNet, PixelClassifierHead, None),
    "Synthetic/segnet_vgg16.yaml": (SegNet, PixelClassifierHead, None),
    "Cityscapes-SemanticSegmentation/fcn8s_vgg16.yaml": ("build_vgg16_backbone", FCNHead, 8),
    "Cityscapes-SemanticSegmentation/unet.yaml": (UNet, PixelClassifierHead, None),
    "Cityscapes-SemanticSegmentation/segnet_vgg16.yaml": (SegNet, PixelClassifierHead, None),
}
CLASSICAL = ["otsu", "kmeans", "grabcut"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> list[str]:
    """Tiny synthetic datasets (8 train, 4 val images of 32x40) and the options naming them."""
    if f"{PREFIX}_train_sem_seg" not in DatasetCatalog:
        register_synthetic(
            root=tmp_path_factory.mktemp("sb_data"),
            prefix=PREFIX,
            num_images={"train": 8, "val": 4},
            image_size=(32, 40),
        )
    return [
        "DATASETS.TRAIN",
        f"('{PREFIX}_train_sem_seg',)",
        "DATASETS.TEST",
        f"('{PREFIX}_val_sem_seg',)",
    ]


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_trained_configs_build_and_run(name: str) -> None:
    backbone, head_class, output_stride = TRAINED[name]
    cfg = get_config(str(CONFIGS / name), SMALL)
    model = build_model(cfg).eval()
    if isinstance(backbone, str):
        assert cfg.MODEL.BACKBONE.NAME == backbone
    else:
        assert isinstance(model.backbone, backbone)
    assert isinstance(model.sem_seg_head, head_class)
    if output_stride is not None:
        assert model.sem_seg_head.output_stride == output_stride
    classes = 19 if name.startswith("Cityscapes") else 5
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == classes
    with torch.no_grad():
        (out,) = model([{"image": torch.rand(3, 35, 41) * 255}])
    assert out["sem_seg"].shape == (classes, 35, 41)


@pytest.mark.parametrize("method", CLASSICAL)
def test_classical_configs_build_from_train_split(method: str, tiny_data) -> None:
    path = str(CONFIGS / "Synthetic" / f"classical_{method}.yaml")
    shipped = get_config(path)
    assert shipped.MODEL.CLASSICAL.METHOD == method
    assert shipped.DATASETS.TRAIN == ("synthetic_train_sem_seg",)  # labels of train, not val
    cfg = get_config(path, tiny_data)
    model = build_model(cfg)
    assert isinstance(model, ClassicalSegmentor) and model.method == method
    assert model.class_means.shape == (5, 4)
    assert not list(model.parameters())


def _train_net():
    spec = importlib.util.spec_from_file_location("_sb_train_net", REPO / "tools" / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_net_one_step_and_classical_eval_only(tiny_data, tmp_path) -> None:
    train_net = _train_net()
    parser = train_net.default_argument_parser()
    tiny = ["SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"]
    tiny += ["TEST.EVAL_PERIOD", "0", "INPUT.MIN_SIZE_TRAIN", "(32,)", "INPUT.MIN_SIZE_TEST", "32"]
    out = tmp_path / "fcn"
    args = parser.parse_args(
        ["--config-file", str(CONFIGS / "Synthetic" / "fcn8s_vgg16.yaml"), *tiny, *tiny_data]
        + ["OUTPUT_DIR", str(out)]
    )
    results = train_net.main(args)
    assert (out / "model_final.pth").is_file()
    assert 0 <= results["sem_seg"]["mIoU"] <= 100

    args = parser.parse_args(
        ["--config-file", str(CONFIGS / "Synthetic" / "classical_kmeans.yaml"), "--eval-only"]
        + [*tiny, *tiny_data, "OUTPUT_DIR", str(tmp_path / "kmeans")]
    )
    results = train_net.main(args)
    assert 0 <= results["sem_seg"]["mIoU"] <= 100 and results["sem_seg"]["pACC"] > 0
