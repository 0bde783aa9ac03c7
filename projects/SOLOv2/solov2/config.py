"""Config keys of SOLO and SOLOv2: ``add_solov2_config``.

``MODEL.SOLOV2.*`` has AdelaiDet's names and defaults (``adet/config/defaults.py``), so
AdelaiDet's ``configs/SOLOv2/*.yaml`` load unchanged. ``MODEL.SOLO.*`` is segtron's: the mask
branch of SOLO v1, which AdelaiDet does not have.
"""

from __future__ import annotations

from typing import Any

from segtron.config import CfgNode, add_missing_keys

__all__ = ["add_solov2_config"]


def _solov2_defaults() -> CfgNode:
    node = CfgNode()
    # Instance branch: the levels, their strides, grids and object scales (sqrt(w * h)).
    node.INSTANCE_IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    node.FPN_INSTANCE_STRIDES = [8, 8, 16, 32, 32]
    node.FPN_SCALE_RANGES = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))
    # Centre region: the box half-sizes times SIGMA around the mass centre.
    node.SIGMA = 0.2
    node.INSTANCE_IN_CHANNELS = 256
    node.INSTANCE_CHANNELS = 512
    node.NUM_INSTANCE_CONVS = 4
    # Deformable towers are not implemented; kept so that configs setting them load.
    node.USE_DCN_IN_INSTANCE = False
    node.TYPE_DCN = "DCN"
    node.NUM_GRIDS = [40, 36, 24, 16, 12]
    node.NUM_CLASSES = 80
    # E: the number of dynamic 1x1 kernel weights predicted per grid cell.
    node.NUM_KERNELS = 256
    node.NORM = "GN"  # "GN" or "none"
    node.USE_COORD_CONV = True
    node.PRIOR_PROB = 0.01
    # Mask-feature branch.
    node.MASK_IN_FEATURES = ["p2", "p3", "p4", "p5"]
    node.MASK_IN_CHANNELS = 256
    node.MASK_CHANNELS = 128
    node.NUM_MASKS = 256
    # Inference.
    node.NMS_PRE = 500
    node.SCORE_THR = 0.1
    node.UPDATE_THR = 0.05
    node.MASK_THR = 0.5
    node.MAX_PER_IMG = 100
    node.NMS_TYPE = "matrix"  # "matrix" or "mask"
    node.NMS_KERNEL = "gaussian"  # "gaussian" or "linear"
    node.NMS_SIGMA = 2
    # Losses.
    node.LOSS = CfgNode()
    node.LOSS.FOCAL_USE_SIGMOID = True
    node.LOSS.FOCAL_ALPHA = 0.25
    node.LOSS.FOCAL_GAMMA = 2.0
    node.LOSS.FOCAL_WEIGHT = 1.0
    node.LOSS.DICE_WEIGHT = 3.0
    return node


def _solo_defaults() -> CfgNode:
    node = CfgNode()
    # SOLO v1 mask branch: a tower shared by the levels (CoordConv input), then one 1x1 conv per
    # level predicting its S^2 masks. The paper's head has 7 convs of 256 channels.
    node.NUM_MASK_CONVS = 7
    node.MASK_TOWER_CHANNELS = 256
    return node


def add_solov2_config(cfg: Any) -> None:
    """Add the keys of SOLO and SOLOv2 (``MODEL.SOLOV2.*``, ``MODEL.SOLO.*``) to `cfg`.

    Only adds keys: a key already present (from an earlier call or another project) keeps its
    value.

    Args:
        cfg: a config from `segtron.config.get_cfg`, not frozen.
    """
    add_missing_keys(cfg.MODEL, CfgNode({"SOLOV2": _solov2_defaults(), "SOLO": _solo_defaults()}))
