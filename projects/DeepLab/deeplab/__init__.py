"""DeepLab (segtron.projects.deeplab): DeepLab v3 / v3+ heads, DeepLabCE, config keys.

Importing this package registers its heads in ``SEM_SEG_HEADS_REGISTRY``.
"""

from .aspp import TrainSizeAvgPool2d, build_aspp
from .augmentation import DeepLabDatasetMapper, build_sem_seg_train_aug
from .config import add_deeplab_config
from .crf import DenseCRF
from .crf_meta_arch import DeepLabCRFSegmentor, add_dense_crf_config
from .loss import DeepLabCE, build_sem_seg_loss
from .semantic_seg import DeepLabV3Head, DeepLabV3PlusHead, upsample_by_stride
from .v1_v2 import DeepLabV1LargeFOVHead, DeepLabV2ASPPHead, add_deeplab_v1_v2_config

__all__ = [
    "DeepLabCE",
    "DeepLabDatasetMapper",
    "DeepLabV3Head",
    "DeepLabV3PlusHead",
    "TrainSizeAvgPool2d",
    "add_deeplab_config",
    "build_aspp",
    "build_sem_seg_loss",
    "build_sem_seg_train_aug",
    "upsample_by_stride",
]
__all__ += [
    "DeepLabCRFSegmentor",
    "DeepLabV1LargeFOVHead",
    "DeepLabV2ASPPHead",
    "DenseCRF",
    "add_deeplab_v1_v2_config",
    "add_dense_crf_config",
]
