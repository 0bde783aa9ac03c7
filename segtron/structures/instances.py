"""`Instances`: the per-image set of detected or annotated objects, with named fields.

Mirrors ``detectron2.structures.instances``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch


class Instances:
    """A set of objects in one image, stored as named fields of equal length.

    Every field is a list-like value with one entry per object (a Tensor, a list, `Boxes`,
    `BitMasks`, `PolygonMasks`, ...). Fields are read and written as attributes
    (``instances.gt_boxes = boxes``) or with `set` / `get` / `has` / `remove`. All fields must
    have the same length, which is the number of instances.

    Indexing selects instances in every field at once: an int gives an `Instances` of length 1,
    and a slice, a bool mask or a tensor of indices gives the selected instances.
    """

    def __init__(self, image_size: tuple[int, int], **kwargs: Any) -> None:
        """Create the instances of one image.

        Args:
            image_size: (height, width) of the image.
            **kwargs: fields to set, by name.
        """
        self._image_size = image_size
        self._fields: dict[str, Any] = {}
        for name, value in kwargs.items():
            self.set(name, value)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return self._image_size

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        if name == "_fields" or name not in self._fields:
            raise AttributeError(f"Cannot find field '{name}' in the given Instances!")
        return self._fields[name]

    def set(self, name: str, value: Any) -> None:
        """Set a field, checking that its length matches the other fields.

        Args:
            name: the field name.
            value: the field value; anything with a length.

        Raises:
            ValueError: if there are other fields and `value` has a different length.
        """
        length = len(value)
        if self._fields and length != len(self):
            raise ValueError(
                f"Cannot set field '{name}' of length {length} on Instances of length "
                f"{len(self)}: every field must have one entry per instance."
            )
        self._fields[name] = value

    def has(self, name: str) -> bool:
        """Return whether the field `name` exists."""
        return name in self._fields

    def remove(self, name: str) -> None:
        """Remove the field `name`."""
        del self._fields[name]

    def get(self, name: str) -> Any:
        """Return the field `name`."""
        return self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        """Return the dict mapping field names to values (not a copy: edits show here)."""
        return self._fields

    def to(self, *args: Any, **kwargs: Any) -> Instances:
        """Return new Instances whose fields with a `to` method have been moved or cast.

        Args:
            *args: passed to each field's `to` (e.g. a device).
            **kwargs: passed to each field's `to`.

        Returns:
            The new Instances; fields without `to` are shared as they are.
        """
        ret = Instances(self._image_size)
        for name, value in self._fields.items():
            if hasattr(value, "to"):
                value = value.to(*args, **kwargs)
            ret.set(name, value)
        return ret

    def __getitem__(self, item: int | slice | torch.Tensor) -> Instances:
        """Select instances in every field.

        Args:
            item: an int, a slice, a bool mask or a tensor of indices.

        Returns:
            The selected Instances; an int gives Instances of length 1.

        Raises:
            IndexError: if an int index is out of range.
        """
        if type(item) is int:
            length = len(self)
            if not -length <= item < length:
                raise IndexError(f"Instances index {item} out of range for length {length}!")
            start = item % length
            item = slice(start, start + 1)
        ret = Instances(self._image_size)
        for name, value in self._fields.items():
            ret.set(name, value[item])
        return ret

    def __len__(self) -> int:
        for value in self._fields.values():
            return len(value)
        raise NotImplementedError("Empty Instances does not support __len__!")

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError("`Instances` object is not iterable!")

    @staticmethod
    def cat(instance_lists: list[Instances]) -> Instances:
        """Concatenate Instances of the same image.

        Fields are concatenated by type: Tensors with `torch.cat`, lists by chaining, and any
        other type through its `cat` classmethod or staticmethod (`Boxes`, `BitMasks`, ...).
        A single element is returned as it is.

        Args:
            instance_lists: a non-empty list of Instances with equal `image_size` and the same
                fields.

        Returns:
            The concatenated Instances.

        Raises:
            ValueError: if the list is empty, image sizes differ, or a field type cannot be
                concatenated.
            TypeError: if an element is not Instances.
        """
        if len(instance_lists) == 0:
            raise ValueError("Instances.cat needs at least one Instances.")
        if not all(isinstance(instances, Instances) for instances in instance_lists):
            raise TypeError("Instances.cat takes a list of Instances.")
        if len(instance_lists) == 1:
            return instance_lists[0]
        image_size = instance_lists[0].image_size
        for instances in instance_lists[1:]:
            if instances.image_size != image_size:
                raise ValueError(
                    "Instances.cat needs Instances of the same image size; got "
                    f"{image_size} and {instances.image_size}."
                )
        ret = Instances(image_size)
        for name in instance_lists[0]._fields:
            values = [instances.get(name) for instances in instance_lists]
            first = values[0]
            if isinstance(first, torch.Tensor):
                merged = torch.cat(values, dim=0)
            elif isinstance(first, list):
                merged = list(itertools.chain.from_iterable(values))
            elif hasattr(type(first), "cat"):
                merged = type(first).cat(values)
            else:
                raise ValueError(f"Unsupported type {type(first)} for concatenation")
            ret.set(name, merged)
        return ret

    def __str__(self) -> str:
        num_instances = len(self) if self._fields else 0
        fields = ", ".join(f"{name}: {value}" for name, value in self._fields.items())
        return (
            f"{self.__class__.__name__}(num_instances={num_instances}, "
            f"image_height={self._image_size[0]}, image_width={self._image_size[1]}, "
            f"fields=[{fields}])"
        )

    __repr__ = __str__
