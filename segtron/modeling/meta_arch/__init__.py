"""Meta-architectures (whole models) and their registry, with the heads that only they use.

Importing this package registers ``GeneralizedRCNN``, ``ProposalNetwork``, ``PanopticFPN`` and
``SemanticSegmentor`` in ``META_ARCH_REGISTRY`` and ``SemSegFPNHead`` in
``SEM_SEG_HEADS_REGISTRY``.
"""

from .build import META_ARCH_REGISTRY, build_model
from .panoptic_fpn import PanopticFPN, combine_semantic_and_instance_outputs
from .rcnn import GeneralizedRCNN, ProposalNetwork
from .semantic_seg import (
    SEM_SEG_HEADS_REGISTRY,
    SemanticSegmentor,
    SemSegFPNHead,
    build_sem_seg_head,
)

__all__ = [
    "META_ARCH_REGISTRY",
    "SEM_SEG_HEADS_REGISTRY",
    "GeneralizedRCNN",
    "PanopticFPN",
    "ProposalNetwork",
    "SemSegFPNHead",
    "SemanticSegmentor",
    "build_model",
    "build_sem_seg_head",
    "combine_semantic_and_instance_outputs",
]
