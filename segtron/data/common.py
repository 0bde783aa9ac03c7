"""Dataset wrappers used by the loaders: lists, mapping, sampling and aspect-ratio grouping.

Mirrors ``detectron2.data.common``.
"""

from __future__ import annotations

import copy
import itertools
import logging
import pickle
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.utils.data as data
from torch.utils.data.sampler import Sampler

from segtron.utils.env import seed_all_rng

__all__ = [
    "AspectRatioGroupedDataset",
    "DatasetFromList",
    "MapDataset",
    "SeededDataset",
    "ToIterableDataset",
]

logger = logging.getLogger(__name__)


def _shard_iterator_dataloader_worker(iterable: Iterable[Any], chunk_size: int = 1) -> Iterator:
    """Within a DataLoader worker, yield only this worker's chunks of `iterable` (round robin)."""
    worker_info = data.get_worker_info()
    if worker_info is None or worker_info.num_workers == 1:
        yield from iterable
        return
    iterator = iter(iterable)
    chunks = iter(lambda: list(itertools.islice(iterator, chunk_size)), [])
    for chunk in itertools.islice(chunks, worker_info.id, None, worker_info.num_workers):
        yield from chunk


class _MapIterableDataset(data.IterableDataset):
    """Map an iterable dataset lazily, skipping elements mapped to None."""

    def __init__(self, dataset: data.IterableDataset, map_func: Callable[[Any], Any]) -> None:
        self._dataset = dataset
        self._map_func = map_func

    def __len__(self) -> int:
        return len(self._dataset)

    def __iter__(self) -> Iterator[Any]:
        for item in map(self._map_func, self._dataset):
            if item is not None:
                yield item


class MapDataset(data.Dataset):
    """Apply `map_func` to each element of a dataset.

    When `map_func` returns None (e.g. an image left without annotations after a crop), another
    index not yet tried for this element is drawn at random, and a warning is logged after 3
    failures in a row. Unlike Detectron2, which remembers failing indices across calls, the
    choice depends only on the global random state, so that it is reproducible per element
    (see `SeededDataset`) whatever the number of workers. For an iterable dataset the result is
    an iterable dataset that skips such elements.
    """

    def __new__(cls, dataset: Any, map_func: Callable[[Any], Any]) -> Any:
        """Return a `_MapIterableDataset` for iterable datasets, else a `MapDataset`."""
        if isinstance(dataset, data.IterableDataset):
            return _MapIterableDataset(dataset, map_func)
        return super().__new__(cls)

    def __init__(self, dataset: Any, map_func: Callable[[Any], Any]) -> None:
        """Create the dataset.

        Args:
            dataset: a map-style dataset (anything with __len__ and __getitem__).
            map_func: called on each element; may return None to skip it.
        """
        self._dataset = dataset
        self._map_func = map_func

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, idx: int) -> Any:
        rng: random.Random | None = None
        tried: set[int] = set()
        cur_idx = int(idx)
        while True:
            item = self._map_func(self._dataset[cur_idx])
            if item is not None:
                return item
            tried.add(cur_idx)
            if len(tried) >= len(self):
                raise RuntimeError(
                    "The mapper returned None for every element tried; no data can be produced."
                )
            if rng is None:
                # Drawn from the global generator only on failure: under `SeededDataset` the
                # fallback is then a function of the element's seed.
                rng = random.Random(random.getrandbits(64))
            cur_idx = rng.randrange(len(self))
            while cur_idx in tried:
                cur_idx = rng.randrange(len(self))
            if len(tried) >= 3:
                logger.warning(f"Failed to apply the mapper to index {idx} ({len(tried)} tries).")


