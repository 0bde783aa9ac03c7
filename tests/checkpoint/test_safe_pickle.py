"""The restricted unpickler: weights load, code does not run."""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from segtron.checkpoint import DetectionCheckpointer, ForbiddenGlobalError, load_pickle


class _Exploit:
    """Unpickling this runs ``os.system``; it must never happen."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_arrays_scalars_and_containers_load(protocol):
    data = {
        "model": OrderedDict(
            w=np.arange(6, dtype=np.float32).reshape(2, 3), i=np.array([1, 2], dtype=np.int64)
        ),
        "iteration": np.int64(9),
        "misc": (1.5, [b"bytes", "text"], {3, 4}, frozenset({5}), complex(1, 2)),
    }
    loaded = load_pickle(io.BytesIO(pickle.dumps(data, protocol=protocol)))
    np.testing.assert_array_equal(loaded["model"]["w"], data["model"]["w"])
    assert loaded["model"]["i"].dtype == np.int64
    assert loaded["iteration"] == 9 and loaded["misc"] == data["misc"]
    assert isinstance(loaded["model"], OrderedDict)


def test_both_numpy_module_paths_are_accepted():
    payload = pickle.dumps({"w": np.ones(3, dtype=np.float32)}, protocol=2)
    for path in (b"numpy.core.multiarray", b"numpy._core.multiarray"):
        patched = payload.replace(b"numpy._core.multiarray", path).replace(
            b"numpy.core.multiarray", path
        )
        assert path in patched
        np.testing.assert_array_equal(load_pickle(io.BytesIO(patched))["w"], np.ones(3))


def test_python2_pickle_with_latin1_strings():
    # Protocol 2 as Python 2 wrote it: "__builtin__" module and byte strings (SHORT_BINSTRING).
    payload = (
        b"\x80\x02}q\x00(U\x07conv1_wq\x01c__builtin__\nset\nq\x02]q\x03K\x01a\x85q\x04R"
        b"q\x05U\x02\xe9bq\x06K\x02u."
    )
    assert load_pickle(io.BytesIO(payload)) == {"conv1_w": {1}, "\xe9b": 2}


def test_malicious_pickle_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"model": {"w": _Exploit(str(marker))}})
    with pytest.raises(ForbiddenGlobalError, match="system") as info:
        load_pickle(io.BytesIO(payload), filename="evil.pkl")
    assert "evil.pkl" in str(info.value)
    assert not marker.exists()


def test_malicious_files_rejected_by_checkpointer(tmp_path):
    marker = tmp_path / "pwned"
    model = torch.nn.Linear(2, 2)
    pkl = tmp_path / "model_final.pkl"
    pkl.write_bytes(pickle.dumps({"model": _Exploit(str(marker)), "__author__": "x"}))
    with pytest.raises(ForbiddenGlobalError, match="model_final.pkl"):
        DetectionCheckpointer(model).load(str(pkl))
    pth = tmp_path / "model_final.pth"
    torch.save({"model": model.state_dict(), "x": _Exploit(str(marker))}, pth)
    with pytest.raises(ForbiddenGlobalError, match="model_final.pth"):
        DetectionCheckpointer(model).load(str(pth))
    assert not marker.exists()


def test_pth_with_numpy_arrays_loads(tmp_path):
    model = torch.nn.Linear(3, 2)
    weights = {
        k: np.full(tuple(v.shape), 4.0, dtype=np.float32) for k, v in model.state_dict().items()
    }
    torch.save({"model": weights, "iteration": np.int64(3)}, tmp_path / "np.pth")
    extra = DetectionCheckpointer(model).load(str(tmp_path / "np.pth"))
    assert torch.all(model.weight == 4.0) and extra["iteration"] == 3
