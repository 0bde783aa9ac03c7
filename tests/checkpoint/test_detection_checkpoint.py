"""DetectionCheckpointer: round trips, model-zoo files, errors, atomic saving, URLs."""

from __future__ import annotations

import logging
import os
import pickle

import numpy as np
import pytest
import torch
from iopath.common.file_io import HTTPURLHandler
from torch import nn

from segtron.checkpoint import (
    CorruptCheckpointError,
    DetectionCheckpointer,
    IncompatibleCheckpointError,
    PeriodicCheckpointer,
)
from segtron.utils.file_io import DETECTRON2_MODEL_ZOO, cached_path_for_url


def _numpy_state(model: nn.Module, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        k: rng.standard_normal(tuple(v.shape)).astype(np.float32)
        for k, v in model.state_dict().items()
    }


def _write_pickle(path, obj) -> str:
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return str(path)


def test_round_trip_with_optimizer(make_detector, tmp_path, detector):
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.1, momentum=0.9)
    detector.box_head(torch.ones(2, 16)).sum().backward()
    optimizer.step()
    saver = DetectionCheckpointer(detector, str(tmp_path), optimizer=optimizer)
    assert not saver.has_checkpoint()
    saver.save("model_0000004", iteration=4)

    assert (tmp_path / "model_0000004.pth").is_file()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert saver.get_checkpoint_file() == str(tmp_path / "model_0000004.pth")

    torch.manual_seed(1)
    fresh = make_detector()
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    loader = DetectionCheckpointer(fresh, str(tmp_path), optimizer=fresh_optimizer)
    extra = loader.resume_or_load("ignored.pth", resume=True)

    assert extra == {"iteration": 4}
    for key, value in detector.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)
    saved_state = optimizer.state_dict()["state"]
    restored_state = fresh_optimizer.state_dict()["state"]
    assert saved_state and restored_state.keys() == saved_state.keys()
    for index, state in saved_state.items():
        torch.testing.assert_close(
            restored_state[index]["momentum_buffer"], state["momentum_buffer"]
        )


def test_resume_false_loads_only_the_model(make_detector, tmp_path, detector):
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.5)
    DetectionCheckpointer(detector, str(tmp_path), optimizer=optimizer).save("m", iteration=1)
    fresh_optimizer = torch.optim.SGD(make_detector().parameters(), lr=0.01)
    loader = DetectionCheckpointer(make_detector(), optimizer=fresh_optimizer)
    extra = loader.resume_or_load(str(tmp_path / "m.pth"), resume=False)
    assert "optimizer" in extra  # not restored, handed back
    assert fresh_optimizer.param_groups[0]["lr"] == 0.01


def test_periodic_checkpointer_keeps_the_latest(tmp_path, detector):
    periodic = PeriodicCheckpointer(
        DetectionCheckpointer(detector, str(tmp_path)), period=2, max_iter=6, max_to_keep=1
    )
    for iteration in range(6):
        periodic.step(iteration)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["last_checkpoint", "model_0000005.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"


def test_save_to_disk_false_writes_nothing(tmp_path, detector):
    DetectionCheckpointer(detector, str(tmp_path), save_to_disk=False).save("m")
    assert list(tmp_path.iterdir()) == []


def test_detectron2_model_zoo_pkl(tmp_path, detector, caplog):
    weights = _numpy_state(detector)
    path = _write_pickle(
        tmp_path / "model_final.pkl", {"model": weights, "__author__": "Detectron2 Model Zoo"}
    )
    caplog.set_level(logging.INFO, logger="segtron")
    DetectionCheckpointer(detector).load(path)
    for key, value in detector.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), weights[key])
    assert f"Loaded {len(weights)} of {len(weights)} model keys" in caplog.text


def test_shape_mismatch_is_skipped_and_tabulated(tmp_path, detector, caplog):
    weights = _numpy_state(detector)
    weights["box_head.weight"] = np.zeros((81, 16), dtype=np.float32)
    weights["roi_heads.extra.weight"] = np.zeros(3, dtype=np.float32)
    path = _write_pickle(tmp_path / "m.pkl", {"model": weights, "__author__": "Detectron2"})
    before = detector.box_head.weight.detach().clone()
    caplog.set_level(logging.INFO, logger="segtron")
    DetectionCheckpointer(detector).load(path)

    torch.testing.assert_close(detector.box_head.weight.detach(), before)
    np.testing.assert_array_equal(detector.box_head.bias.detach().numpy(), weights["box_head.bias"])
    row = next(line for line in caplog.text.splitlines() if "box_head.weight" in line)
    assert "shape mismatch" in row and "(81, 16)" in row and "(5, 16)" in row
    assert any("unused" in ln and "roi_heads.extra.weight" in ln for ln in caplog.text.splitlines())


def test_third_party_pkl_uses_matching_heuristics(tmp_path, detector, caplog):
    backbone_only = _numpy_state(detector.backbone.bottom_up)
    path = _write_pickle(
        tmp_path / "r.pkl",
        {"model": backbone_only, "__author__": "someone", "matching_heuristics": True},
    )
    caplog.set_level(logging.INFO, logger="segtron")
    DetectionCheckpointer(detector).load(path)
    np.testing.assert_array_equal(
        detector.backbone.bottom_up.res3[0].conv2.weight.detach().numpy(),
        backbone_only["res3.0.conv2.weight"],
    )
    table = caplog.text
    assert "missing in checkpoint" in table and "box_head.{bias, weight}" in table
    assert "pixel_mean" not in table  # rebuilt from the config, never reported


