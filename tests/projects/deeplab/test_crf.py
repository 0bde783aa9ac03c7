"""Tests of the fully connected CRF (DenseCRF) and its permutohedral lattice."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from segtron.projects.deeplab import DenseCRF
from segtron.projects.deeplab.permutohedral import PermutohedralLattice

METHODS = ["exact", "permutohedral"]


def _scene(height: int = 24, width: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """An RGB image of three flat, slightly noisy regions and its (H, W) labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(height, width, dtype=torch.long)
    labels[height // 2 :] = 1
    labels[height // 4 : 3 * height // 4, width // 4 : width // 2] = 2
    colours = torch.tensor([[200.0, 90.0, 40.0], [40.0, 140.0, 220.0], [90.0, 200.0, 90.0]])
    image = colours[labels].permute(2, 0, 1) + 3 * torch.randn(3, height, width, generator=g)
    return image, labels


def _one_hot_scores(labels: torch.Tensor, margin: float, num_classes: int = 3) -> torch.Tensor:
    return margin * F.one_hot(labels, num_classes).permute(2, 0, 1).float()


def test_zero_iterations_is_softmax_of_unary():
    image, labels = _scene()
    scores = torch.randn(3, *labels.shape)
    q = DenseCRF(num_iterations=0)(scores, image)
    torch.testing.assert_close(q, torch.softmax(scores, dim=0))


@pytest.mark.parametrize("method", METHODS)
def test_keeps_a_confident_consistent_map(method):
    image, labels = _scene()
    q = DenseCRF(method=method)(_one_hot_scores(labels, 5.0), image)
    assert torch.equal(q.argmax(0), labels)
    torch.testing.assert_close(q.sum(0), torch.ones(labels.shape))
    # Agreement between unary and image makes the labels more certain, not less.
    assert (q.max(0).values >= torch.softmax(_one_hot_scores(labels, 5.0), 0).max(0).values).all()


@pytest.mark.parametrize("method", METHODS)
def test_smooths_an_isolated_pixel_of_the_surrounding_colour(method):
    image, labels = _scene()
    scores = _one_hot_scores(labels, 3.0)
    # Pixel (4, 20) lies in region 0 and has its colour, but its unary prefers class 1.
    scores[:, 4, 20] = torch.tensor([0.0, 2.0, 0.0])
    assert scores.argmax(0)[4, 20] == 1
    q = DenseCRF(method=method)(scores, image)
    assert torch.equal(q.argmax(0), labels)


@pytest.mark.parametrize("method", METHODS)
def test_boundary_follows_the_colour_edge(method):
    # Left colour on columns < 20, right colour on columns >= 20. The unary is confident
    # (class 0 left, class 1 right) except on columns 4..27, where it is uninformative: a
    # colour-blind smoothing would put the boundary near the band's middle (column 16).
    height, width, edge = 16, 32, 20
    image = torch.empty(3, height, width)
    image[:, :, :edge] = torch.tensor([220.0, 40.0, 40.0])[:, None, None]
    image[:, :, edge:] = torch.tensor([40.0, 40.0, 220.0])[:, None, None]
    truth = torch.zeros(height, width, dtype=torch.long)
    truth[:, edge:] = 1
    scores = _one_hot_scores(truth, 4.0, num_classes=2)
    scores[:, :, 4:28] = 0.0
    colour_aware = DenseCRF(method=method, bi_xy_std=20.0, bi_rgb_std=10.0, pos_w=1.0)
    assert torch.equal(colour_aware(scores, image).argmax(0), truth)
    colour_blind = DenseCRF(method=method, bi_xy_std=20.0, bi_rgb_std=1e4, pos_w=1.0)
    assert not torch.equal(colour_blind(scores, image).argmax(0), truth)


@pytest.mark.parametrize("params", [{}, {"bi_xy_std": 67.0, "bi_rgb_std": 3.0, "pos_xy_std": 1.0}])
def test_permutohedral_agrees_with_exact(params):
    image, labels = _scene(seed=1)
    g = torch.Generator().manual_seed(1)
    scores = _one_hot_scores(labels, 1.0) + torch.randn(3, *labels.shape, generator=g)
    q_exact = DenseCRF(method="exact", **params)(scores, image)
    q_approx = DenseCRF(method="permutohedral", **params)(scores, image)
    assert (q_exact - q_approx).abs().mean() < 0.01
    assert (q_exact.argmax(0) == q_approx.argmax(0)).float().mean() > 0.99
    # The CRF did something: the noisy unary disagrees with the labels much more often.
    assert (scores.argmax(0) != labels).float().mean() > 0.2
    assert (q_exact.argmax(0) != labels).float().mean() < 0.05


def test_lattice_filter_approximates_the_gaussian():
    image, _ = _scene(seed=2)
    height, width = image.shape[1:]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    positions = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1).float()
    features = torch.cat([positions / 10.0, image.reshape(3, -1).T / 20.0], dim=1)
    values = torch.rand(features.shape[0], 2, generator=torch.Generator().manual_seed(0))
    lattice = PermutohedralLattice(features)
    approx = lattice.filter(values) / lattice.filter(torch.ones(features.shape[0], 1))
    kernel = torch.exp(-0.5 * torch.cdist(features, features) ** 2)
    exact = kernel @ values / kernel.sum(dim=1, keepdim=True)
    assert (approx - exact).abs().mean() < 0.01


def test_auto_method_and_batches():
    crf = DenseCRF(exact_max_pixels=24 * 32)
    assert crf.resolved_method(24 * 32) == "exact"
    assert crf.resolved_method(24 * 32 + 1) == "permutohedral"
    image0, labels0 = _scene(seed=3)
    image1, labels1 = _scene(seed=4)
    scores = torch.stack([_one_hot_scores(labels0, 1.0), _one_hot_scores(labels1, -1.0)])
    q = crf(scores, torch.stack([image0, image1]))
    torch.testing.assert_close(q[1], crf(scores[1], image1))


def test_bad_inputs_raise_clear_errors():
    image, labels = _scene()
    with pytest.raises(ValueError, match="RGB image of shape"):
        DenseCRF()(torch.zeros(3, *labels.shape), image[:, :-1])
    with pytest.raises(ValueError, match="method"):
        DenseCRF(method="grid")
    with pytest.raises(ValueError, match="standard deviations"):
        DenseCRF(bi_rgb_std=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    image, labels = _scene()
    scores = _one_hot_scores(labels, 1.0) + torch.randn(3, *labels.shape)
    for method in METHODS:
        crf = DenseCRF(method=method)
        q = crf(scores.cuda(), image.cuda())
        torch.testing.assert_close(q.cpu(), crf(scores, image), atol=1e-4, rtol=1e-4)
