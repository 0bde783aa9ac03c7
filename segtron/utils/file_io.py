"""Path handling through iopath, with Detectron2's ``detectron2://`` model-zoo prefix.

``PathManager`` opens local files and ``http(s)://`` URLs (downloaded once into a local cache)
and resolves ``detectron2://X`` to Detectron2's public model zoo. When a remote file is not in
the cache and cannot be downloaded (no network), the error names the URL and the exact local
path where the user can put the file by hand.
"""

from __future__ import annotations

import os
from typing import Any

from iopath.common.file_io import HTTPURLHandler, PathHandler
from iopath.common.file_io import PathManager as PathManagerBase

__all__ = ["PathManager", "cache_dir", "cached_path_for_url"]

DETECTRON2_MODEL_ZOO = "https://dl.fbaipublicfiles.com/detectron2/"


def cache_dir() -> str:
    """The folder where downloaded files are kept: ``$SEGTRON_CACHE``, else ``~/.torch/segtron``."""
    return os.path.expanduser(os.environ.get("SEGTRON_CACHE", "~/.torch/segtron"))


def cached_path_for_url(url: str) -> str:
    """Where the download of ``url`` is (or would be) stored in the local cache."""
    stripped = url.split("://", 1)[-1].split("?", 1)[0]
    return os.path.join(cache_dir(), stripped)


class CachedHTTPHandler(HTTPURLHandler):
    """``http(s)://`` handler that looks in segtron's cache first and explains offline failures."""

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        local = cached_path_for_url(path)
        if os.path.isfile(local) and not force:
            return local
        try:
            return super()._get_local_path(path, force=force, cache_dir=cache_dir(), **kwargs)
        except Exception as exc:  # network errors come in many types from urllib
            raise FileNotFoundError(
                f"Cannot download {path} ({type(exc).__name__}: {exc}). If this machine is "
                f"offline, fetch the file elsewhere and put it at {local} "
                "(or set $SEGTRON_CACHE to the folder that holds it)."
            ) from exc


class Detectron2Handler(PathHandler):
    """Resolves ``detectron2://<path>`` to Detectron2's public model zoo."""

    PREFIX = "detectron2://"

    def __init__(self, http_handler: PathHandler) -> None:
        super().__init__()
        self._http = http_handler

    def _get_supported_prefixes(self) -> list[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, **kwargs: Any) -> str:
        url = DETECTRON2_MODEL_ZOO + path[len(self.PREFIX) :]
        return self._http._get_local_path(url, **kwargs)

    def _open(self, path: str, mode: str = "r", **kwargs: Any) -> Any:
        return open(self._get_local_path(path), mode)


PathManager = PathManagerBase()
_http_handler = CachedHTTPHandler()
PathManager.register_handler(_http_handler)
PathManager.register_handler(Detectron2Handler(_http_handler))
