"""Common augmentations: flips, resizes, crops and photometric jitter.

Each class draws random parameters and returns fvcore transforms (or `ResizeTransform`).
Mirrors ``detectron2.data.transforms.augmentation_impl`` for the names in ``__all__``; the
random draws use NumPy's global generator, as in Detectron2, so seeding NumPy reproduces them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from fvcore.transforms.transform import (
    BlendTransform,
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    Transform,
    TransformList,
    VFlipTransform,
)
from PIL import Image

from segtron.data.transforms.augmentation import Augmentation, _transform_to_aug
from segtron.data.transforms.transform import ResizeTransform

__all__ = [
    "FixedSizeCrop",
    "RandomApply",
    "RandomBrightness",
    "RandomContrast",
    "RandomCrop",
    "RandomCrop_CategoryAreaConstraint",
    "RandomFlip",
    "RandomLighting",
    "RandomSaturation",
    "Resize",
    "ResizeScale",
    "ResizeShortestEdge",
]


class RandomApply(Augmentation):
    """Apply a wrapped augmentation or transform with probability `prob`."""

    def __init__(self, tfm_or_aug: Augmentation | Transform, prob: float = 0.5) -> None:
        """Create the augmentation.

        Args:
            tfm_or_aug: what to apply.
            prob: probability of applying it, in [0, 1].
        """
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomApply needs a probability in [0, 1], got {prob}.")
        self.aug = _transform_to_aug(tfm_or_aug)
        self.prob = prob

    def get_transform(self, *args: Any) -> Transform:
        """The wrapped augmentation's transform, or a no-op."""
        if self._rand_range() < self.prob:
            return self.aug.get_transform(*args)
        return NoOpTransform()

    def __call__(self, aug_input: Any) -> Transform:
        """Call the wrapped augmentation on `aug_input` with probability `prob`."""
        if self._rand_range() < self.prob:
            return self.aug(aug_input)
        return NoOpTransform()


class RandomFlip(Augmentation):
    """Flip the image horizontally or vertically with probability `prob`."""

    def __init__(
        self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False
    ) -> None:
        """Create the augmentation.

        Args:
            prob: probability of flipping.
            horizontal: flip left-right.
            vertical: flip top-bottom; exactly one of `horizontal` and `vertical` must be set.
        """
        super().__init__()
        if horizontal == vertical:
            raise ValueError(
                "RandomFlip flips one way: set exactly one of horizontal=True or vertical=True."
            )
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        """An `HFlipTransform`/`VFlipTransform`, or a no-op."""
        h, w = image.shape[:2]
        if self._rand_range() < self.prob:
            return HFlipTransform(w) if self.horizontal else VFlipTransform(h)
        return NoOpTransform()


class Resize(Augmentation):
    """Resize the image to a fixed (h, w)."""

    def __init__(self, shape: int | Sequence[int], interp: int = Image.BILINEAR) -> None:
        """Create the augmentation.

        Args:
            shape: (h, w), or one int for a square output.
            interp: PIL resampling filter.
        """
        super().__init__()
        if isinstance(shape, int):
            shape = (shape, shape)
        shape = tuple(shape)
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        """The resize from the image's size to `shape`."""
        return ResizeTransform(
            image.shape[0], image.shape[1], self.shape[0], self.shape[1], self.interp
        )


class ResizeShortestEdge(Augmentation):
    """Resize so that the short edge has a sampled length, capping the long edge at `max_size`."""

    def __init__(
        self,
        short_edge_length: int | Sequence[int],
        max_size: int = sys.maxsize,
        sample_style: str = "range",
        interp: int = Image.BILINEAR,
    ) -> None:
        """Create the augmentation.

        Args:
            short_edge_length: with ``sample_style="range"``, (min, max) and the length is drawn
                uniformly from [min, max]; with ``"choice"``, the candidates. An int is the
                only length. A drawn length of 0 leaves the image unchanged.
            max_size: upper bound on the long edge after resizing.
            sample_style: ``"range"`` or ``"choice"``.
            interp: PIL resampling filter.
        """
        super().__init__()
        if sample_style not in ("range", "choice"):
            raise ValueError(f"sample_style must be 'range' or 'choice', got {sample_style!r}.")
        self.is_range = sample_style == "range"
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        if self.is_range and len(short_edge_length) != 2:
            raise ValueError(
                "short_edge_length must be two values (min, max) with sample_style='range', "
                f"got {short_edge_length}."
            )
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        """A `ResizeTransform` to the sampled size (a no-op for a sampled length of 0)."""
        h, w = image.shape[:2]
        if self.is_range:
            size = np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1)
        else:
            size = np.random.choice(self.short_edge_length)
        if size == 0:
            return NoOpTransform()
        new_h, new_w = ResizeShortestEdge.get_output_shape(h, w, int(size), self.max_size)
        return ResizeTransform(h, w, new_h, new_w, self.interp)

    @staticmethod
    def get_output_shape(
        oldh: int, oldw: int, short_edge_length: int, max_size: int
    ) -> tuple[int, int]:
        """The (h, w) after resizing the short edge to `short_edge_length`, capped at `max_size`.

        Sizes are rounded to the nearest integer (halves up), as in Detectron2.
        """
        scale = short_edge_length * 1.0 / min(oldh, oldw)
        if oldh < oldw:
            newh, neww = float(short_edge_length), scale * oldw
        else:
            newh, neww = scale * oldh, float(short_edge_length)
        if max(newh, neww) > max_size:
            cap = max_size * 1.0 / max(newh, neww)
            newh, neww = newh * cap, neww * cap
        return int(newh + 0.5), int(neww + 0.5)


