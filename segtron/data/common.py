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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.utils.data as data
from torch.utils.data.sampler import Sampler

from segtron.data.detection_utils import ImageReadError
from segtron.utils.env import seed_all_rng

__all__ = [
    "AspectRatioGroupedDataset",
    "DatasetFromList",
    "InferenceBatch",
    "InferenceBatchCollator",
    "MapDataset",
    "SeededDataset",
    "SkipUnreadableImages",
    "SkippedImage",
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


# Keys of a dataset dict that name the element's own files.
_OWN_FILE_KEYS = ("file_name", "sem_seg_file_name", "pan_seg_file_name")


@dataclass(frozen=True)
class SkippedImage:
    """Stands for a dataset element left out because one of its files cannot be read.

    Attributes:
        file_name: the unreadable file (the image, or its semantic / panoptic label PNG).
        reason: why it cannot be read.
    """

    file_name: str
    reason: str


def _own_files(dataset_dict: Any) -> list[str]:
    """The file paths a dataset dict names under `_OWN_FILE_KEYS`."""
    if not isinstance(dataset_dict, dict):
        return []
    return [str(dataset_dict[k]) for k in _OWN_FILE_KEYS if isinstance(dataset_dict.get(k), str)]


def _unreadable_own_file(err: OSError, own_files: list[str]) -> str | None:
    """The file among `own_files` that `err` is about (its ``filename``), else None."""
    if err.filename is None:
        return None
    return str(err.filename) if str(err.filename) in own_files else None


class SkipUnreadableImages:
    """Wrap a mapper so that an element whose own files cannot be read is skipped, not fatal.

    When the mapper raises `FileNotFoundError` or
    `~segtron.data.detection_utils.ImageReadError` whose ``filename`` is the element's image,
    ``sem_seg_file_name`` or ``pan_seg_file_name``, a WARNING names the file and the reason
    (once per file in each process) and the wrapper returns None (so that `MapDataset` draws
    another element) or, with `keep_marker`, a `SkippedImage` (so that an inference loader
    can leave the element out and report it). Any other exception propagates.
    """

    def __init__(self, map_func: Callable[[Any], Any], keep_marker: bool = False) -> None:
        """Create the wrapper.

        Args:
            map_func: the mapper to call.
            keep_marker: return a `SkippedImage` instead of None for a skipped element.
        """
        self._map_func = map_func
        self._keep_marker = keep_marker
        self._warned: set[str] = set()

    def __call__(self, dataset_dict: Any) -> Any:
        own_files = _own_files(dataset_dict)  # before the mapper pops the keys
        try:
            return self._map_func(dataset_dict)
        except (FileNotFoundError, ImageReadError) as err:
            file_name = _unreadable_own_file(err, own_files)
            if file_name is None:
                raise
            reason = str(err.__cause__ or err.strerror or err)
            if file_name not in self._warned:
                self._warned.add(file_name)
                action = (
                    "the image is left out" if self._keep_marker else "another element is drawn"
                )
                logger.warning(f"Skipping unreadable file {file_name} ({reason}); {action}.")
            return SkippedImage(file_name, reason) if self._keep_marker else None


class InferenceBatch(list):
    """A batch of the inference loader that had elements left out (as a list of the others).

    Attributes:
        skipped: the `~segtron.data.common.SkippedImage` records of the left-out elements.
    """

    skipped: list[SkippedImage]


class InferenceBatchCollator:
    """Collate an inference batch without the elements its mapper skipped (`SkippedImage`).

    With the default collation the result is an `InferenceBatch` listing them in ``skipped``;
    with a custom `collate_fn`, the remaining elements are collated (an all-skipped batch gives
    an empty `InferenceBatch`).
    """

    def __init__(self, collate_fn: Callable[[list[Any]], Any] | None = None) -> None:
        """Create the collator.

        Args:
            collate_fn: the collation of the kept elements; None keeps them as a list.
        """
        self._collate_fn = collate_fn

    def __call__(self, batch: list[Any]) -> Any:
        kept = [x for x in batch if not isinstance(x, SkippedImage)]
        if len(kept) == len(batch):
            return batch if self._collate_fn is None else self._collate_fn(batch)
        if self._collate_fn is not None and kept:
            return self._collate_fn(kept)
        result = InferenceBatch(kept)
        result.skipped = [x for x in batch if isinstance(x, SkippedImage)]
        return result


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
                    "The mapper returned None for every element tried; no data can be produced "
                    "(unreadable files, if any, are named in the warnings above)."
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
