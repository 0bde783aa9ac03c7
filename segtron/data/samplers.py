"""Samplers for training (infinite, sharded by rank) and inference (finite, evenly sharded).

Mirrors ``detectron2.data.samplers``. segtron additions, so that a resumed run sees exactly the
data it would have seen without the interruption: the training samplers take ``offset`` (the
number of indices of this rank's stream to skip) and have a ``state_dict`` (their seed), and
`TrainingBatchSampler` batches a training stream (optionally grouped by aspect ratio), can skip
the batches of the iterations already run, and gives each element its own random seed.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data.sampler import Sampler

from segtron.utils import comm

__all__ = [
    "InferenceSampler",
    "RepeatFactorTrainingSampler",
    "TrainingBatchSampler",
    "TrainingSampler",
]


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

    def state_dict(self) -> dict[str, int]:
        """The seed, which with the position in the stream fixes everything to come."""
        return {"seed": self._seed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Adopt a saved seed (before iterating), to replay a checkpointed run's stream."""
        self._seed = int(state_dict["seed"])

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


class TrainingBatchSampler(Sampler):
    """Batches of a training sampler's stream, resumable at any batch (segtron addition).

    Each batch is a list of ``(item_seed, index)`` pairs: `SeededDataset` seeds the random
    generators with ``item_seed`` before mapping element ``index``, so the augmentation of an
    element depends only on the run's seed and its position in the stream, neither on the
    number of workers nor on where a run was interrupted. With `aspect_ratios`, landscape
    (width > height) and portrait elements are batched separately, as Detectron2's
    ``AspectRatioGroupedDataset`` does after loading; here it is done on the indices, before
    loading, so skipping ``start_batch`` batches reads no image.
    """

    def __init__(
        self,
        sampler: Sampler,
        batch_size: int,
        aspect_ratios: list[float] | None = None,
        item_seed: int | None = None,
    ) -> None:
        """Create the batch sampler.

        Args:
            sampler: a (usually infinite) stream of indices of this rank.
            batch_size: elements per batch.
            aspect_ratios: width / height of each dataset element, to group batches by
                orientation; None batches the stream in order.
            item_seed: the run's seed of the per-element seeds, the same on all ranks (the
                rank is mixed in); None draws one shared random seed.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.sampler = sampler
        self.batch_size = batch_size
        self.aspect_ratios = aspect_ratios
        self.item_seed = int(comm.shared_random_seed() if item_seed is None else item_seed)
        self.start_batch = 0
        self._rank = comm.get_rank()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        buckets: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
        produced = 0
        for position, index in enumerate(self.sampler):
            portrait = self.aspect_ratios is not None and not self.aspect_ratios[index] > 1
            bucket = buckets[int(portrait)]
            bucket.append((position, int(index)))
            if len(bucket) < self.batch_size:
                continue
            batch = bucket[:]
            bucket.clear()
            produced += 1
            if produced > self.start_batch:
                yield [(self._element_seed(pos), idx) for pos, idx in batch]

    def _element_seed(self, position: int) -> int:
        sequence = np.random.SeedSequence([self.item_seed, self._rank, position])
        return int(sequence.generate_state(1)[0] % 2**31)

    def state_dict(self) -> dict[str, Any]:
        """The seeds of the index stream and of the elements."""
        state: dict[str, Any] = {"item_seed": self.item_seed}
        if hasattr(self.sampler, "state_dict"):
            state["sampler"] = self.sampler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any], start_batch: int) -> None:
        """Replay a saved stream from batch `start_batch` on (call before iterating).

        Args:
            state_dict: what `state_dict` returned.
            start_batch: the number of batches already consumed (the iterations run).
        """
        self.item_seed = int(state_dict["item_seed"])
        if "sampler" in state_dict and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state_dict["sampler"])
        self.start_batch = int(start_batch)


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
