"""Reading ``.pkl`` files (weights, precomputed proposals) without letting them run code.

A pickle can name any importable callable and have the unpickler call it, so a malicious
``model_final.pkl`` could run ``os.system`` the moment it is opened. Weight files only ever need
numpy arrays, numpy scalars and plain containers, so :class:`RestrictedUnpickler` resolves just
the globals those need and refuses everything else with :class:`ForbiddenGlobalError`.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import pickle
from typing import IO, Any

import numpy as np

__all__ = ["ForbiddenGlobalError", "RestrictedUnpickler", "load_pickle", "numpy_safe_globals"]

# (module, name) pairs a weight file may reference. Numpy moved its internals from ``numpy.core``
# to ``numpy._core`` in 2.0; files written by either version name their own path.
_NUMPY_INTERNALS = {
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("numeric", "_frombuffer"),
}
_ALLOWED_GLOBALS = frozenset(
    {("numpy", "ndarray"), ("numpy", "dtype")}
    | {
        (f"{package}.{module}", name)
        for package in ("numpy.core", "numpy._core")
        for module, name in _NUMPY_INTERNALS
    }
    | {("collections", "OrderedDict"), ("_codecs", "encode")}
    | {("builtins", name) for name in ("set", "frozenset", "bytearray", "complex", "slice")}
)
_NUMPY_INTERNAL_PACKAGE = (
    "numpy._core" if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else "numpy.core"
)


class ForbiddenGlobalError(pickle.UnpicklingError):
    """A pickle referenced a global that weight files have no business using."""


def _import_numpy_internal(module: str, name: str) -> Any:
    """Import ``name`` from the installed numpy's version of ``numpy.[_]core.<submodule>``."""
    submodule = module.rsplit(".", 1)[-1]
    return getattr(importlib.import_module(f"{_NUMPY_INTERNAL_PACKAGE}.{submodule}"), name)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only builds numpy arrays, numpy scalars and plain containers.

    Args:
        file: binary file object to read from.
        filename: name of the file, used in error messages.
        encoding: how to decode Python 2 ``str`` objects; ``"latin1"`` reads old Caffe2 files.
    """

    def __init__(self, file: IO[bytes], filename: str = "<pickle>", encoding: str = "latin1"):
        super().__init__(file, encoding=encoding)
        self._filename = filename

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global; raise :class:`ForbiddenGlobalError` for any other.

        Python 2 names (``__builtin__``, ``copy_reg``…) are first mapped to their Python 3 names.
        """
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) not in _ALLOWED_GLOBALS:
            raise ForbiddenGlobalError(
                f"Refusing to load {self._filename}: it references the global '{module}.{name}', "
                "which a weight file never needs (only numpy arrays and plain containers are "
                "allowed). The file may be malicious; do not load it with plain pickle."
            )
        if module.startswith("numpy."):
            return _import_numpy_internal(module, name)
        return super().find_class(module, name)


def load_pickle(file: IO[bytes], filename: str = "<pickle>") -> Any:
    """Unpickle a weight file with :class:`RestrictedUnpickler`.

    Args:
        file: binary file object positioned at the start of the pickle.
        filename: name of the file, used in error messages.

    Returns:
        The unpickled object (usually a dict of numpy arrays).

    Raises:
        ForbiddenGlobalError: if the pickle references anything but numpy arrays and containers.
    """
    return RestrictedUnpickler(file, filename=filename).load()


def numpy_safe_globals() -> list[Any]:
    """The numpy callables and types to allow in ``torch.load(..., weights_only=True)``.

    Lets ``.pth`` files that hold numpy arrays or scalars load without allowing anything else.
    """
    internals = [_import_numpy_internal(f"numpy._core.{m}", n) for m, n in _NUMPY_INTERNALS]
    dtype_classes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}
    return [np.ndarray, np.dtype, *internals, *dtype_classes]
