"""Optimizers, gradient clipping and learning-rate schedules, under Detectron2's names.

``build_optimizer`` and ``build_lr_scheduler`` build them from a config;
``get_default_optimizer_params`` gives per-parameter learning rates and weight decays; the
schedules are fvcore param schedulers (``WarmupParamScheduler``) applied by ``LRMultiplier``.
"""

from .build import (
    GradientClipType,
    build_lr_scheduler,
    build_optimizer,
    get_default_optimizer_params,
    maybe_add_gradient_clipping,
    reduce_param_groups,
)
from .lr_scheduler import (
    LRMultiplier,
    PolyParamScheduler,
    WarmupCosineLR,
    WarmupMultiStepLR,
    WarmupParamScheduler,
    WarmupPolyLR,
)

__all__ = [
    "GradientClipType",
    "LRMultiplier",
    "PolyParamScheduler",
    "WarmupCosineLR",
    "WarmupMultiStepLR",
    "WarmupParamScheduler",
    "WarmupPolyLR",
    "build_lr_scheduler",
    "build_optimizer",
    "get_default_optimizer_params",
    "maybe_add_gradient_clipping",
    "reduce_param_groups",
]
