"""Saving and loading model weights, including Detectron2, Caffe2 and torchvision files.

:class:`DetectionCheckpointer` is the entry point; ``Checkpointer`` and ``PeriodicCheckpointer``
are fvcore's, re-exported as Detectron2 does.
"""

from fvcore.common.checkpoint import Checkpointer, PeriodicCheckpointer

from segtron.utils.safe_pickle import ForbiddenGlobalError, RestrictedUnpickler, load_pickle

from .c2_model_loading import (
    align_and_update_state_dicts,
    convert_basic_c2_names,
    convert_c2_detectron_names,
)
from .detection_checkpoint import (
    CorruptCheckpointError,
    DetectionCheckpointer,
    IncompatibleCheckpointError,
)
from .torchvision_loading import convert_torchvision_resnet_names, is_torchvision_resnet

__all__ = [
    "Checkpointer",
    "CorruptCheckpointError",
    "DetectionCheckpointer",
    "ForbiddenGlobalError",
    "IncompatibleCheckpointError",
    "PeriodicCheckpointer",
    "RestrictedUnpickler",
    "align_and_update_state_dicts",
    "convert_basic_c2_names",
    "convert_c2_detectron_names",
    "convert_torchvision_resnet_names",
    "is_torchvision_resnet",
    "load_pickle",
]
