"""Transforms and augmentations, as ``detectron2.data.transforms``.

fvcore's deterministic transforms are re-exported here so that one import gives everything.
"""

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

from segtron.data.transforms.augmentation import (
    AugInput,
    Augmentation,
    AugmentationList,
    StandardAugInput,
    apply_augmentations,
    apply_transform_gens,
)
from segtron.data.transforms.augmentation_impl import (
    FixedSizeCrop,
    RandomApply,
    RandomBrightness,
    RandomContrast,
    RandomCrop,
    RandomCrop_CategoryAreaConstraint,
    RandomFlip,
    RandomLighting,
    RandomSaturation,
    Resize,
    ResizeScale,
    ResizeShortestEdge,
)
from segtron.data.transforms.transform import ResizeTransform

__all__ = [
    "AugInput",
    "Augmentation",
    "AugmentationList",
    "BlendTransform",
    "CropTransform",
    "FixedSizeCrop",
    "HFlipTransform",
    "NoOpTransform",
    "PadTransform",
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
    "ResizeTransform",
    "StandardAugInput",
    "Transform",
    "TransformList",
    "VFlipTransform",
    "apply_augmentations",
    "apply_transform_gens",
]
