"""PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017) for segtron.

Importing this package registers ``PSPNetHead`` in ``SEM_SEG_HEADS_REGISTRY``; the model is the
core ``SemanticSegmentor`` with a dilated ResNet (``build_resnet_deeplab_backbone``).
"""

from .config import add_pspnet_config
from .head import PSPNetHead, PyramidPoolingModule

__all__ = ["PSPNetHead", "PyramidPoolingModule", "add_pspnet_config"]