def test_query_turns_on_matching_heuristics_for_pth(tmp_path, detector):
    bare = {k: torch.full_like(v, 3.0) for k, v in detector.backbone.state_dict().items()}
    torch.save(bare, tmp_path / "backbone.pth")
    path = str(tmp_path / "backbone.pth")
    with pytest.raises(IncompatibleCheckpointError):
        DetectionCheckpointer(detector).load(path)
    DetectionCheckpointer(detector).load(path + "?matching_heuristics=True")
    assert torch.all(detector.backbone.fpn_lateral2.weight == 3.0)


def test_module_prefix_is_stripped(tmp_path, detector):
    state = {f"module.{k}": torch.full_like(v, 2.0) for k, v in detector.state_dict().items()}
    torch.save({"model": state}, tmp_path / "ddp.pth")
    DetectionCheckpointer(detector).load(str(tmp_path / "ddp.pth"))
    assert torch.all(detector.box_head.bias == 2.0)


def test_checkpoint_of_another_model_is_rejected(tmp_path, detector):
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 2))
    torch.save({"model": other.state_dict()}, tmp_path / "other.pth")
    with pytest.raises(IncompatibleCheckpointError) as info:
        DetectionCheckpointer(detector).load(str(tmp_path / "other.pth"))
    message = str(info.value)
    assert str(tmp_path / "other.pth") in message
    assert f"none of its {len(other.state_dict())} keys" in message
    assert "0.weight" in message and "backbone.bottom_up" in message
    assert "MODEL.WEIGHTS" in message and "config" in message


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_truncated_file_says_so(tmp_path, detector, suffix):
    path = tmp_path / f"model{suffix}"
    if suffix == ".pth":
        torch.save({"model": detector.state_dict()}, path)
    else:
        _write_pickle(path, {"model": _numpy_state(detector), "__author__": "Detectron2"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError) as info:
        DetectionCheckpointer(detector).load(str(path))
    assert str(path) in str(info.value)
    assert "truncated or corrupt" in str(info.value) and "download" in str(info.value)


def test_missing_file_names_it(tmp_path, detector):
    path = str(tmp_path / "nope" / "model_final.pth")
    with pytest.raises(FileNotFoundError, match="nope/model_final.pth"):
        DetectionCheckpointer(detector).load(path)


def test_crash_during_save_keeps_previous_checkpoint(
    make_detector, tmp_path, detector, monkeypatch
):
    saver = DetectionCheckpointer(detector, str(tmp_path))
    saver.save("model_final")
    good_bytes = (tmp_path / "model_final.pth").read_bytes()
    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        f.write(good_bytes[: len(good_bytes) // 2])  # half a file, then the "crash"
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", crashing_save)
    with torch.no_grad():
        detector.box_head.bias.fill_(7.0)
    for name in ("model_final", "model_0000009"):
        with pytest.raises(KeyboardInterrupt):
            saver.save(name)
    monkeypatch.setattr(torch, "save", real_save)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_final.pth"]
    assert (tmp_path / "model_final.pth").read_bytes() == good_bytes
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    restored = make_detector()
    DetectionCheckpointer(restored, str(tmp_path)).resume_or_load("", resume=True)
    assert not torch.any(restored.box_head.bias == 7.0)


def test_crash_while_tagging_keeps_previous_tag(tmp_path, detector, monkeypatch):
    saver = DetectionCheckpointer(detector, str(tmp_path))
    saver.save("model_0000001")
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("last_checkpoint"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        saver.save("model_0000002")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _offline(monkeypatch, tmp_path) -> None:
    def no_network(self, path, **kwargs):
        raise OSError(f"network disabled in tests: {path}")

    monkeypatch.setenv("SEGTRON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(HTTPURLHandler, "_get_local_path", no_network)


def test_detectron2_url_found_in_cache_offline(tmp_path, detector, monkeypatch):
    _offline(monkeypatch, tmp_path)
    url = DETECTRON2_MODEL_ZOO + "COCO/model_final_abc.pkl"
    cached = cached_path_for_url(url)
    os.makedirs(os.path.dirname(cached))
    weights = _numpy_state(detector, seed=5)
    _write_pickle(cached, {"model": weights, "__author__": "Detectron2"})
    DetectionCheckpointer(detector).load("detectron2://COCO/model_final_abc.pkl")
    np.testing.assert_array_equal(detector.box_head.bias.detach().numpy(), weights["box_head.bias"])


@pytest.mark.parametrize("path", ["detectron2://COCO/missing.pkl", "https://x.org/w/r.pth"])
def test_missing_url_offline_says_where_to_put_it(tmp_path, detector, monkeypatch, path):
    _offline(monkeypatch, tmp_path)
    url = path.replace("detectron2://", DETECTRON2_MODEL_ZOO)
    with pytest.raises(FileNotFoundError) as info:
        DetectionCheckpointer(detector).load(path)
    assert cached_path_for_url(url) in str(info.value)
    assert cached_path_for_url(url).startswith(str(tmp_path / "cache"))
