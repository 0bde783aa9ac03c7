"""Tests of the meta-architecture registry and ``build_model``: lookup, errors and devices."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from segtron.config import get_cfg
from segtron.modeling import META_ARCH_REGISTRY, SemanticSegmentor, build_model

_TOY_NAME = "_ToyMetaArchForTest"


def small_cfg() -> Any:
    """A config for a tiny SemanticSegmentor on the CPU."""
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 16
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    return cfg


@pytest.fixture
def toy_arch() -> Iterator[type[nn.Module]]:
    """A registered toy meta-architecture, removed from the global registry afterwards."""

    class _ToyMetaArchForTest(nn.Module):
        def __init__(self, cfg: Any) -> None:
            super().__init__()
            self.num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
            self.linear = nn.Linear(2, 2)

    META_ARCH_REGISTRY.register(_ToyMetaArchForTest)
    try:
        yield _ToyMetaArchForTest
    finally:
        # fvcore's Registry has no public way to unregister.
        META_ARCH_REGISTRY._obj_map.pop(_TOY_NAME)


def test_semantic_segmentor_is_registered_and_built() -> None:
    assert META_ARCH_REGISTRY.get("SemanticSegmentor") is SemanticSegmentor
    model = build_model(small_cfg())
    assert isinstance(model, SemanticSegmentor)
    assert model.device == torch.device("cpu")
    assert model.sem_seg_head.predictor.out_channels == 3


def test_build_model_calls_registered_builder_with_cfg(toy_arch: type[nn.Module]) -> None:
    cfg = small_cfg()
    cfg.MODEL.META_ARCHITECTURE = _TOY_NAME
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 7
    model = build_model(cfg)
    assert isinstance(model, toy_arch)
    assert model.num_classes == 7
    assert model.linear.weight.device == torch.device("cpu")


def test_unknown_meta_architecture_error_names_key_choices_and_projects() -> None:
    cfg = small_cfg()
    cfg.MODEL.META_ARCHITECTURE = "DeepLabV3PlusNotImported"
    with pytest.raises(KeyError) as info:
        build_model(cfg)
    message = str(info.value)
    assert "MODEL.META_ARCHITECTURE" in message
    assert "'DeepLabV3PlusNotImported'" in message
    assert "SemanticSegmentor" in message
    assert "segtron.projects.<name>" in message
    assert "add_<name>_config" in message
    assert "tools/train_net.py" in message
    # Printed as written, not as the quoted repr of a plain KeyError.
    assert message.startswith("cfg.MODEL.META_ARCHITECTURE")


def test_cuda_device_without_gpu_suggests_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = small_cfg()
    cfg.MODEL.DEVICE = "cuda"
    with pytest.raises(RuntimeError, match="MODEL.DEVICE cpu"):
        build_model(cfg)


def test_invalid_device_string() -> None:
    cfg = small_cfg()
    cfg.MODEL.DEVICE = "gpu0"
    with pytest.raises(ValueError, match="not a valid torch device"):
        build_model(cfg)
