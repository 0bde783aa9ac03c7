"""Tests for segtron.layers.wrappers and ShapeSpec."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segtron.layers import (
    Conv2d,
    ShapeSpec,
    cat,
    cross_entropy,
    move_device_like,
    nonzero_tuple,
    shapes_to_tensor,
)


def test_shape_spec_defaults_and_fields():
    spec = ShapeSpec(channels=256, stride=4)
    assert (spec.channels, spec.height, spec.width, spec.stride) == (256, None, None, 4)
    assert ShapeSpec() == ShapeSpec(None, None, None, None)


def test_conv2d_norm_then_activation_matches_manual():
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(5).eval()
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.5, 2)
    conv = Conv2d(
        3, 5, kernel_size=3, padding=1, stride=2, bias=False, norm=norm, activation=F.relu
    )
    conv.eval()
    x = torch.randn(2, 3, 7, 9)
    expected = F.relu(norm(F.conv2d(x, conv.weight, None, stride=2, padding=1)))
    torch.testing.assert_close(conv(x), expected)
    assert set(conv.state_dict()) == {
        "weight",
        "norm.weight",
        "norm.bias",
        "norm.running_mean",
        "norm.running_var",
        "norm.num_batches_tracked",
    }


def test_conv2d_plain_equals_torch_conv_and_handles_empty_batch():
    conv = Conv2d(2, 4, 3, padding=1)
    ref = nn.Conv2d(2, 4, 3, padding=1)
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(1, 2, 5, 6)
    torch.testing.assert_close(conv(x), ref(x))
    assert conv(torch.zeros(0, 2, 5, 6)).shape == (0, 4, 5, 6)


def test_conv2d_module_activation_has_no_parameters():
    conv = Conv2d(2, 2, 1, activation=nn.ReLU())
    assert set(conv.state_dict()) == {"weight", "bias"}
    with torch.no_grad():
        conv.weight.fill_(-1.0)
        conv.bias.zero_()
    assert torch.equal(conv(torch.ones(1, 2, 2, 2)), torch.zeros(1, 2, 2, 2))


def test_cat_single_tensor_is_not_copied():
    t = torch.randn(3, 2)
    assert cat([t]) is t
    torch.testing.assert_close(cat([t, t], dim=1), torch.cat([t, t], dim=1))
    with pytest.raises(TypeError):
        cat(t)


def test_cross_entropy_empty_is_zero_and_connected():
    logits = torch.zeros(0, 3, requires_grad=True)
    loss = cross_entropy(logits, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.shape == (0, 3)
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    expected = -torch.log_softmax(logits, 1)[0, 0]
    torch.testing.assert_close(cross_entropy(logits, torch.tensor([0])), expected)
    assert cross_entropy(logits, torch.tensor([0]), reduction="none").shape == (1,)


def test_nonzero_tuple():
    x = torch.tensor([[0, 1], [1, 0], [0, 0]])
    rows, cols = nonzero_tuple(x)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    (empty,) = nonzero_tuple(torch.zeros(0))
    assert empty.numel() == 0


def test_shapes_to_tensor_and_move_device_like():
    assert shapes_to_tensor([3, 5]).tolist() == [3, 5]
    src = torch.ones(2)
    assert move_device_like(src, torch.zeros(1)).device == src.device
