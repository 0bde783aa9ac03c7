"""Tests for segtron.layers.deform_conv against plain convolutions."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segtron.layers import DeformConv, ModulatedDeformConv


def _offsets(x_out: torch.Tensor, taps: int, dy: float = 0.0, dx: float = 0.0, groups: int = 1):
    n, _, h, w = x_out.shape
    offset = torch.empty(n, groups * taps, 2, h, w)
    offset[:, :, 0] = dy
    offset[:, :, 1] = dx
    return offset.view(n, groups * taps * 2, h, w)


def test_deform_conv_zero_offset_equals_conv():
    torch.manual_seed(0)
    conv = DeformConv(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, deformable_groups=2)
    x = torch.randn(2, 4, 7, 9)
    expected = F.conv2d(x, conv.weight, stride=2, padding=2, dilation=2, groups=2)
    torch.testing.assert_close(conv(x, _offsets(expected, 9, groups=2)), expected)
    assert set(conv.state_dict()) == {"weight"}
    assert conv.bias is None


def test_deform_conv_integer_offset_shifts_sampling():
    torch.manual_seed(1)
    conv = DeformConv(3, 5, 3, padding=1)
    x = torch.randn(1, 3, 6, 5)
    # Every tap sampled one pixel lower and two to the right (zeros outside the image): a
    # valid conv over a window of the zero-padded input moved by (1, 2).
    padded = F.pad(x, (3, 3, 3, 3))
    expected = F.conv2d(padded[:, :, 3 : 3 + 6 + 2, 4 : 4 + 5 + 2], conv.weight)
    torch.testing.assert_close(conv(x, _offsets(expected, 9, dy=1.0, dx=2.0)), expected)


def test_deform_conv_norm_activation_bias_and_repr():
    conv = DeformConv(2, 2, 1, bias=True, norm=nn.BatchNorm2d(2), activation=nn.ReLU())
    assert set(conv.state_dict()) >= {"weight", "bias", "norm.weight", "norm.running_var"}
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1).expand(2, 2, 1, 1))
        conv.bias.copy_(torch.tensor([0.5, 0.5]))
    conv.eval()
    x = torch.ones(1, 2, 2, 3)
    out = conv(x, torch.zeros(1, 2, 2, 3))
    eps = conv.norm.eps
    torch.testing.assert_close(out[0, 0], torch.full((2, 3), 2.5 / (1 + eps) ** 0.5))
    torch.testing.assert_close(out[0, 1], torch.zeros(2, 3))
    assert conv.extra_repr() == (
        "in_channels=2, out_channels=2, kernel_size=(1, 1), stride=(1, 1), "
        "padding=(0, 0), dilation=(1, 1), groups=1, deformable_groups=1, bias=True"
    )
    assert "(norm): BatchNorm2d" in repr(conv)


def test_modulated_deform_conv_mask_scales_taps():
    torch.manual_seed(2)
    conv = ModulatedDeformConv(3, 4, (3, 3), padding=1)
    assert set(conv.state_dict()) == {"weight", "bias"}
    with torch.no_grad():
        conv.bias.uniform_()
    x = torch.randn(2, 3, 5, 4)
    plain = F.conv2d(x, conv.weight, padding=1)
    offset = _offsets(plain, 9)
    ones = torch.ones(2, 9, 5, 4)
    torch.testing.assert_close(conv(x, offset, ones), plain + conv.bias.view(1, -1, 1, 1))
    half = conv(x, offset, ones * 0.5)
    torch.testing.assert_close(half, 0.5 * plain + conv.bias.view(1, -1, 1, 1))
    # Masking out all taps but the centre gives a 1x1 conv with the centre weights.
    centre_only = torch.zeros(2, 9, 5, 4)
    centre_only[:, 4] = 1
    expected = F.conv2d(x, conv.weight[:, :, 1:2, 1:2], conv.bias)
    torch.testing.assert_close(conv(x, offset, centre_only), expected)
    assert "bias=True" in repr(conv)


def test_deform_conv_gradients_flow():
    conv = ModulatedDeformConv(2, 2, 3, padding=1)
    x = torch.randn(1, 2, 4, 5, requires_grad=True)
    offset = torch.rand(1, 18, 4, 5, requires_grad=True)
    mask = torch.rand(1, 9, 4, 5, requires_grad=True)
    conv(x, offset, mask).sum().backward()
    for t in (x, offset, mask, conv.weight, conv.bias):
        assert t.grad is not None and torch.isfinite(t.grad).all()


def test_deform_conv_empty_inputs():
    conv = DeformConv(2, 3, 3, stride=2, padding=1)
    x = torch.zeros(0, 2, 7, 5, requires_grad=True)
    out = conv(x, torch.zeros(0, 18, 4, 3))
    assert out.shape == (0, 3, 4, 3)
    out.sum().backward()
    mconv = ModulatedDeformConv(2, 3, 3, padding=1)
    out = mconv(torch.zeros(2, 2, 0, 5), torch.zeros(2, 18, 0, 5), torch.zeros(2, 9, 0, 5))
    assert out.shape == (2, 3, 0, 5)


def test_deform_conv_rejects_mismatched_offsets():
    conv = DeformConv(4, 4, 3, padding=1, deformable_groups=2)
    with pytest.raises(ValueError, match=r"offset of shape \(N, 36"):
        conv(torch.randn(1, 4, 5, 5), torch.zeros(1, 18, 5, 5))
    mconv = ModulatedDeformConv(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match="mask"):
        mconv(torch.randn(1, 4, 5, 5), torch.zeros(1, 18, 5, 5), torch.zeros(1, 18, 5, 5))
    with pytest.raises(ValueError, match="divisible by groups"):
        DeformConv(3, 4, 3, groups=2)