class DatasetFromList(data.Dataset):
    """A dataset over a list of elements (usually dataset dicts).

    With `serialize`, the elements are pickled into one numpy buffer so that DataLoader
    workers share it without the copy-on-access growth of Python objects.
    """

    def __init__(self, lst: list[Any], copy: bool = True, serialize: bool = True) -> None:
        """Create the dataset.

        Args:
            lst: the elements.
            copy: return a deep copy of each element (ignored when serialized: unpickling
                always makes a fresh copy).
            serialize: store the elements pickled in one buffer.
        """
        self._copy = copy
        self._serialize = serialize
        if serialize:
            buffers = [
                np.frombuffer(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)
                for x in lst
            ]
            self._addr = np.cumsum(np.asarray([len(b) for b in buffers], dtype=np.int64))
            self._lst: Any = np.concatenate(buffers) if buffers else np.zeros(0, dtype=np.uint8)
            logger.info(f"Serialized {len(lst)} elements into {len(self._lst) / 1024**2:.2f} MiB.")
        else:
            self._lst = lst

    def __len__(self) -> int:
        return len(self._addr) if self._serialize else len(self._lst)

    def __getitem__(self, idx: int) -> Any:
        if self._serialize:
            start = 0 if idx == 0 else int(self._addr[idx - 1])
            end = int(self._addr[idx])
            return pickle.loads(memoryview(self._lst[start:end]))
        if self._copy:
            return copy.deepcopy(self._lst[idx])
        return self._lst[idx]


class ToIterableDataset(data.IterableDataset):
    """Turn a map-style dataset and a sampler into an iterable dataset.

    Inside a DataLoader with several workers the sampler's indices are split between workers in
    chunks of `shard_chunk_size`, so that each index is loaded once.
    """

    def __init__(
        self,
        dataset: data.Dataset,
        sampler: Sampler,
        shard_sampler: bool = True,
        shard_chunk_size: int = 1,
    ) -> None:
        """Create the dataset.

        Args:
            dataset: a map-style dataset.
            sampler: yields the indices to load (possibly infinitely).
            shard_sampler: split the indices between DataLoader workers.
            shard_chunk_size: number of consecutive indices each worker takes at a time.
        """
        if isinstance(dataset, data.IterableDataset):
            raise TypeError("ToIterableDataset needs a map-style dataset, got an iterable one.")
        if not isinstance(sampler, Sampler):
            raise TypeError(f"ToIterableDataset needs a torch Sampler, got {type(sampler)}.")
        self.dataset = dataset
        self.sampler = sampler
        self.shard_sampler = shard_sampler
        self.shard_chunk_size = shard_chunk_size

    def __iter__(self) -> Iterator[Any]:
        indices: Iterable[int] = self.sampler
        if self.shard_sampler:
            indices = _shard_iterator_dataloader_worker(self.sampler, self.shard_chunk_size)
        for idx in indices:
            yield self.dataset[idx]

    def __len__(self) -> int:
        return len(self.sampler)


class SeededDataset(data.Dataset):
    """Index a dataset with ``(seed, index)`` pairs, seeding every RNG with ``seed`` first.

    This makes random augmentations a function of the seed alone (segtron addition, used with
    `segtron.data.samplers.TrainingBatchSampler`), including the element a `MapDataset` falls
    back to when its mapper returns None. In the main process the random generators'
    states are restored afterwards, so loading does not disturb the training's own randomness.
    """

    def __init__(self, dataset: data.Dataset) -> None:
        """Wrap `dataset` (a map-style dataset, usually a `MapDataset`)."""
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, seed_and_index: tuple[int, int]) -> Any:
        seed, index = seed_and_index
        if data.get_worker_info() is not None:
            seed_all_rng(seed)
            return self.dataset[index]
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        try:
            seed_all_rng(seed)
            return self.dataset[index]
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])


class AspectRatioGroupedDataset(data.IterableDataset):
    """Group elements into batches of images that are all landscape or all portrait.

    Elements must be dicts with "width" and "height"; a batch is yielded (as a list) as soon as
    one of the two buckets holds `batch_size` elements.
    """

    def __init__(self, dataset: Iterable[dict[str, Any]], batch_size: int) -> None:
        """Create the dataset.

        Args:
            dataset: an iterable of dicts with "width" and "height".
            batch_size: size of each batch.
        """
        self.dataset = dataset
        self.batch_size = batch_size
        self._buckets: list[list[dict[str, Any]]] = [[], []]

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        for item in self.dataset:
            bucket = self._buckets[0 if item["width"] > item["height"] else 1]
            bucket.append(item)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                bucket.clear()
                yield batch
