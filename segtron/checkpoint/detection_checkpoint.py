"""``DetectionCheckpointer``: fvcore's ``Checkpointer`` that reads every weight format we meet.

Besides segtron's own ``.pth`` checkpoints it loads Detectron2 model-zoo ``.pkl``/``.pth`` files,
Caffe2/Detectron ``.pkl`` files (renamed to Detectron2 names) and torchvision ResNet state dicts,
matching names by suffix where the file's names are not the model's. Pickles are read without
letting them run code, unreadable files and weights of another model give errors that say what
to do, and saving is atomic so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer
from tabulate import tabulate
from torch import nn

from segtron.utils import comm
from segtron.utils.file_io import PathManager
from segtron.utils.safe_pickle import ForbiddenGlobalError, load_pickle, numpy_safe_globals

from .c2_model_loading import align_and_update_state_dicts
from .torchvision_loading import convert_torchvision_resnet_names, is_torchvision_resnet

__all__ = ["CorruptCheckpointError", "DetectionCheckpointer", "IncompatibleCheckpointError"]

# What reading a damaged file can raise, from the zip reader (RuntimeError, OSError EINVAL) to
# pickle opcodes. The file exists when it is read, so OSError here means unreadable content.
_READ_ERRORS = (
    EOFError,
    pickle.UnpicklingError,
    RuntimeError,
    ValueError,
    TypeError,
    IndexError,
    OSError,
)
_ACCESS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError)
# How torch.load(weights_only=True) words its refusal of a global (varies across versions).
_REFUSED_GLOBAL = re.compile(r"unsupported global|not an allowed global|is blocked", re.IGNORECASE)
_HEURISTICS_QUERY = "?matching_heuristics=True"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file cannot be read: it is truncated or corrupt."""


class IncompatibleCheckpointError(RuntimeError):
    """A checkpoint holds weights of another model: none of its keys is one of the model's."""


@dataclass
class _LoadRequest:
    source: str  # the path or URL the user asked for
    local: str  # the file actually read
    force_heuristics: bool  # "?matching_heuristics=True" was appended to the path
    loaded_keys: int = 0  # how many model keys got a value, for the summary

    @property
    def description(self) -> str:
        return self.local if self.local == self.source else f"{self.local} (from {self.source})"


