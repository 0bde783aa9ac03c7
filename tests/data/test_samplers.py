"""Tests of segtron.data.samplers: determinism, sharding across fake ranks, resuming."""

from __future__ import annotations

import itertools

import pytest
import torch

from segtron.data.samplers import InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler
from segtron.utils import comm


def _take(sampler, n: int) -> list[int]:
    return list(itertools.islice(iter(sampler), n))


def _fake_rank(monkeypatch, rank: int, world_size: int) -> None:
    monkeypatch.setattr(comm, "get_rank", lambda: rank)
    monkeypatch.setattr(comm, "get_world_size", lambda: world_size)


def test_training_sampler_is_deterministic_and_epoch_wise() -> None:
    a = _take(TrainingSampler(7, seed=3), 21)
    assert a == _take(TrainingSampler(7, seed=3), 21)
    assert a != _take(TrainingSampler(7, seed=4), 21)
    for epoch in range(3):
        assert sorted(a[epoch * 7 : (epoch + 1) * 7]) == list(range(7))
    assert a[:7] != a[7:14]  # reshuffled each epoch
    assert _take(TrainingSampler(4, shuffle=False), 6) == [0, 1, 2, 3, 0, 1]


def test_training_sampler_shards_disjoint_streams(monkeypatch) -> None:
    full = _take(TrainingSampler(10, seed=0), 40)
    streams = []
    for rank in range(2):
        _fake_rank(monkeypatch, rank, 2)
        streams.append(_take(TrainingSampler(10, seed=0), 20))
    assert streams[0] == full[0::2] and streams[1] == full[1::2]
    # Within each epoch of the global stream, the two ranks see disjoint images.
    for epoch in range(4):
        first = set(streams[0][epoch * 5 : (epoch + 1) * 5])
        second = set(streams[1][epoch * 5 : (epoch + 1) * 5])
        assert not first & second and first | second == set(range(10))


@pytest.mark.parametrize("rank", [0, 1])
def test_offset_resumes_exactly(monkeypatch, rank: int) -> None:
    _fake_rank(monkeypatch, rank, 2)
    uninterrupted = _take(TrainingSampler(9, seed=5), 30)
    resumed = _take(TrainingSampler(9, seed=5, offset=12), 18)
    assert resumed == uninterrupted[12:]
    factors = torch.tensor([1.0, 2.5, 1.0, 3.0])
    uninterrupted = _take(RepeatFactorTrainingSampler(factors, seed=1), 30)
    assert _take(RepeatFactorTrainingSampler(factors, seed=1, offset=7), 23) == uninterrupted[7:]
    with pytest.raises(ValueError, match="offset"):
        TrainingSampler(9, seed=5, offset=-1)


def test_training_sampler_rejects_bad_size() -> None:
    with pytest.raises(ValueError):
        TrainingSampler(0, seed=0)


def _dataset() -> list[dict]:
    # Category 0 is in all 10 images, category 1 in one image; one image has no annotations.
    dicts = [{"annotations": [{"category_id": 0}]} for _ in range(9)]
    dicts[0]["annotations"].append({"category_id": 1})
    dicts.append({"annotations": [{"category_id": 0}]})
    dicts.append({"annotations": []})
    return dicts


def test_repeat_factors_from_category_frequency() -> None:
    dicts = _dataset()  # 11 images: f(0) = 10 / 11, f(1) = 1 / 11
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, 0.5)
    assert factors.dtype == torch.float32 and len(factors) == 11
    assert factors[0].item() == pytest.approx((0.5 * 11) ** 0.5)
    assert factors[1:].tolist() == [1.0] * 10
    linear = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
        dicts, 0.5, sqrt=False
    )
    assert linear[0].item() == pytest.approx(5.5)
    high = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, 2.0)
    assert high[1].item() == pytest.approx((2.0 * 11 / 10) ** 0.5)


def test_repeat_factor_sampler_repeats_images() -> None:
    sampler = RepeatFactorTrainingSampler(torch.tensor([1.0, 2.5, 0.0]), seed=0)
    epochs = [sampler._get_epoch_indices(torch.Generator().manual_seed(s)) for s in range(200)]
    counts = torch.stack([torch.bincount(e, minlength=3) for e in epochs]).float()
    assert (counts[:, 0] == 1).all() and (counts[:, 2] == 0).all()
    assert set(counts[:, 1].tolist()) == {2.0, 3.0}
    assert counts[:, 1].mean().item() == pytest.approx(2.5, abs=0.1)
    stream = _take(sampler, 50)
    assert 2 not in stream and stream == _take(
        RepeatFactorTrainingSampler(torch.tensor([1.0, 2.5, 0.0]), seed=0), 50
    )


def test_inference_sampler_shards_evenly(monkeypatch) -> None:
    shards = []
    for rank in range(3):
        _fake_rank(monkeypatch, rank, 3)
        shards.append(list(InferenceSampler(10)))
    assert [len(s) for s in shards] == [4, 3, 3]
    assert list(itertools.chain(*shards)) == list(range(10))
    _fake_rank(monkeypatch, 3, 4)
    assert len(InferenceSampler(2)) == 0
