"""Config keys of Panoptic-DeepLab: :func:`add_panoptic_deeplab_config`.

Keys, defaults and meanings follow Detectron2's ``projects/Panoptic-DeepLab``.
"""

from __future__ import annotations

from typing import Any

from segtron.config import add_missing_keys
from segtron.projects.deeplab import add_deeplab_config

__all__ = ["add_panoptic_deeplab_config"]

# (node path, key, default), with Detectron2's defaults.
_KEYS: tuple[tuple[str, str, Any], ...] = (
    # Target generation (PanopticDeeplabDatasetMapper).
    ("INPUT", "GAUSSIAN_SIGMA", 10),
    ("INPUT", "IGNORE_STUFF_IN_OFFSET", True),
    ("INPUT", "SMALL_INSTANCE_AREA", 4096),
    ("INPUT", "SMALL_INSTANCE_WEIGHT", 3),
    ("INPUT", "IGNORE_CROWD_IN_SEMANTIC", False),
    # The semantic head's two extra convs before the predictor, and DeepLabCE's top-k fraction.
    ("MODEL.SEM_SEG_HEAD", "HEAD_CHANNELS", 256),
    ("MODEL.SEM_SEG_HEAD", "LOSS_TOP_K", 0.2),
    # The instance head: a DeepLabV3+ decoder with center and offset branches.
    ("MODEL.INS_EMBED_HEAD", "NAME", "PanopticDeepLabInsEmbedHead"),
    ("MODEL.INS_EMBED_HEAD", "IN_FEATURES", ["res2", "res3", "res5"]),
    ("MODEL.INS_EMBED_HEAD", "PROJECT_FEATURES", ["res2", "res3"]),
    ("MODEL.INS_EMBED_HEAD", "PROJECT_CHANNELS", [32, 64]),
    ("MODEL.INS_EMBED_HEAD", "ASPP_CHANNELS", 256),
    ("MODEL.INS_EMBED_HEAD", "ASPP_DILATIONS", [6, 12, 18]),
    ("MODEL.INS_EMBED_HEAD", "ASPP_DROPOUT", 0.1),
    ("MODEL.INS_EMBED_HEAD", "HEAD_CHANNELS", 32),
    ("MODEL.INS_EMBED_HEAD", "CONVS_DIM", 128),
    ("MODEL.INS_EMBED_HEAD", "COMMON_STRIDE", 4),
    ("MODEL.INS_EMBED_HEAD", "NORM", "SyncBN"),
    ("MODEL.INS_EMBED_HEAD", "CENTER_LOSS_WEIGHT", 200.0),
    ("MODEL.INS_EMBED_HEAD", "OFFSET_LOSS_WEIGHT", 0.01),
    # Post-processing: stuff segments below STUFF_AREA pixels become void; centers above
    # CENTER_THRESHOLD after a NMS_KERNEL max-pool NMS, at most TOP_K_INSTANCE of them.
    ("MODEL.PANOPTIC_DEEPLAB", "STUFF_AREA", 2048),
    ("MODEL.PANOPTIC_DEEPLAB", "CENTER_THRESHOLD", 0.1),
    ("MODEL.PANOPTIC_DEEPLAB", "NMS_KERNEL", 7),
    ("MODEL.PANOPTIC_DEEPLAB", "TOP_K_INSTANCE", 200),
    # Also output "instances" (for AP).
    ("MODEL.PANOPTIC_DEEPLAB", "PREDICT_INSTANCES", True),
    # Must equal MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV (Detectron2 asserts it).
    ("MODEL.PANOPTIC_DEEPLAB", "USE_DEPTHWISE_SEPARABLE_CONV", False),
    # Pad images to multiples of this (e.g. the 640 crop on COCO); -1 uses the backbone's.
    ("MODEL.PANOPTIC_DEEPLAB", "SIZE_DIVISIBILITY", -1),
    # Inference returns [] after the network (to time the network alone).
    ("MODEL.PANOPTIC_DEEPLAB", "BENCHMARK_NETWORK_SPEED", False),
)


def add_panoptic_deeplab_config(cfg: Any) -> None:
    """Add Panoptic-DeepLab's keys (and DeepLab's) to `cfg`; keys already present are kept.

    Added with Detectron2's defaults: ``INPUT.{GAUSSIAN_SIGMA, IGNORE_STUFF_IN_OFFSET,
    SMALL_INSTANCE_AREA, SMALL_INSTANCE_WEIGHT, IGNORE_CROWD_IN_SEMANTIC}``,
    ``MODEL.SEM_SEG_HEAD.{HEAD_CHANNELS, LOSS_TOP_K}``, ``MODEL.INS_EMBED_HEAD.*`` and
    ``MODEL.PANOPTIC_DEEPLAB.*``. Detectron2's function also sets ``SOLVER.OPTIMIZER`` to
    "ADAM"; in segtron that key is a core key (default "SGD") that no project may change, so
    Panoptic-DeepLab configs set ``SOLVER.OPTIMIZER: "ADAM"`` themselves.

    Args:
        cfg: a config node, not frozen.
    """
    add_deeplab_config(cfg)
    add_missing_keys(cfg, {f"{path}.{key}": default for path, key, default in _KEYS})
