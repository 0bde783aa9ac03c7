"""The :class:`Matcher`: assigns each prediction (anchor or proposal) to a ground-truth element.

Follows ``detectron2.modeling.matcher``: the same constructor, call signature and labelling rules,
including the optional "low-quality" matches of Faster R-CNN that keep, for every ground truth,
the predictions with its highest IoU even when that IoU is under the foreground threshold.
"""

from __future__ import annotations

import torch

from segtron.layers import nonzero_tuple

__all__ = ["Matcher"]


class Matcher:
    """Matches each prediction to at most one ground-truth element by a quality matrix (IoU).

    Every prediction gets the ground truth it overlaps most, plus a label from the interval of
    ``thresholds`` its best quality falls into. With ``thresholds=[0.3, 0.7]`` and
    ``labels=[0, -1, 1]``: quality in ``[0, 0.3)`` is labelled 0 (negative), ``[0.3, 0.7)`` -1
    (ignored) and ``[0.7, inf)`` 1 (positive).
    """

    def __init__(
        self,
        thresholds: list[float],
        labels: list[int],
        allow_low_quality_matches: bool = False,
    ) -> None:
        """Create a matcher.

        Args:
            thresholds: Sorted interval boundaries of the match quality; ``-inf`` and ``inf`` are
                added at the ends, so ``N`` thresholds make ``N + 1`` intervals.
            labels: One label per interval, each in ``{-1, 0, 1}`` (ignore, negative, positive).
            allow_low_quality_matches: If True, also label as positive (1) the predictions that
                are the best match of some ground truth, whatever their quality (see
                :meth:`set_low_quality_matches_`).

        Raises:
            ValueError: if the first threshold is not positive, the thresholds are unsorted,
                the labels invalid, or their counts disagree.
        """
        thresholds = list(thresholds)
        if thresholds and thresholds[0] <= 0:
            raise ValueError(f"Matcher thresholds must be positive, got {thresholds}.")
        thresholds.insert(0, -float("inf"))
        thresholds.append(float("inf"))
        if any(low > high for low, high in zip(thresholds[:-1], thresholds[1:], strict=True)):
            raise ValueError(f"Matcher thresholds must be sorted, got {thresholds[1:-1]}.")
        if any(label not in (-1, 0, 1) for label in labels):
            raise ValueError(f"Matcher labels must be in {{-1, 0, 1}}, got {labels}.")
        if len(labels) != len(thresholds) - 1:
            raise ValueError(
                f"Matcher needs {len(thresholds) - 1} labels for {len(thresholds) - 2} "
                f"thresholds, got {len(labels)}."
            )
        self.thresholds = thresholds
        self.labels = list(labels)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Match the predictions (columns) to the ground-truth elements (rows).

        Args:
            match_quality_matrix: ``M x N`` tensor of pairwise quality (e.g. IoU) between ``M``
                ground-truth elements and ``N`` predictions.

        Returns:
            ``(matches, match_labels)``: ``matches`` is an int64 tensor of length ``N`` with the
            index in ``[0, M)`` of each prediction's matched ground truth; ``match_labels`` an
            int8 tensor of length ``N`` with its label. With no ground truth (``M == 0``) every
            prediction matches index 0 and gets the label of the lowest interval.

        Raises:
            ValueError: if the matrix is not 2-D or has a negative entry.
        """
        if match_quality_matrix.dim() != 2:
            raise ValueError(
                f"match_quality_matrix must be 2-D, got shape {tuple(match_quality_matrix.shape)}."
            )
        num_predictions = match_quality_matrix.size(1)
        device = match_quality_matrix.device
        if match_quality_matrix.numel() == 0:
            matches = torch.zeros(num_predictions, dtype=torch.int64, device=device)
            match_labels = torch.full(
                (num_predictions,), self.labels[0], dtype=torch.int8, device=device
            )
            return matches, match_labels
        if not torch.all(match_quality_matrix >= 0):
            raise ValueError("match_quality_matrix must be non-negative.")

        matched_vals, matches = match_quality_matrix.max(dim=0)
        match_labels = matches.new_full(matches.size(), 1, dtype=torch.int8)
        for label, low, high in zip(
            self.labels, self.thresholds[:-1], self.thresholds[1:], strict=True
        ):
            in_interval = (matched_vals >= low) & (matched_vals < high)
            match_labels[in_interval] = label

        if self.allow_low_quality_matches:
            self.set_low_quality_matches_(match_labels, match_quality_matrix)
        return matches, match_labels

    def set_low_quality_matches_(
        self, match_labels: torch.Tensor, match_quality_matrix: torch.Tensor
    ) -> None:
        """Label as positive the best predictions of each ground truth, in place.

        For each ground truth, every prediction whose quality equals that ground truth's highest
        quality (ties included) gets label 1, as in Faster R-CNN (Sec. 3.1.2). The matched
        index of such a prediction is left unchanged: it stays the ground truth it overlaps most.

        Args:
            match_labels: Labels from :meth:`__call__`, modified in place.
            match_quality_matrix: The ``M x N`` quality matrix.
        """
        highest_quality_per_gt, _ = match_quality_matrix.max(dim=1)
        _, pred_inds = nonzero_tuple(match_quality_matrix == highest_quality_per_gt[:, None])
        match_labels[pred_inds] = 1
