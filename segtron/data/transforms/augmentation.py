"""The augmentation API: policies that look at their inputs and return a deterministic transform.

An `Augmentation` draws random parameters (possibly from the image, boxes or label map) and
returns an fvcore `Transform`; applying that transform to every piece of data keeps image,
label map, boxes and polygons aligned. Mirrors ``detectron2.data.transforms.augmentation``.
"""

from __future__ import annotations

import inspect
import pprint
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from fvcore.transforms.transform import Transform, TransformList

__all__ = [
    "AugInput",
    "Augmentation",
    "AugmentationList",
    "StandardAugInput",
    "apply_augmentations",
    "apply_transform_gens",
]


def _check_img_dtype(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"Augmentations need the image as a numpy array, got {type(img)}.")
    if np.issubdtype(img.dtype, np.integer) and img.dtype != np.uint8:
        raise TypeError(f"An integer image must be uint8, got {img.dtype}.")
    if img.ndim not in (2, 3):
        raise ValueError(f"An image must be H×W or H×W×C, got shape {img.shape}.")


def _get_aug_input_args(aug: Augmentation, aug_input: Any) -> list[Any]:
    """Fetch from `aug_input` the attributes named by ``aug.input_args``.

    An augmentation that keeps the default ``input_args == ("image",)`` but whose
    ``get_transform`` declares several named parameters receives those attributes instead.
    """
    names = aug.input_args
    if names == ("image",):
        params = list(inspect.signature(aug.get_transform).parameters.values())
        if len(params) > 1:
            variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            names = tuple(p.name for p in params if p.kind not in variadic)
    args = []
    for name in names:
        if not hasattr(aug_input, name):
            raise AttributeError(
                f"{type(aug).__name__}.get_transform needs '{name}' but the input "
                f"({type(aug_input).__name__}) has no such attribute."
            )
        args.append(getattr(aug_input, name))
    return args


class Augmentation:
    """Base class of augmentations: a policy that returns a `Transform` for its inputs.

    Subclasses implement `get_transform`, whose parameters name the inputs they need
    (``image``, ``boxes``, ``sem_seg``, ...); they can also set ``input_args`` explicitly.
    Calling an augmentation on an `AugInput` draws the transform, applies it in place to the
    input and returns it.
    """

    input_args: tuple[str, ...] = ("image",)

    def _init(self, params: dict[str, Any] | None = None) -> None:
        """Store every entry of `params` (typically ``locals()``) except ``self`` as attributes."""
        if params:
            for key, value in params.items():
                if key != "self" and not key.startswith("_"):
                    setattr(self, key, value)

    def get_transform(self, *args: Any) -> Transform:
        """Return the transform to apply to inputs named by ``input_args``."""
        raise NotImplementedError

    def __call__(self, aug_input: AugInput) -> Transform:
        """Draw a transform for `aug_input`, apply it to the input in place and return it."""
        tfm = self.get_transform(*_get_aug_input_args(self, aug_input))
        if not isinstance(tfm, Transform | TransformList):
            raise TypeError(
                f"{type(self).__name__}.get_transform must return a Transform, got {type(tfm)}."
            )
        aug_input.transform(tfm)
        return tfm

    def _rand_range(
        self, low: float = 1.0, high: float | None = None, size: Any = None
    ) -> np.ndarray | float:
        """A uniform sample in [low, high), or in [0, low) when `high` is None."""
        if high is None:
            low, high = 0, low
        if size is None:
            size = []
        return np.random.uniform(low, high, size)

    def __repr__(self) -> str:
        """``Name(arg=value, ...)`` listing the constructor arguments stored on the object."""
        try:
            sig = inspect.signature(self.__init__)
        except (TypeError, ValueError):
            return super().__repr__()
        parts = []
        for name, param in sig.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or not hasattr(self, name):
                continue
            value = getattr(self, name)
            if param.default is not param.empty and value is param.default:
                continue
            text = pprint.pformat(value)
            if "\n" in text:
                text = "..."
            parts.append(f"{name}={text}")
        return f"{type(self).__name__}({', '.join(parts)})"

    __str__ = __repr__


