"""Tests for segtron.layers.blocks: CNNBlockBase and DepthwiseSeparableConv2d."""

import torch
from torch import nn
from torch.nn import functional as F

from segtron.layers import CNNBlockBase, Conv2d, DepthwiseSeparableConv2d, FrozenBatchNorm2d


class _Block(CNNBlockBase):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.conv = Conv2d(
            in_channels,
            out_channels,
            3,
            stride=stride,
            padding=1,
            norm=nn.BatchNorm2d(out_channels),
        )
        self.extra_bn = nn.SyncBatchNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_cnn_block_freeze_converts_norms_and_stops_gradients():
    block = _Block(3, 4, 2)
    assert (block.in_channels, block.out_channels, block.stride) == (3, 4, 2)
    with torch.no_grad():
        block.conv.norm.running_mean.fill_(0.5)
    keys = set(block.state_dict())
    assert block.freeze() is block
    assert isinstance(block.conv.norm, FrozenBatchNorm2d)
    assert isinstance(block.extra_bn, FrozenBatchNorm2d)
    assert block.conv.norm.running_mean.tolist() == [0.5] * 4
    assert all(not p.requires_grad for p in block.parameters())
    # Same names except BatchNorm's num_batches_tracked counters.
    assert set(block.state_dict()) == {k for k in keys if "num_batches_tracked" not in k}
    block.train()
    out = block(torch.randn(2, 3, 7, 5))
    assert out.shape == (2, 4, 4, 3) and not out.requires_grad


def test_depthwise_separable_conv_matches_two_plain_convs():
    torch.manual_seed(0)
    conv = DepthwiseSeparableConv2d(
        4, 6, kernel_size=3, padding=2, dilation=2, norm1="BN", activation1=F.relu, norm2=""
    ).eval()
    assert set(conv.state_dict()) == {
        "depthwise.weight",
        "depthwise.norm.weight",
        "depthwise.norm.bias",
        "depthwise.norm.running_mean",
        "depthwise.norm.running_var",
        "depthwise.norm.num_batches_tracked",
        "pointwise.weight",
        "pointwise.bias",
    }
    assert conv.depthwise.groups == 4 and conv.depthwise.weight.shape == (4, 1, 3, 3)
    # c2_msra_fill: zero bias.
    assert torch.count_nonzero(conv.pointwise.bias) == 0
    x = torch.randn(2, 4, 5, 7)
    hidden = F.relu(F.conv2d(x, conv.depthwise.weight, padding=2, dilation=2, groups=4))
    expected = F.conv2d(hidden, conv.pointwise.weight, conv.pointwise.bias)
    torch.testing.assert_close(conv(x), expected)
    assert conv(torch.zeros(0, 4, 5, 7)).shape == (0, 6, 5, 7)