class DetectionCheckpointer(Checkpointer):
    """fvcore's ``Checkpointer`` with Detectron2's formats, safe reading and atomic saving.

    ``load(path)`` accepts, by file name and content:

    * segtron/fvcore ``.pth`` checkpoints (``{"model": state_dict, <checkpointable>: ...}``),
      read with ``torch.load(weights_only=True)``;
    * Detectron2 model-zoo ``.pkl`` (``{"model": {name: ndarray}, "__author__": ...}``) and
      ``.pth`` files; name-matching heuristics are applied when ``"matching_heuristics"`` is set
      or the author is not Detectron2;
    * Caffe2/Detectron ``.pkl`` files (``{"blobs": ...}`` or a dict of arrays), renamed with
      :func:`~segtron.checkpoint.c2_model_loading.convert_c2_detectron_names`;
    * torchvision ResNet state dicts (``layer1.0.conv1.weight``…), recognised by their keys.

    Append ``?matching_heuristics=True`` to a path to match its names by suffix anyway (e.g. a
    bare backbone ``.pth`` loaded into a detector). ``detectron2://`` and ``https://`` paths go
    through :data:`segtron.utils.file_io.PathManager` and its download cache.

    Args:
        model: the model; a (Distributed)DataParallel wrapper is unwrapped.
        save_dir: folder where checkpoints and the ``last_checkpoint`` tag are written.
        save_to_disk: whether :meth:`save` writes anything; defaults to being the main process.
        **checkpointables: other objects with ``state_dict``/``load_state_dict`` to save and
            restore, e.g. ``optimizer=optimizer``.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: bool | None = None,
        **checkpointables: Any,
    ) -> None:
        super().__init__(
            model,
            save_dir,
            save_to_disk=comm.is_main_process() if save_to_disk is None else save_to_disk,
            **checkpointables,
        )
        self.path_manager = PathManager
        self.logger = logging.getLogger(__name__)
        self._request: _LoadRequest | None = None

    def load(self, path: str, checkpointables: list[str] | None = None) -> dict[str, Any]:
        """Load weights (and checkpointables) from a file or URL.

        Args:
            path: local path, ``detectron2://…`` or ``https://…``; empty to load nothing.
            checkpointables: names of the checkpointables to restore; None restores all found.

        Returns:
            The checkpoint's remaining entries (e.g. ``iteration``).

        Raises:
            FileNotFoundError: the file does not exist (or cannot be downloaded).
            CorruptCheckpointError: the file is truncated or corrupt.
            IncompatibleCheckpointError: the file holds weights of another model.
            ForbiddenGlobalError: the file references code, not only weights.
        """
        if not path:
            return super().load(path, checkpointables)
        source = path.removesuffix(_HEURISTICS_QUERY)
        self._request = _LoadRequest(source, self._local_file(source), source != path)
        try:
            return super().load(self._request.local, checkpointables)
        finally:
            self._request = None

    def _local_file(self, path: str) -> str:
        """The local file for ``path``, downloading or finding it in the cache if it is a URL."""
        if os.path.isfile(path):
            return path
        local = self.path_manager.get_local_path(path)
        if not os.path.isfile(local):
            where = "" if local == path else f" (looked for it at {local})"
            raise FileNotFoundError(f"Checkpoint file {path} does not exist{where}.")
        return local

    def _describe(self, filename: str) -> str:
        """Name the file being loaded in messages: its local path and, if different, its source."""
        return self._request.description if self._request else filename

    def _load_file(self, filename: str) -> dict[str, Any]:
        """Read a checkpoint and say how to interpret its names.

        Returns:
            A dict with ``"model"`` (name -> array or tensor), the other saved entries, and
            ``"matching_heuristics"`` / ``"__author__"`` where names need matching or renaming.
        """
        is_pickle = filename.endswith(".pkl")
        data = self._read(filename, is_pickle)
        if not isinstance(data, dict):
            raise CorruptCheckpointError(
                f"{self._describe(filename)} holds a {type(data).__name__}, not a dict of "
                "weights: it is not a checkpoint, or it is corrupt."
            )
        if is_pickle:
            data = self._interpret_pickle(data)
        elif "model" not in data:
            data = {"model": data}
        if self._request is not None and self._request.force_heuristics:
            data["matching_heuristics"] = True
        return data

    def _read(self, filename: str, is_pickle: bool) -> Any:
        """Unpickle a file safely: restricted unpickler for ``.pkl``, ``weights_only`` for ``.pth``.

        Raises:
            ForbiddenGlobalError: the file references code, not just weights.
            CorruptCheckpointError: the file is truncated or corrupt.
        """
        name = self._describe(filename)
        try:
            if is_pickle:
                with open(filename, "rb") as f:
                    return load_pickle(f, filename=name)
            with torch.serialization.safe_globals(numpy_safe_globals()):
                return torch.load(filename, map_location="cpu", weights_only=True)
        except _READ_ERRORS as exc:
            if isinstance(exc, (ForbiddenGlobalError, *_ACCESS_ERRORS)):
                raise
            message = str(exc)
            if isinstance(exc, pickle.UnpicklingError) and _REFUSED_GLOBAL.search(message):
                raise ForbiddenGlobalError(
                    f"Refusing to load {name}: it holds Python objects other than tensors, arrays "
                    "and containers, which could run code when loaded. If you trust the file, "
                    "re-save only its weights with torch.save(state_dict)."
                ) from exc
            first_line = message.splitlines()[0][:200] if message else ""
            raise CorruptCheckpointError(
                f"Cannot read checkpoint {name}: the file is truncated or corrupt "
                f"({type(exc).__name__}: {first_line}). Delete it and download or copy it again."
            ) from exc

    def _interpret_pickle(self, data: dict[str, Any]) -> dict[str, Any]:
        """Tell a Detectron2 model-zoo ``.pkl`` from a Caffe2 one and mark how to match names."""
        if "model" in data and "__author__" in data:
            author = str(data["__author__"])
            self.logger.info(f"Reading a file from '{author}'")
            if not author.lower().startswith("detectron2"):
                data["matching_heuristics"] = True
            return data
        blobs = data.get("blobs", data)  # Detectron detection models wrap their weights
        weights = {k: v for k, v in blobs.items() if isinstance(v, np.ndarray)}
        self.logger.info(
            f"Reading Caffe2 weights: {len(weights)} arrays (dropped {len(blobs) - len(weights)} "
            "non-array entries)."
        )
        return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}

    def _load_model(self, checkpoint: dict[str, Any]) -> Any:
        """Rename/match the checkpoint's weights to the model's keys, then load them.

        Raises:
            IncompatibleCheckpointError: if no checkpoint key names a model key.
        """
        state = checkpoint["model"]
        self._convert_ndarray_to_tensor(state)
        original_keys = list(state)
        heuristics = bool(checkpoint.pop("matching_heuristics", False))
        model_keys = set(self.model.state_dict())
        if is_torchvision_resnet(state) and not model_keys & set(state):
            state, heuristics = convert_torchvision_resnet_names(state), True
        unmatched: list[str] = []
        if heuristics:
            state, unmatched = align_and_update_state_dicts(
                self.model.state_dict(),
                state,
                c2_conversion=checkpoint.get("__author__") == "Caffe2",
            )
        prefix = "module." if state and all(k.startswith("module.") for k in state) else ""
        if original_keys and model_keys and not {k[len(prefix) :] for k in state} & model_keys:
            raise IncompatibleCheckpointError(
                self._wrong_model_message(original_keys, sorted(model_keys))
            )
        checkpoint["model"] = state
        incompatible = super()._load_model(checkpoint)
        if self._request is not None:
            self._request.loaded_keys = len(model_keys) - len(incompatible.missing_keys)
        incompatible.unexpected_keys.extend(unmatched)
        # Shape-mismatched keys are reported as such, not again as missing. Models rebuild
        # pixel_mean/pixel_std from the config; old checkpoints may lack them.
        skipped = {key for key, _, _ in incompatible.incorrect_shapes}
        top_buffers = dict(self.model.named_buffers(recurse=False))
        incompatible.missing_keys[:] = [
            k
            for k in incompatible.missing_keys
            if k not in skipped and (k not in ("pixel_mean", "pixel_std") or k not in top_buffers)
        ]
        incompatible.unexpected_keys[:] = [
            k for k in incompatible.unexpected_keys if "anchor_generator.cell_anchors" not in k
        ]
        return incompatible

    def _wrong_model_message(self, ckpt_keys: list[str], model_keys: list[str]) -> str:
        name = self._describe("The checkpoint")
        return (
            f"{name} does not fit this model: none of its {len(ckpt_keys)} keys matches any of "
            f"the model's {len(model_keys)} keys.\n"
            f"  checkpoint keys: {', '.join(sorted(ckpt_keys)[:5])}, ...\n"
            f"  model keys:      {', '.join(model_keys[:5])}, ...\n"
            "These are the weights of another model. Check that the config file is the one "
            "these weights were trained with and that MODEL.WEIGHTS points to the right file. "
            f"If the file holds part of this model under other names, append "
            f"'{_HEURISTICS_QUERY}' to the path to match names by suffix."
        )

    def _log_incompatible_keys(self, incompatible: Any) -> None:
        """Log one table of the shape-mismatched, missing and unexpected keys."""
        rows = [
            ("shape mismatch (skipped)", key, tuple(ckpt_shape), tuple(model_shape))
            for key, ckpt_shape, model_shape in incompatible.incorrect_shapes
        ]
        rows += [("missing in checkpoint", k, "", "") for k in _group(incompatible.missing_keys)]
        rows += [
            ("unused from checkpoint", k, "", "") for k in _group(incompatible.unexpected_keys)
        ]
        loaded = self._request.loaded_keys if self._request else "?"
        summary = (
            f"Loaded {loaded} of {len(self.model.state_dict())} model keys from "
            f"{self._describe('the checkpoint')}."
        )
        if not rows:
            self.logger.info(summary)
            return
        table = tabulate(
            rows, headers=["status", "keys", "checkpoint shape", "model shape"], tablefmt="pipe"
        )
        self.logger.warning(f"{summary}\n{table}")

    def save(self, name: str, **kwargs: Any) -> None:
        """Atomically write the model, the checkpointables and ``kwargs`` to ``<name>.pth``.

        The data goes to a temporary file in ``save_dir`` that is flushed to disk and then
        renamed over ``<save_dir>/<name>.pth``; the ``last_checkpoint`` tag is then replaced the
        same way. An interruption leaves the previous checkpoint and tag as they were.

        Args:
            name: file name without ``.pth``.
            **kwargs: extra picklable data to store, e.g. ``iteration=...``.
        """
        if not self.save_dir or not self.save_to_disk:
            return
        data: dict[str, Any] = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        if os.path.basename(basename) != basename:
            raise ValueError(f"Checkpoint name {name!r} must not contain a folder.")
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        _atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically record ``last_filename_basename`` in ``<save_dir>/last_checkpoint``."""
        _atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode()),
        )


def _group(keys: Iterable[str]) -> list[str]:
    """Merge keys of one module: ``a.conv.weight``, ``a.conv.bias`` -> ``a.conv.{bias, weight}``."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        head, _, tail = key.rpartition(".")
        groups[head].append(tail)
    return sorted(
        (f"{head}." if head else "")
        + (tails[0] if len(tails) == 1 else f"{{{', '.join(sorted(tails))}}}")
        for head, tails in groups.items()
    )


def _atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Write a file so that readers see either its old or its complete new content.

    Args:
        path: the local file to (re)place.
        write: writes the content to the binary file object it is given.
    """
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where supported
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
