"""Tests of Matrix NMS, point NMS and mask NMS against straightforward loop computations."""

from __future__ import annotations

import math

import pytest
import torch

from segtron.projects.solov2 import mask_nms, matrix_nms, point_nms


def _random_masks(n: int, h: int = 30, w: int = 40, seed: int = 0) -> torch.Tensor:
    """Overlapping random rectangles, so that many pairs have a large IoU."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    for k in range(n):
        y0, x0 = torch.randint(0, h // 2, (2,), generator=g).tolist()
        dy, dx = torch.randint(4, h // 2, (2,), generator=g).tolist()
        masks[k, y0 : y0 + dy, x0 + 3 : x0 + 3 + dx] = True
    return masks


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    inter = (a & b).sum().item()
    return inter / ((a | b).sum().item())


def _reference_decay(labels, masks, scores, sigma: float, kernel: str) -> list[float]:
    """Matrix NMS written pair by pair: for j, the smallest decay over higher-scored i of its
    class, where the decay compensates i's own largest IoU with a higher-scored mask."""
    n = len(scores)
    iou = [[_iou(masks[i], masks[j]) for j in range(n)] for i in range(n)]
    comp = [
        max([iou[k][i] for k in range(i) if labels[k] == labels[i]], default=0.0) for i in range(n)
    ]
    out = []
    for j in range(n):
        decay = 1.0
        for i in range(j):
            if labels[i] != labels[j]:
                continue
            if kernel == "gaussian":
                d = math.exp(-sigma * iou[i][j] ** 2) / math.exp(-sigma * comp[i] ** 2)
            else:
                d = (1 - iou[i][j]) / (1 - comp[i])
            decay = min(decay, d)
        out.append(scores[j] * decay)
    return out


@pytest.mark.parametrize("kernel,sigma", [("gaussian", 2.0), ("gaussian", 0.5), ("linear", 2.0)])
def test_matrix_nms_matches_loop_reference(kernel: str, sigma: float) -> None:
    n = 40
    masks = _random_masks(n)
    labels = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(1))
    scores = torch.rand(n, generator=torch.Generator().manual_seed(2)).sort(descending=True)[0]
    areas = masks.flatten(1).sum(1).float()
    got = matrix_nms(labels, masks, areas, scores, sigma=sigma, kernel=kernel)
    want = _reference_decay(labels.tolist(), masks, scores.tolist(), sigma, kernel)
    assert got.tolist() == pytest.approx(want, rel=1e-5, abs=1e-6)
    # Some scores are decayed, some (first of their class, or no overlap) are not.
    assert (got < scores - 1e-6).any() and (got == scores).any()
    assert got[0] == scores[0]


def test_matrix_nms_duplicates_and_classes() -> None:
    masks = torch.zeros(3, 10, 10, dtype=torch.bool)
    masks[:, 2:8, 2:8] = True  # three identical masks
    areas = masks.flatten(1).sum(1).float()
    scores = torch.tensor([0.9, 0.8, 0.7])
    same = matrix_nms(torch.tensor([0, 0, 1]), masks, areas, scores, sigma=2.0)
    # IoU 1 with a same-class higher-scored mask: decay exp(-2); other class untouched.
    assert same.tolist() == pytest.approx([0.9, 0.8 * math.exp(-2.0), 0.7])


def test_matrix_nms_empty_and_bad_kernel() -> None:
    empty = matrix_nms(
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, 5, 5, dtype=torch.bool),
        torch.zeros(0),
        torch.zeros(0),
    )
    assert empty.shape == (0,)
    with pytest.raises(ValueError, match="NMS_KERNEL"):
        matrix_nms(
            torch.zeros(1),
            torch.ones(1, 2, 2, dtype=torch.bool),
            torch.ones(1),
            torch.ones(1),
            kernel="box",
        )


def test_point_nms_keeps_2x2_window_maxima() -> None:
    heat = torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(0))
    out = point_nms(heat)
    for idx in torch.cartesian_prod(*(torch.arange(s) for s in heat.shape)).tolist():
        n, c, y, x = idx
        window = heat[n, c, max(y - 1, 0) : y + 1, max(x - 1, 0) : x + 1]
        keep = heat[n, c, y, x] == window.max()
        assert out[n, c, y, x] == (heat[n, c, y, x] if keep else 0)


def test_mask_nms_greedy() -> None:
    masks = _random_masks(25, seed=3)
    labels = torch.randint(0, 2, (25,), generator=torch.Generator().manual_seed(4))
    areas = masks.flatten(1).sum(1).float()
    keep = mask_nms(labels, masks, areas, torch.linspace(1, 0, 25), 0.3)
    kept: list[int] = []
    for j in range(25):
        if all(labels[i] != labels[j] or _iou(masks[i], masks[j]) <= 0.3 for i in kept):
            kept.append(j)
    assert keep.nonzero().flatten().tolist() == kept
