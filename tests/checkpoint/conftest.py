"""Tiny models with Detectron2's parameter names, shared by the checkpoint tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


class FrozenNorm(nn.Module):
    """Frozen BN stand-in: the four buffers Detectron2's FrozenBatchNorm2d has."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))


class ConvNorm(nn.Conv2d):
    """A bias-free conv with a ``norm`` child, like Detectron2's ``Conv2d(norm=...)``."""

    def __init__(self, cin: int, cout: int, kernel: int = 1) -> None:
        super().__init__(cin, cout, kernel, bias=False)
        self.norm = FrozenNorm(cout)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cmid: int, cout: int) -> None:
        super().__init__()
        self.shortcut = ConvNorm(cin, cout)
        self.conv1 = ConvNorm(cin, cmid)
        self.conv2 = ConvNorm(cmid, cmid, 3)
        self.conv3 = ConvNorm(cmid, cout)


class Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, 4, 7)


class TinyResNet(nn.Module):
    """stem + res2 + res3, one bottleneck block each (``res2.0.conv1.weight``…)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = Stem()
        self.res2 = nn.Sequential(Bottleneck(4, 2, 8))
        self.res3 = nn.Sequential(Bottleneck(8, 4, 16))


class TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bottom_up = TinyResNet()
        self.fpn_lateral2 = nn.Conv2d(8, 4, 1)


class TinyDetector(nn.Module):
    """Names like a Detectron2 meta-architecture: ``backbone.bottom_up.res2.0.conv1.weight``."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = TinyBackbone()
        self.box_head = nn.Linear(16, 5)
        self.register_buffer("pixel_mean", torch.zeros(3, 1, 1))


@pytest.fixture
def make_detector() -> type[TinyDetector]:
    """The tiny detector class, to build fresh instances in a test."""
    return TinyDetector


@pytest.fixture
def detector() -> TinyDetector:
    torch.manual_seed(0)
    return TinyDetector()


def c2_tiny_resnet_blobs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Caffe2 (MSRA ImageNet) blobs for :class:`TinyResNet`, named by Caffe2's rules."""
    blobs = {"conv1_w": rng.standard_normal((4, 3, 7, 7), dtype="float32")}
    for suffix in ("s", "b"):
        blobs[f"res_conv1_bn_{suffix}"] = rng.standard_normal(4, dtype="float32")
    shapes = {2: (4, 2, 8), 3: (8, 4, 16)}
    for stage, (cin, cmid, cout) in shapes.items():
        convs = {
            "branch1": (cout, cin, 1),
            "branch2a": (cmid, cin, 1),
            "branch2b": (cmid, cmid, 3),
            "branch2c": (cout, cmid, 1),
        }
        for branch, (o, i, k) in convs.items():
            name = f"res{stage}_0_{branch}"
            blobs[f"{name}_w"] = rng.standard_normal((o, i, k, k), dtype="float32")
            blobs[f"{name}_bn_s"] = rng.standard_normal(o, dtype="float32")
            blobs[f"{name}_bn_b"] = rng.standard_normal(o, dtype="float32")
            blobs[f"{name}_w_momentum"] = rng.standard_normal((o, i, k, k), dtype="float32")
    blobs["fc1000_w"] = rng.standard_normal((10, 16), dtype="float32")
    blobs["fc1000_b"] = rng.standard_normal(10, dtype="float32")
    return blobs


@pytest.fixture
def c2_blobs() -> dict[str, np.ndarray]:
    return c2_tiny_resnet_blobs(np.random.default_rng(0))
