"""Samplers for training (infinite, sharded by rank) and inference (finite, evenly sharded).

Mirrors ``detectron2.data.samplers``. segtron addition: the training samplers take
``offset`` (the number of indices of this rank's stream to skip) so that a resumed run sees
exactly the data order it would have seen without the interruption.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data.sampler import Sampler

from segtron.utils import comm

__all__ = ["InferenceSampler", "RepeatFactorTrainingSampler", "TrainingSampler"]


def _check_offset(offset: int) -> int:
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative int, got {offset!r}.")
    return offset


class TrainingSampler(Sampler):
    """An infinite stream of indices in [0, size), reshuffled each epoch, sharded by rank.

    All ranks generate the same global stream (same seed); rank r takes its elements r,
    r + world_size, r + 2 * world_size, ... so the ranks' streams are disjoint and together
    cover the global stream.
    """

    def __init__(
        self, size: int, shuffle: bool = True, seed: int | None = None, *, offset: int = 0
    ) -> None:
        """Create the sampler.

        Args:
            size: number of dataset elements.
            shuffle: shuffle the indices of each epoch.
            seed: seed of the shuffle; it must be the same on all ranks. None draws one shared
                random seed (`comm.shared_random_seed`).
            offset: segtron addition: skip the first `offset` indices of this rank's stream,
                e.g. ``iteration * per_rank_batch_size`` when resuming a run.
        """
        if not isinstance(size, int):
            raise TypeError(f"TrainingSampler(size=) expects an int, got {type(size)}.")
        if size <= 0:
            raise ValueError(f"TrainingSampler(size=) expects a positive int, got {size}.")
        self._size = size
        self._shuffle = shuffle
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()
        self._offset = _check_offset(offset)

    def __iter__(self) -> Iterator[int]:
        start = self._rank + self._offset * self._world_size
        yield from itertools.islice(self._infinite_indices(), start, None, self._world_size)

    def _get_epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        """The indices of one epoch before shuffling."""
        return torch.arange(self._size)

    def _infinite_indices(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self._seed)
        while True:
            indices = self._get_epoch_indices(generator)
            if self._shuffle:
                indices = indices[torch.randperm(len(indices), generator=generator)]
            yield from indices.tolist()


class RepeatFactorTrainingSampler(TrainingSampler):
    """Like `TrainingSampler`, but each image appears a (stochastically rounded) number of
    times per epoch given by its repeat factor (LVIS-style repeat factor sampling).
    """

    def __init__(
        self,
        repeat_factors: torch.Tensor,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        offset: int = 0,
    ) -> None:
        """Create the sampler.

        Args:
            repeat_factors: one float per image; a factor of 2.3 repeats the image twice, and
                a third time with probability 0.3, in each epoch.
            shuffle: shuffle the indices of each epoch.
            seed: seed shared by all ranks; None draws one (`comm.shared_random_seed`).
            offset: segtron addition: number of indices of this rank's stream to skip.
        """
        repeat_factors = torch.as_tensor(repeat_factors, dtype=torch.float32)
        super().__init__(len(repeat_factors), shuffle, seed, offset=offset)
        self._int_part = torch.trunc(repeat_factors)
        self._frac_part = repeat_factors - self._int_part

    @staticmethod
    def repeat_factors_from_category_frequency(
        dataset_dicts: list[dict[str, Any]], repeat_thresh: float, sqrt: bool = True
    ) -> torch.Tensor:
        """Per-image repeat factors from category frequency.

        With f(c) the fraction of images containing category c, the category's factor is
        ``max(1, sqrt(repeat_thresh / f(c)))`` (without the square root when `sqrt` is False)
        and an image's factor is the largest factor of its categories (1 for no annotations).

        Args:
            dataset_dicts: dicts with "annotations" holding "category_id".
            repeat_thresh: frequency below which categories are over-sampled.
            sqrt: take the square root of the ratio.

        Returns:
            A float32 tensor with one factor per image.
        """
        image_count: dict[int, int] = defaultdict(int)
        for dataset_dict in dataset_dicts:
            for cat_id in {ann["category_id"] for ann in dataset_dict["annotations"]}:
                image_count[cat_id] += 1
        num_images = len(dataset_dicts)
        category_rep = {}
        for cat_id, count in image_count.items():
            ratio = repeat_thresh / (count / num_images)
            category_rep[cat_id] = max(1.0, math.sqrt(ratio) if sqrt else ratio)
        factors = [
            max((category_rep[ann["category_id"]] for ann in d["annotations"]), default=1.0)
            for d in dataset_dicts
        ]
        return torch.tensor(factors, dtype=torch.float32)

    def _get_epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        rands = torch.rand(len(self._frac_part), generator=generator)
        repeats = (self._int_part + (rands < self._frac_part).float()).long()
        return torch.repeat_interleave(torch.arange(len(repeats)), repeats)


class InferenceSampler(Sampler):
    """Each index in [0, size) exactly once, split into contiguous shards, one per rank.

    Shard sizes differ by at most one (the first ``size % world_size`` ranks get one more).
    """

    def __init__(self, size: int) -> None:
        """Create the sampler.

        Args:
            size: number of dataset elements.
        """
        if size < 0:
            raise ValueError(f"InferenceSampler(size=) must be >= 0, got {size}.")
        self._size = size
        self._local_indices = self._get_local_indices(size, comm.get_world_size(), comm.get_rank())

    @staticmethod
    def _get_local_indices(total_size: int, world_size: int, rank: int) -> range:
        base, extra = divmod(total_size, world_size)
        begin = rank * base + min(rank, extra)
        return range(begin, begin + base + (1 if rank < extra else 0))

    def __iter__(self) -> Iterator[int]:
        yield from self._local_indices

    def __len__(self) -> int:
        return len(self._local_indices)
