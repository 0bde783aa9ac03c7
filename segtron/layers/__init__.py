"""Neural-network layers and ops shared by all models, under Detectron2's names.

Convolution wrappers with norm and activation, normalization layers and ``get_norm``,
``ShapeSpec``, CNN blocks, ASPP, deformable convolutions, NMS and ROIAlign (torchvision ops),
and mask pasting.
"""

from .aspp import ASPP
from .batch_norm import FrozenBatchNorm2d, LayerNorm, NaiveSyncBatchNorm, get_norm
from .blocks import CNNBlockBase, DepthwiseSeparableConv2d
from .deform_conv import DeformConv, ModulatedDeformConv
from .mask_ops import paste_masks_in_image
from .nms import batched_nms, nms
from .roi_align import ROIAlign
from .shape_spec import ShapeSpec
from .wrappers import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Linear,
    cat,
    cross_entropy,
    interpolate,
    move_device_like,
    nonzero_tuple,
    shapes_to_tensor,
)

__all__ = [
    "ASPP",
    "BatchNorm2d",
    "CNNBlockBase",
    "Conv2d",
    "ConvTranspose2d",
    "DeformConv",
    "DepthwiseSeparableConv2d",
    "FrozenBatchNorm2d",
    "LayerNorm",
    "Linear",
    "ModulatedDeformConv",
    "NaiveSyncBatchNorm",
    "ROIAlign",
    "ShapeSpec",
    "batched_nms",
    "cat",
    "cross_entropy",
    "get_norm",
    "interpolate",
    "move_device_like",
    "nms",
    "nonzero_tuple",
    "paste_masks_in_image",
    "shapes_to_tensor",
]
