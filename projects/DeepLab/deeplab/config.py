"""Config keys of the DeepLab project: :func:`add_deeplab_config`.

The keys, their defaults and their meaning follow Detectron2's ``projects/DeepLab`` project.
"""

from __future__ import annotations

from typing import Any

from segtron.config import add_missing_keys

__all__ = ["add_deeplab_config"]

# Keys this project adds, with Detectron2's defaults, as (node path, key, default).
_DEEPLAB_KEYS: tuple[tuple[str, str, Any], ...] = (
    # Random crops are redrawn (up to 10 times) while one category of the semantic labels
    # covers more than this fraction of the crop; 1.0 disables the constraint.
    ("INPUT.CROP", "SINGLE_CATEGORY_MAX_AREA", 1.0),
    # "hard_pixel_mining" (DeepLabCE on the 20% hardest pixels) or "cross_entropy".
    ("MODEL.SEM_SEG_HEAD", "LOSS_TYPE", "hard_pixel_mining"),
    # DeepLabV3PlusHead: the low-level features fused by the decoder and their projections.
    ("MODEL.SEM_SEG_HEAD", "PROJECT_FEATURES", ["res2"]),
    ("MODEL.SEM_SEG_HEAD", "PROJECT_CHANNELS", [48]),
    # ASPP: channels of every branch, dilations of the three atrous branches (6, 12, 18 at
    # output stride 16; use 12, 24, 36 at output stride 8) and dropout on its output.
    ("MODEL.SEM_SEG_HEAD", "ASPP_CHANNELS", 256),
    ("MODEL.SEM_SEG_HEAD", "ASPP_DILATIONS", [6, 12, 18]),
    ("MODEL.SEM_SEG_HEAD", "ASPP_DROPOUT", 0.1),
    # Depthwise-separable convs in ASPP, and one 5x5 one instead of the two 3x3 fusion convs
    # of the DeepLabV3+ decoder.
    ("MODEL.SEM_SEG_HEAD", "USE_DEPTHWISE_SEPARABLE_CONV", False),
)


def add_deeplab_config(cfg: Any) -> None:
    """Add the DeepLab project's keys to `cfg`, leaving every key it already has unchanged.

    Added: ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA`` and ``MODEL.SEM_SEG_HEAD.`` ``LOSS_TYPE``,
    ``PROJECT_FEATURES``, ``PROJECT_CHANNELS``, ``ASPP_CHANNELS``, ``ASPP_DILATIONS``,
    ``ASPP_DROPOUT``, ``USE_DEPTHWISE_SEPARABLE_CONV``, with Detectron2's defaults.

    Detectron2's ``add_deeplab_config`` also sets ``SOLVER.POLY_LR_POWER``,
    ``SOLVER.POLY_LR_CONSTANT_ENDING``, ``MODEL.RESNETS.RES4_DILATION``,
    ``MODEL.RESNETS.RES5_MULTI_GRID`` and ``MODEL.RESNETS.STEM_TYPE``. In segtron these live in
    the core defaults (`segtron.config.get_cfg`) and are not touched here: a project may not
    change the default of an existing key, since every project's function is applied to every
    config. The core's ResNet defaults are ``RES5_MULTI_GRID [1, 1, 1]`` and ``STEM_TYPE
    "basic"`` (Detectron2's DeepLab project: ``[1, 2, 4]`` and ``"deeplab"``), so DeepLab
    configs set both explicitly, as Detectron2's DeepLab configs already do.

    Args:
        cfg: a config node, not frozen; keys already present (from an earlier call, another
            project or a merged file) keep their values.
    """
    add_missing_keys(cfg, {f"{path}.{key}": default for path, key, default in _DEEPLAB_KEYS})
