"""Tests of DeepLabCE (hard pixel mining) and the choice of loss by LOSS_TYPE."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segtron.projects.deeplab import DeepLabCE, build_sem_seg_loss

IGNORE = 255


def _case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits of 2 classes on a 2x5 image; returns logits, labels and the per-pixel losses.

    The per-pixel losses are -log softmax computed by hand: pixel (r, c) scores class 1
    higher by d = r * 5 + c - 4, and its label is 0, so its loss is log(1 + exp(d)).
    The last pixel is ignored.
    """
    d = torch.arange(10, dtype=torch.float32).reshape(1, 2, 5) - 4
    logits = torch.stack([torch.zeros_like(d), d], dim=1)  # (1, 2, 2, 5)
    labels = torch.zeros(1, 2, 5, dtype=torch.long)
    labels[0, 1, 4] = IGNORE
    losses = torch.log1p(torch.exp(d))
    losses[0, 1, 4] = 0.0
    return logits, labels, losses


def test_top_k_takes_the_mean_of_the_hardest_pixels() -> None:
    logits, labels, losses = _case()
    # 30% of 10 pixels: the 3 largest valid losses are those of d = 4, 3, 2 (d = 5 is ignored).
    expected = (math.log1p(math.exp(4)) + math.log1p(math.exp(3)) + math.log1p(math.exp(2))) / 3
    loss = DeepLabCE(ignore_label=IGNORE, top_k_percent_pixels=0.3)(logits, labels)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # The hardest pixel overall is the ignored one: a loss without ignore picks it first.
    unignored = DeepLabCE(top_k_percent_pixels=0.1)(logits, torch.zeros_like(labels))
    assert unignored.item() == pytest.approx(math.log1p(math.exp(5)), rel=1e-5)


def test_full_fraction_averages_over_every_pixel_as_detectron2() -> None:
    logits, labels, losses = _case()
    loss = DeepLabCE(ignore_label=IGNORE, top_k_percent_pixels=1.0)(logits, labels)
    # Ignored pixels count in the denominator (Detectron2's DeepLabCE), unlike F.cross_entropy.
    assert loss.item() == pytest.approx(losses.sum().item() / 10, rel=1e-5)
    plain = F.cross_entropy(logits, labels, ignore_index=IGNORE)
    assert plain.item() == pytest.approx(losses.sum().item() / 9, rel=1e-5)


def test_per_pixel_weights_apply_before_the_selection() -> None:
    logits, labels, losses = _case()
    weights = torch.ones(1, 2, 5)
    weights[0, 0, 0] = 1000.0  # d = -4: the easiest pixel becomes the hardest
    loss = DeepLabCE(ignore_label=IGNORE, top_k_percent_pixels=0.1)(logits, labels, weights)
    assert loss.item() == pytest.approx(1000 * math.log1p(math.exp(-4)), rel=1e-5)
    full = DeepLabCE(ignore_label=IGNORE)(logits, labels, weights)
    assert full.item() == pytest.approx((losses * weights).sum().item() / 10, rel=1e-5)


def test_class_weights_and_gradient() -> None:
    logits, labels, _ = _case()
    logits.requires_grad_(True)
    weight = torch.tensor([2.0, 1.0])
    loss = DeepLabCE(ignore_label=IGNORE, top_k_percent_pixels=0.5, weight=weight)(logits, labels)
    plain = DeepLabCE(ignore_label=IGNORE, top_k_percent_pixels=0.5)(logits, labels)
    assert loss.item() == pytest.approx(2 * plain.item(), rel=1e-5)  # every label is class 0
    loss.backward()
    touched = logits.grad.abs().sum(dim=1)[0]
    # Only the 5 hardest pixels (d = 0..4) receive gradient.
    assert (touched > 0).flatten().tolist() == [False] * 4 + [True] * 5 + [False]


def test_tiny_inputs_keep_one_pixel_and_all_ignored_gives_zero() -> None:
    logits = torch.tensor([[[[0.0, 3.0]], [[1.0, 0.0]]]])  # (1, 2, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    loss = DeepLabCE(top_k_percent_pixels=0.2)(logits, labels)  # 0.2 * 2 pixels rounds to 0
    assert loss.item() == pytest.approx(math.log1p(math.exp(3)), rel=1e-5)
    ignored = DeepLabCE(ignore_label=IGNORE, top_k_percent_pixels=0.2)(
        logits, torch.full_like(labels, IGNORE)
    )
    assert ignored.item() == 0.0


def test_invalid_fraction_is_rejected() -> None:
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError, match="top_k_percent_pixels"):
            DeepLabCE(top_k_percent_pixels=fraction)


def test_build_sem_seg_loss() -> None:
    ce = build_sem_seg_loss("cross_entropy", IGNORE)
    assert isinstance(ce, nn.CrossEntropyLoss) and ce.ignore_index == IGNORE
    mining = build_sem_seg_loss("hard_pixel_mining", IGNORE)
    assert isinstance(mining, DeepLabCE)
    assert (mining.top_k_percent_pixels, mining.ignore_label) == (0.2, IGNORE)
    with pytest.raises(ValueError, match="LOSS_TYPE.*'focal'"):
        build_sem_seg_loss("focal", IGNORE)