class ResizeScale(Augmentation):
    """Resize to a random scale of a target size, keeping the aspect ratio (large-scale jitter).

    The image is scaled so that it fits in ``scale * (target_height, target_width)``, with the
    scale drawn uniformly from [min_scale, max_scale].
    """

    def __init__(
        self,
        min_scale: float,
        max_scale: float,
        target_height: int,
        target_width: int,
        interp: int = Image.BILINEAR,
    ) -> None:
        """Create the augmentation.

        Args:
            min_scale: smallest scale of the target size.
            max_scale: largest scale of the target size.
            target_height: target height.
            target_width: target width.
            interp: PIL resampling filter.
        """
        super().__init__()
        self._init(locals())

    def _get_resize(self, image: np.ndarray, scale: float) -> Transform:
        input_size = np.asarray(image.shape[:2])
        target = np.multiply((self.target_height, self.target_width), scale)
        factor = min(target[0] / input_size[0], target[1] / input_size[1])
        out_h, out_w = np.round(input_size * factor).astype(int)
        return ResizeTransform(
            int(input_size[0]), int(input_size[1]), int(out_h), int(out_w), self.interp
        )

    def get_transform(self, image: np.ndarray) -> Transform:
        """The resize for a freshly drawn scale."""
        return self._get_resize(image, np.random.uniform(self.min_scale, self.max_scale))


class FixedSizeCrop(Augmentation):
    """Crop a random window of `crop_size`; pad up to `crop_size` when the image is smaller.

    Padding goes to the bottom and right, with `pad_value` in the image and `seg_pad_value`
    in label maps.
    """

    def __init__(
        self,
        crop_size: tuple[int, int],
        pad: bool = True,
        pad_value: float = 128.0,
        seg_pad_value: int = 255,
    ) -> None:
        """Create the augmentation.

        Args:
            crop_size: (h, w) of the output.
            pad: pad images smaller than `crop_size`.
            pad_value: image padding value.
            seg_pad_value: label-map padding value.
        """
        super().__init__()
        self._init(locals())

    def _get_crop(self, image: np.ndarray) -> Transform:
        input_h, input_w = image.shape[:2]
        out_h, out_w = self.crop_size
        max_y, max_x = max(input_h - out_h, 0), max(input_w - out_w, 0)
        t = np.random.uniform(0.0, 1.0)
        y0, x0 = int(np.round(max_y * t)), int(np.round(max_x * t))
        return CropTransform(x0, y0, min(out_w, input_w), min(out_h, input_h), input_w, input_h)

    def _get_pad(self, image: np.ndarray) -> Transform:
        input_h, input_w = image.shape[:2]
        out_h, out_w = self.crop_size
        cropped_h, cropped_w = min(input_h, out_h), min(input_w, out_w)
        return PadTransform(
            0,
            0,
            max(out_w - input_w, 0),
            max(out_h - input_h, 0),
            cropped_w,
            cropped_h,
            self.pad_value,
            self.seg_pad_value,
        )

    def get_transform(self, image: np.ndarray) -> TransformList:
        """The crop, followed by the padding when enabled."""
        transforms = [self._get_crop(image)]
        if self.pad:
            transforms.append(self._get_pad(image))
        return TransformList(transforms)


