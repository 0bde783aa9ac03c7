"""Tests of segtron.utils: cached/offline file access, single-process comm, logging, seeding."""

import logging
import os

import numpy as np
import pytest
import torch

from segtron.utils import comm
from segtron.utils.env import seed_all_rng
from segtron.utils.file_io import PathManager, cached_path_for_url
from segtron.utils.logger import setup_logger
from segtron.utils.panoptic import id2rgb, rgb2id


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGTRON_CACHE", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("iopath.common.file_io.download", no_network)
    return tmp_path / "cache"


def test_cached_url_is_found_without_network(offline_cache):
    url = "https://example.org/models/weights.pkl"
    local = cached_path_for_url(url)
    assert local.startswith(str(offline_cache))
    torch.save({"x": 1}, _make_parent(local))
    assert PathManager.get_local_path(url) == local


def test_detectron2_prefix_resolves_to_model_zoo_cache(offline_cache):
    local = cached_path_for_url(
        "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl"
    )
    _make_parent(local)
    with open(local, "wb") as f:
        f.write(b"weights")
    resolved = PathManager.get_local_path("detectron2://ImageNetPretrained/MSRA/R-50.pkl")
    assert resolved == local
    with PathManager.open("detectron2://ImageNetPretrained/MSRA/R-50.pkl", "rb") as f:
        assert f.read() == b"weights"


def test_offline_missing_file_error_says_where_to_put_it(offline_cache):
    with pytest.raises(FileNotFoundError) as info:
        PathManager.get_local_path("detectron2://ImageNetPretrained/MSRA/R-101.pkl")
    message = str(info.value)
    assert "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-101.pkl" in message
    assert str(offline_cache / "dl.fbaipublicfiles.com/detectron2/ImageNetPretrained") in message


def _make_parent(path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def test_comm_without_process_group():
    assert comm.get_world_size() == 1
    assert comm.get_rank() == 0
    assert comm.get_local_rank() == 0
    assert comm.get_local_size() == 1
    assert comm.is_main_process()
    comm.synchronize()
    assert comm.all_gather({"a": 1}) == [{"a": 1}]
    assert comm.gather([1, 2]) == [[1, 2]]
    losses = {"loss": torch.tensor(2.0)}
    assert comm.reduce_dict(losses) is losses
    assert 0 <= comm.shared_random_seed() < 2**31


def test_setup_logger_writes_file(tmp_path):
    logger = setup_logger(str(tmp_path), name="segtron.test_logger", color=False)
    logger.info("hello from the test")
    for handler in logger.handlers:
        handler.flush()
    assert "hello from the test" in (tmp_path / "log.txt").read_text()
    assert logger.level == logging.DEBUG


def test_setup_logger_non_main_rank_writes_rank_file(tmp_path):
    logger = setup_logger(str(tmp_path / "run.log"), distributed_rank=1, name="segtron.rank1")
    logger.warning("rank one speaking")
    for handler in logger.handlers:
        handler.flush()
    assert len(logger.handlers) == 1  # the file only: ranks > 0 stay off the console
    assert "rank one speaking" in (tmp_path / "run.log.rank1").read_text()


def test_seed_all_rng_is_repeatable():
    seed_all_rng(123)
    first = (np.random.rand(), torch.rand(1).item())
    seed_all_rng(123)
    assert (np.random.rand(), torch.rand(1).item()) == first
    assert 0 <= seed_all_rng() < 2**31


def test_panoptic_id_rgb_round_trip():
    ids = np.array([[0, 1, 255], [256, 65536 + 2, 256**3 - 1]])
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert tuple(rgb[1, 1]) == (2, 0, 1)
    np.testing.assert_array_equal(rgb2id(rgb), ids)
    with pytest.raises(ValueError, match="2\\^24"):
        id2rgb(np.array([256**3]))
    with pytest.raises(ValueError, match="H×W×3"):
        rgb2id(np.zeros((4, 4), np.uint8))


def test_setup_logger_again_replaces_handlers(tmp_path):
    first, second = tmp_path / "run1", tmp_path / "run2"
    log = setup_logger(str(first), name="segtron.test_replace")
    log.info("one")
    setup_logger(str(second), name="segtron.test_replace")
    setup_logger(str(second), name="segtron.test_replace")
    log.info("two")
    assert len(log.handlers) == 2  # one console, one file
    assert "two" not in (first / "log.txt").read_text()
    assert "one" not in (second / "log.txt").read_text()
    assert "two" in (second / "log.txt").read_text()