class _TransformToAug(Augmentation):
    """An augmentation that always returns one fixed transform."""

    def __init__(self, tfm: Transform) -> None:
        self.tfm = tfm

    def get_transform(self, *args: Any) -> Transform:
        return self.tfm

    def __repr__(self) -> str:
        return repr(self.tfm)

    __str__ = __repr__


def _transform_to_aug(tfm_or_aug: Transform | Augmentation) -> Augmentation:
    """Wrap a `Transform` into an `Augmentation` that always returns it; pass augmentations on."""
    if isinstance(tfm_or_aug, Augmentation):
        return tfm_or_aug
    if not isinstance(tfm_or_aug, Transform | TransformList):
        raise TypeError(f"Expected a Transform or an Augmentation, got {type(tfm_or_aug)}.")
    return _TransformToAug(tfm_or_aug)


class AugmentationList(Augmentation):
    """Apply a sequence of augmentations (or fixed transforms) one after the other.

    Each augmentation sees the output of the previous ones; the result is the `TransformList`
    of every transform drawn.
    """

    def __init__(self, augs: Sequence[Augmentation | Transform]) -> None:
        """Create the list.

        Args:
            augs: augmentations or transforms, applied in order.
        """
        super().__init__()
        self.augs = [_transform_to_aug(x) for x in augs]

    def __call__(self, aug_input: AugInput) -> TransformList:
        """Apply every augmentation in order to `aug_input` and return all transforms."""
        return TransformList([aug(aug_input) for aug in self.augs])

    def __repr__(self) -> str:
        return f"AugmentationList[{', '.join(str(x) for x in self.augs)}]"

    __str__ = __repr__


class AugInput:
    """The inputs of augmentations: an image with, optionally, boxes and a label map.

    Attributes:
        image (np.ndarray): H×W or H×W×C, uint8 or floating point.
        boxes (np.ndarray | None): N×4 XYXY_ABS boxes.
        sem_seg (np.ndarray | None): H×W integer label map.
    """

    def __init__(
        self,
        image: np.ndarray,
        *,
        boxes: np.ndarray | None = None,
        sem_seg: np.ndarray | None = None,
    ) -> None:
        """Create the input.

        Args:
            image: the image (H×W or H×W×C; uint8 or floating point).
            boxes: optional N×4 XYXY_ABS boxes.
            sem_seg: optional H×W integer label map.
        """
        _check_img_dtype(image)
        self.image = image
        self.boxes = boxes
        self.sem_seg = sem_seg

    def transform(self, tfm: Transform) -> None:
        """Apply `tfm` in place to the image and to the boxes and label map when present."""
        self.image = tfm.apply_image(self.image)
        if self.boxes is not None:
            self.boxes = tfm.apply_box(self.boxes)
        if self.sem_seg is not None:
            self.sem_seg = tfm.apply_segmentation(self.sem_seg)

    def apply_augmentations(
        self, augmentations: Sequence[Augmentation | Transform]
    ) -> TransformList:
        """Apply augmentations in order to this input; return the transforms drawn."""
        return AugmentationList(augmentations)(self)


StandardAugInput = AugInput


def apply_augmentations(
    augmentations: Sequence[Augmentation | Transform], inputs: AugInput | np.ndarray
) -> tuple[AugInput | np.ndarray, TransformList]:
    """Apply augmentations to an `AugInput` (in place) or to a bare image.

    Args:
        augmentations: augmentations or transforms, applied in order.
        inputs: an `AugInput`, or an image array.

    Returns:
        The augmented input (the new image when `inputs` was an array) and the transforms.
    """
    if isinstance(inputs, np.ndarray):
        aug_input = AugInput(inputs)
        tfms = aug_input.apply_augmentations(augmentations)
        return aug_input.image, tfms
    return inputs, inputs.apply_augmentations(augmentations)


apply_transform_gens: Callable[..., tuple[Any, TransformList]] = apply_augmentations
