"""Tests for segtron.layers.aspp.ASPP."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segtron.layers import ASPP, DepthwiseSeparableConv2d


def _aspp(**kwargs) -> ASPP:
    torch.manual_seed(0)
    args = {"norm": "BN", "activation": F.relu} | kwargs
    return ASPP(5, 4, [1, 2, 3], **args).eval()


def test_aspp_state_dict_names_match_detectron2():
    keys = set(_aspp().state_dict())
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected = {f"convs.{i}.weight" for i in range(4)}
    expected |= {f"convs.{i}.norm.{name}" for i in range(4) for name in bn}
    expected |= {"convs.4.1.weight", "convs.4.1.bias", "project.weight"}
    expected |= {f"project.norm.{name}" for name in bn}
    assert keys == expected
    no_norm = set(_aspp(norm="").state_dict())
    assert no_norm == {f"convs.{i}.{p}" for i in range(4) for p in ("weight", "bias")} | {
        "convs.4.1.weight",
        "convs.4.1.bias",
        "project.weight",
        "project.bias",
    }


def test_aspp_forward_matches_manual_branches():
    aspp = _aspp(norm="")
    x = torch.randn(2, 5, 7, 6)
    convs = aspp.convs
    branches = [F.relu(F.conv2d(x, convs[0].weight, convs[0].bias))]
    for i, d in enumerate([1, 2, 3], start=1):
        branches.append(F.relu(F.conv2d(x, convs[i].weight, convs[i].bias, padding=d, dilation=d)))
    pooled = F.relu(
        F.conv2d(x.mean(dim=(2, 3), keepdim=True), convs[4][1].weight, convs[4][1].bias)
    )
    branches.append(pooled.expand(-1, -1, 7, 6))
    expected = F.relu(F.conv2d(torch.cat(branches, 1), aspp.project.weight, aspp.project.bias))
    torch.testing.assert_close(aspp(x), expected)


def test_aspp_fixed_kernel_equals_global_pooling_at_training_size():
    global_pool = _aspp()
    fixed = _aspp(pool_kernel_size=(3, 5))
    fixed.load_state_dict(global_pool.state_dict())
    assert isinstance(fixed.convs[4][0], nn.AvgPool2d)
    x = torch.randn(1, 5, 3, 5)
    torch.testing.assert_close(fixed(x), global_pool(x))
    assert fixed(torch.randn(2, 5, 6, 10)).shape == (2, 4, 6, 10)


@pytest.mark.parametrize("size", [(7, 10), (3, 7), (2, 5)])
def test_aspp_fixed_kernel_rejects_sizes_it_cannot_pool(size):
    aspp = _aspp(pool_kernel_size=(3, 5))
    with pytest.raises(ValueError) as info:
        aspp(torch.randn(1, 5, *size))
    message = str(info.value)
    assert f"{size[0]}x{size[1]}" in message and "3x5" in message
    assert "pool_kernel_size=None" in message and "divisibility" in message


def test_aspp_empty_batch_odd_sizes_and_dropout():
    assert _aspp()(torch.zeros(0, 5, 5, 3)).shape == (0, 4, 5, 3)
    aspp = _aspp(norm="", dropout=0.5)
    x = torch.randn(2, 5, 9, 1)
    kept = aspp(x)
    assert kept.shape == (2, 4, 9, 1)
    aspp.train()
    dropped = aspp(x)
    # Training drops about half of the outputs and doubles the others.
    assert torch.where(dropped == 0, 0.0, dropped - 2 * kept).abs().max() < 1e-5
    assert (dropped == 0).sum() > (kept == 0).sum()


def test_aspp_depthwise_separable_and_bad_dilations():
    aspp = _aspp(use_depthwise_separable_conv=True)
    for i in (1, 2, 3):
        assert isinstance(aspp.convs[i], DepthwiseSeparableConv2d)
        assert aspp.convs[i].depthwise.dilation == (i, i)
    assert "convs.1.depthwise.norm.running_var" in aspp.state_dict()
    assert aspp(torch.randn(1, 5, 4, 6)).shape == (1, 4, 4, 6)
    with pytest.raises(ValueError, match="3 dilations"):
        ASPP(5, 4, [6, 12], norm="BN", activation=F.relu)
