"""segtron.projects.solov2: SOLO and SOLOv2, box-free instance segmentation with Matrix NMS.

Importing this package registers the ``SOLOv2`` and ``SOLO`` meta-architectures in
``META_ARCH_REGISTRY``; `add_solov2_config` adds their ``MODEL.SOLOV2.*`` (AdelaiDet's keys and
defaults) and ``MODEL.SOLO.*`` keys. `export_torchscript` exports a SOLOv2 model for a fixed
input size.
"""

from .config import add_solov2_config
from .export import SOLOv2ExportWrapper, export_torchscript
from .heads import SOLOMaskHead, SOLOv2InsHead, SOLOv2MaskHead
from .inference import InferenceParams, masks_to_boxes, solo_inference_single
from .matrix_nms import mask_nms, matrix_nms, point_nms
from .solov2 import SOLO, SOLOv2, dice_loss

__all__ = [
    "SOLO",
    "InferenceParams",
    "SOLOMaskHead",
    "SOLOv2",
    "SOLOv2ExportWrapper",
    "SOLOv2InsHead",
    "SOLOv2MaskHead",
    "add_solov2_config",
    "dice_loss",
    "export_torchscript",
    "mask_nms",
    "masks_to_boxes",
    "matrix_nms",
    "point_nms",
    "solo_inference_single",
]