class RandomCrop(Augmentation):
    """Crop a random window whose size is set by `crop_type` and `crop_size`."""

    def __init__(self, crop_type: str, crop_size: Sequence[float]) -> None:
        """Create the augmentation.

        Args:
            crop_type: how `crop_size` (h, w) is read:
                ``"relative"``: fractions of the image size;
                ``"relative_range"``: each fraction drawn uniformly from [crop_size, 1];
                ``"absolute"``: pixels, clipped to the image size;
                ``"absolute_range"``: h and w drawn as integers in [crop_size[0], crop_size[1]],
                clipped to the image size.
            crop_size: two numbers, read according to `crop_type`.
        """
        super().__init__()
        if crop_type not in ("relative_range", "relative", "absolute", "absolute_range"):
            raise ValueError(f"Unknown crop_type {crop_type!r}.")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        """A `CropTransform` of a drawn size at a uniformly drawn position."""
        h, w = image.shape[:2]
        croph, cropw = self.get_crop_size((h, w))
        y0 = np.random.randint(h - croph + 1)
        x0 = np.random.randint(w - cropw + 1)
        return CropTransform(x0, y0, cropw, croph)

    def get_crop_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Draw the (h, w) of the crop for an image of `image_size` (h, w)."""
        h, w = image_size
        if self.crop_type == "relative":
            ch, cw = self.crop_size
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "relative_range":
            low = np.asarray(self.crop_size, dtype=np.float32)
            ch, cw = low + np.random.rand(2) * (1 - low)
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "absolute":
            return min(self.crop_size[0], h), min(self.crop_size[1], w)
        if self.crop_size[0] > self.crop_size[1]:
            raise ValueError(
                f"absolute_range crop needs crop_size (min, max), got {self.crop_size}."
            )
        ch = np.random.randint(min(h, self.crop_size[0]), min(h, self.crop_size[1]) + 1)
        cw = np.random.randint(min(w, self.crop_size[0]), min(w, self.crop_size[1]) + 1)
        return int(ch), int(cw)


class RandomCrop_CategoryAreaConstraint(Augmentation):  # noqa: N801 (Detectron2's name)
    """A `RandomCrop` that avoids crops dominated by one category of the label map.

    Up to 10 crops are drawn; the first one where no single category (other than
    `ignored_category`) covers `single_category_max_area` of the pixels or more, and that holds
    at least two such categories, is used; otherwise the last one drawn.
    """

    def __init__(
        self,
        crop_type: str,
        crop_size: Sequence[float],
        single_category_max_area: float = 1.0,
        ignored_category: int | None = None,
    ) -> None:
        """Create the augmentation.

        Args:
            crop_type: see `RandomCrop`.
            crop_size: see `RandomCrop`.
            single_category_max_area: largest fraction of the crop one category may cover;
                1.0 disables the constraint.
            ignored_category: a label (e.g. 255) not counted.
        """
        super().__init__()
        self.crop_aug = RandomCrop(crop_type, crop_size)
        self._init(locals())

    def get_transform(self, image: np.ndarray, sem_seg: np.ndarray) -> Transform:
        """A `CropTransform` chosen with the label map `sem_seg`."""
        if self.single_category_max_area >= 1.0:
            return self.crop_aug.get_transform(image)
        h, w = sem_seg.shape
        for _ in range(10):
            croph, cropw = self.crop_aug.get_crop_size((h, w))
            y0 = np.random.randint(h - croph + 1)
            x0 = np.random.randint(w - cropw + 1)
            labels, counts = np.unique(
                sem_seg[y0 : y0 + croph, x0 : x0 + cropw], return_counts=True
            )
            if self.ignored_category is not None:
                counts = counts[labels != self.ignored_category]
            if len(counts) > 1 and counts.max() < counts.sum() * self.single_category_max_area:
                break
        return CropTransform(x0, y0, cropw, croph)


class RandomBrightness(Augmentation):
    """Scale pixel values by a factor drawn from [intensity_min, intensity_max]."""

    def __init__(self, intensity_min: float, intensity_max: float) -> None:
        """Create the augmentation.

        Args:
            intensity_min: smallest factor (1 keeps the image).
            intensity_max: largest factor.
        """
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        """A blend with black."""
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        return BlendTransform(src_image=0, src_weight=1 - w, dst_weight=w)


class RandomContrast(Augmentation):
    """Blend the image with its mean by a factor drawn from [intensity_min, intensity_max]."""

    def __init__(self, intensity_min: float, intensity_max: float) -> None:
        """Create the augmentation.

        Args:
            intensity_min: smallest factor (1 keeps the image, 0 gives its mean).
            intensity_max: largest factor.
        """
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        """A blend with the image's mean value."""
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        return BlendTransform(src_image=image.mean(), src_weight=1 - w, dst_weight=w)


class RandomSaturation(Augmentation):
    """Blend an RGB image with its grayscale version by a factor from [min, max]."""

    def __init__(self, intensity_min: float, intensity_max: float) -> None:
        """Create the augmentation.

        Args:
            intensity_min: smallest factor (1 keeps the image, 0 gives grayscale).
            intensity_max: largest factor.
        """
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        """A blend with the grayscale image (ITU-R 601 luma weights)."""
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError("RandomSaturation only works on 3-channel RGB images.")
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        gray = image.dot([0.299, 0.587, 0.114])[:, :, np.newaxis]
        return BlendTransform(src_image=gray, src_weight=1 - w, dst_weight=w)


class RandomLighting(Augmentation):
    """AlexNet-style PCA lighting noise with ImageNet's RGB eigenvectors and eigenvalues."""

    def __init__(self, scale: float) -> None:
        """Create the augmentation.

        Args:
            scale: standard deviation of the per-component weights.
        """
        super().__init__()
        self._init(locals())
        self.eigen_vecs = np.array(
            [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
        )
        self.eigen_vals = np.array([0.2175, 0.0188, 0.0045])

    def get_transform(self, image: np.ndarray) -> Transform:
        """Add a drawn RGB offset to every pixel."""
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError("RandomLighting only works on 3-channel RGB images.")
        weights = np.random.normal(scale=self.scale, size=3)
        offset = self.eigen_vecs.dot(weights * self.eigen_vals)
        return BlendTransform(src_image=offset, src_weight=1.0, dst_weight=1.0)
