"""Global catalogs of datasets and their metadata, as in Detectron2.

``DatasetCatalog`` maps a dataset name to a function that returns its list of dataset dicts
(called lazily, so registering is free); ``MetadataCatalog`` maps the same name to a
``Metadata`` object (class names, colours, id maps, evaluator type, ...).
"""

from __future__ import annotations

import types
from collections import UserDict
from collections.abc import Callable
from typing import Any

__all__ = ["DatasetCatalog", "Metadata", "MetadataCatalog"]


class _DatasetCatalog(UserDict):
    """Name -> function returning ``list[dict]`` in Detectron2's standard dataset format."""

    def register(self, name: str, func: Callable[[], list[dict]]) -> None:
        """Register ``func`` (called with no argument) as the loader of dataset ``name``.

        Raises:
            TypeError: ``func`` is not callable.
            KeyError: ``name`` is already registered.
        """
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register('{name}', ...) needs a callable loader.")
        if name in self:
            raise KeyError(f"Dataset '{name}' is already registered; pick another name.")
        self[name] = func

    def get(self, name: str) -> list[dict]:
        """Call the loader of ``name`` and return its dataset dicts.

        Raises:
            KeyError: ``name`` is not registered; the message lists the registered names.
        """
        try:
            func = self[name]
        except KeyError as err:
            available = ", ".join(sorted(self)) or "none"
            raise KeyError(
                f"Dataset '{name}' is not registered. Registered datasets: {available}."
            ) from err
        return func()

    def list(self) -> list[str]:
        """Names of all registered datasets."""
        return list(self.keys())

    def remove(self, name: str) -> None:
        """Forget dataset ``name``."""
        self.pop(name)

    def __str__(self) -> str:
        return f"DatasetCatalog(registered datasets: {', '.join(self.keys())})"

    __repr__ = __str__


DatasetCatalog = _DatasetCatalog()


class Metadata(types.SimpleNamespace):
    """Attributes of one dataset; an attribute, once set, can only be set again to the same value.

    Reading a missing attribute raises AttributeError listing the attributes that exist.
    """

    name: str = "N/A"

    def __getattr__(self, key: str) -> Any:
        raise AttributeError(
            f"Attribute '{key}' does not exist in the metadata of dataset '{self.name}'. "
            f"Available keys are {', '.join(sorted(self.__dict__))}."
        )

    def __setattr__(self, key: str, value: Any) -> None:
        try:
            old = self.__dict__[key]
        except KeyError:
            super().__setattr__(key, value)
            return
        if old != value:
            raise ValueError(
                f"Attribute '{key}' of the metadata of '{self.name}' is already {old!r}; "
                f"it cannot be changed to {value!r}."
            )

    def as_dict(self) -> dict[str, Any]:
        """A shallow copy of all attributes."""
        return dict(self.__dict__)

    def set(self, **kwargs: Any) -> Metadata:
        """Set several attributes at once; returns self."""
        for key, value in kwargs.items():
            setattr(self, key, value)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        """The attribute ``key``, or ``default`` when it does not exist."""
        return self.__dict__.get(key, default)


class _MetadataCatalog(UserDict):
    """Name -> ``Metadata``; ``get`` creates an empty entry on first use."""

    def get(self, name: str) -> Metadata:  # type: ignore[override]
        """The metadata of ``name``, created empty if it does not exist yet."""
        if not name:
            raise ValueError("MetadataCatalog.get() needs a non-empty dataset name.")
        if name not in self:
            self[name] = Metadata(name=name)
        return self[name]

    def list(self) -> list[str]:
        """Names that have metadata."""
        return list(self.keys())

    def remove(self, name: str) -> None:
        """Forget the metadata of ``name``."""
        self.pop(name)

    def __str__(self) -> str:
        return f"MetadataCatalog(registered metadata: {', '.join(self.keys())})"

    __repr__ = __str__


MetadataCatalog = _MetadataCatalog()
