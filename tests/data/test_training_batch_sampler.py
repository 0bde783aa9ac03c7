"""Tests of TrainingBatchSampler and SeededDataset: (seed, index) batches, aspect-ratio grouping,
resuming at a batch, per-element seeds, RNG isolation and worker-count independence."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from segtron.data.build import build_batch_data_loader
from segtron.data.common import DatasetFromList, MapDataset, SeededDataset
from segtron.data.samplers import TrainingBatchSampler, TrainingSampler
from segtron.utils import comm


def _take(iterable, n: int) -> list:
    return list(itertools.islice(iter(iterable), n))


def _fake_rank(monkeypatch, rank: int, world_size: int = 2) -> None:
    monkeypatch.setattr(comm, "get_rank", lambda: rank)
    monkeypatch.setattr(comm, "get_world_size", lambda: world_size)


def test_batches_are_seed_index_pairs_of_the_stream() -> None:
    stream = _take(TrainingSampler(10, seed=1), 12)
    batches = _take(TrainingBatchSampler(TrainingSampler(10, seed=1), 3, item_seed=5), 4)
    assert [len(b) for b in batches] == [3, 3, 3, 3]
    for batch in batches:
        for seed, index in batch:
            assert isinstance(seed, int) and isinstance(index, int)
            assert 0 <= seed < 2**31
    assert [index for batch in batches for _, index in batch] == stream
    seeds = [seed for batch in batches for seed, _ in batch]
    assert len(set(seeds)) == len(seeds)  # each element has its own seed
    again = _take(TrainingBatchSampler(TrainingSampler(10, seed=1), 3, item_seed=5), 4)
    assert again == batches
    other = _take(TrainingBatchSampler(TrainingSampler(10, seed=1), 3, item_seed=6), 4)
    assert [[i for _, i in b] for b in other] == [[i for _, i in b] for b in batches]
    assert [[s for s, _ in b] for b in other] != [[s for s, _ in b] for b in batches]


def test_invalid_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        TrainingBatchSampler(TrainingSampler(4, seed=0), 0, item_seed=0)


ASPECT_RATIOS = [1.5, 0.75, 0.5, 2.0, 1.0, 1.33, 0.8, 1.2, 0.6, 1.7, 0.9]


def test_aspect_ratio_grouping_separates_landscape_and_portrait() -> None:
    sampler = TrainingBatchSampler(
        TrainingSampler(len(ASPECT_RATIOS), seed=2), 3, aspect_ratios=ASPECT_RATIOS, item_seed=0
    )
    batches = _take(sampler, 30)
    kinds = set()
    for batch in batches:
        landscape = {ASPECT_RATIOS[i] > 1 for _, i in batch}
        assert len(landscape) == 1, batch  # all landscape or all portrait (square = portrait)
        kinds |= landscape
    assert kinds == {True, False}
    # Without aspect ratios the stream is batched in order, mixing orientations.
    plain = _take(TrainingBatchSampler(TrainingSampler(len(ASPECT_RATIOS), seed=2), 3), 30)
    assert any(len({ASPECT_RATIOS[i] > 1 for _, i in b}) == 2 for b in plain)


@pytest.mark.parametrize("aspect_ratios", [None, ASPECT_RATIOS])
@pytest.mark.parametrize("k", [0, 1, 5, 13])
def test_start_batch_yields_the_tail_of_the_full_stream(aspect_ratios, k) -> None:
    def make() -> TrainingBatchSampler:
        return TrainingBatchSampler(
            TrainingSampler(len(ASPECT_RATIOS), seed=3), 2, aspect_ratios, item_seed=9
        )

    full = _take(make(), k + 10)
    resumed = make()
    resumed.load_state_dict(make().state_dict(), start_batch=k)
    assert _take(resumed, 10) == full[k:]


def test_state_dict_replays_a_stream_with_another_sampler_seed() -> None:
    original = TrainingBatchSampler(
        TrainingSampler(len(ASPECT_RATIOS), seed=1), 2, ASPECT_RATIOS, item_seed=11
    )
    full = _take(original, 12)
    state = original.state_dict()
    assert state == {"item_seed": 11, "sampler": {"seed": 1}}

    def other() -> TrainingBatchSampler:
        return TrainingBatchSampler(
            TrainingSampler(len(ASPECT_RATIOS), seed=2), 2, ASPECT_RATIOS, item_seed=22
        )

    assert _take(other(), 12) != full  # the test means something
    replay = other()
    replay.load_state_dict(state, start_batch=4)
    assert _take(replay, 8) == full[4:]
    assert replay.item_seed == 11


def test_element_seeds_depend_on_position_and_rank(monkeypatch) -> None:
    # Two ranks reading the same indices get different seeds; a replay on the same rank gets
    # the same seeds at the same positions.
    per_rank = {}
    for rank in (0, 1):
        _fake_rank(monkeypatch, rank)
        sampler = TrainingBatchSampler(list(range(6)) * 3, 2, item_seed=4)
        per_rank[rank] = _take(sampler, 9)
        resumed = TrainingBatchSampler(list(range(6)) * 3, 2, item_seed=0)
        resumed.load_state_dict(sampler.state_dict(), start_batch=3)
        assert _take(resumed, 6) == per_rank[rank][3:]
    seeds = {r: [s for b in batches for s, _ in b] for r, batches in per_rank.items()}
    assert all(a != b for a, b in zip(seeds[0], seeds[1], strict=True))
    # The same index at another position of the stream gets another seed.
    assert len(set(seeds[0])) == 18


def test_ranks_read_disjoint_indices(monkeypatch) -> None:
    streams = []
    for rank in (0, 1):
        _fake_rank(monkeypatch, rank)
        sampler = TrainingBatchSampler(TrainingSampler(8, seed=0), 2, item_seed=1)
        streams.append([i for b in _take(sampler, 2) for _, i in b])
    assert sorted(streams[0] + streams[1]) == list(range(8))


class _RandomMapper:
    """An augmentation drawing from all three global generators."""

    def __call__(self, value: int) -> tuple[int, float, float, float]:
        return (value, random.random(), float(np.random.rand()), float(torch.rand(())))


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seeded_dataset_is_a_function_of_the_seed_and_keeps_the_main_rngs() -> None:
    dataset = SeededDataset(MapDataset(list(range(5)), _RandomMapper()))
    assert len(dataset) == 5
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    expected = _draws()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    a = dataset[(123, 2)]
    b = dataset[(123, 2)]
    c = dataset[(124, 2)]
    assert _draws() == expected  # loading did not consume the training's randomness
    assert a == b and a[0] == 2
    assert c[0] == 2 and c[1:] != a[1:]
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    assert a[1:] == _draws()


def _first_batches(num_workers: int, mapper, n: int = 6) -> list:
    dataset = MapDataset(DatasetFromList(list(range(8)), serialize=False), mapper)
    loader = build_batch_data_loader(
        dataset, TrainingSampler(8, seed=3), 2, num_workers=num_workers, seed=5
    )
    return _take(loader, n)


def test_loader_with_0_and_2_workers_yields_identical_batches() -> None:
    mapper = _RandomMapper()
    no_workers = _first_batches(0, mapper)
    assert no_workers == _first_batches(2, mapper)
    assert no_workers == _first_batches(0, mapper)
    values = [x[2] for batch in no_workers for x in batch]
    assert len(set(values)) == len(values)  # really random augmentations
    indices = [x[0] for batch in no_workers for x in batch]
    assert indices == _take(TrainingSampler(8, seed=3), 12)


class _SometimesNone(_RandomMapper):
    """Fails (returns None) on odd values, so MapDataset falls back to other elements."""

    def __call__(self, value: int):
        if value % 2:
            return None
        return super().__call__(value)


def test_fallback_elements_do_not_depend_on_the_workers() -> None:
    mapper = _SometimesNone()
    no_workers = _first_batches(0, mapper, 8)
    assert all(x[0] % 2 == 0 for batch in no_workers for x in batch)
    assert no_workers == _first_batches(2, mapper, 8)
    assert no_workers == _first_batches(0, mapper, 8)


def test_seeded_dataset_raises_when_every_element_is_rejected() -> None:
    dataset = SeededDataset(MapDataset(list(range(4)), lambda x: None))
    with pytest.raises(RuntimeError, match="returned None for every element"):
        dataset[(1, 0)]


def test_build_batch_data_loader_needs_a_sampler_for_a_map_dataset() -> None:
    with pytest.raises(ValueError, match="map-style dataset needs a sampler"):
        build_batch_data_loader(DatasetFromList(list(range(4))), None, 2)
