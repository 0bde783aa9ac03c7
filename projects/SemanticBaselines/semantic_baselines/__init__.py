"""segtron.projects.semantic_baselines: classic semantic segmentation baselines.

FCN-32s/16s/8s (:class:`FCNHead` on the core VGG-16 or a ResNet), U-Net (:class:`UNet`
backbone), SegNet (:class:`SegNet` backbone on the core VGG-16) with :class:`PixelClassifierHead`,
all run by the core ``SemanticSegmentor``; and :class:`ClassicalSegmentor` (Otsu, k-means,
GrabCut) for training-free reference points. Importing the package registers them; their
config keys come from :func:`add_semantic_baselines_config`.
"""

from .classical import CLASSICAL_METHODS, ClassicalSegmentor, fit_class_model_on_dataset
from .classical_methods import ClassModel
from .config import add_semantic_baselines_config
from .fcn import BilinearUpsample, FCNHead, bilinear_kernel
from .heads import PixelClassifierHead, align_to_size, semantic_loss
from .segnet import SegNet, build_segnet_vgg16_backbone
from .unet import UNet, build_unet_backbone, unet_valid_output_size

__all__ = [
    "CLASSICAL_METHODS",
    "BilinearUpsample",
    "ClassModel",
    "ClassicalSegmentor",
    "FCNHead",
    "PixelClassifierHead",
    "SegNet",
    "UNet",
    "add_semantic_baselines_config",
    "align_to_size",
    "bilinear_kernel",
    "build_segnet_vgg16_backbone",
    "build_unet_backbone",
    "fit_class_model_on_dataset",
    "semantic_loss",
    "unet_valid_output_size",
]
