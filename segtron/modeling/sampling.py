"""Random sampling of positive and negative labels for training heads (RPN, ROI heads).

Follows ``detectron2.modeling.sampling``.
"""

from __future__ import annotations

import torch

from segtron.layers import nonzero_tuple

__all__ = ["subsample_labels"]


def subsample_labels(
    labels: torch.Tensor, num_samples: int, positive_fraction: float, bg_label: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly choose at most ``num_samples`` elements, positives first.

    At most ``int(num_samples * positive_fraction)`` positives are taken; the rest of the budget
    goes to negatives. If there are too few positives, more negatives fill the gap; if there
    are too few of both, fewer than ``num_samples`` come back.

    Args:
        labels: ``(N,)`` labels: -1 is ignored, ``bg_label`` is negative, any other value
            (``>= 0``) is positive.
        num_samples: The total number of elements to sample.
        positive_fraction: Largest share of positives among the samples.
        bg_label: The label of negatives (background).

    Returns:
        ``(pos_idx, neg_idx)``: 1-D int64 indices of the sampled positives and negatives, in
        random order; together at most ``num_samples`` long.
    """
    positive = nonzero_tuple((labels != -1) & (labels != bg_label))[0]
    negative = nonzero_tuple(labels == bg_label)[0]

    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)

    perm_pos = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
    perm_neg = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
    return positive[perm_pos], negative[perm_neg]
