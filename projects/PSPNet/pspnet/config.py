"""Config keys of PSPNet: ``add_pspnet_config``.

PSPNet reads the shared semantic-head keys ``MODEL.SEM_SEG_HEAD.*`` (NAME "PSPNetHead",
IN_FEATURES, NUM_CLASSES, IGNORE_VALUE, CONVS_DIM for the 3×3 fusion conv, NORM, LOSS_WEIGHT)
and these keys of its own under ``MODEL.PSPNET``:

- ``BINS``: output sizes of the pyramid pooling module's adaptive average poolings;
- ``DROPOUT``: dropout before the classifiers (main and auxiliary heads);
- ``AUX_IN_FEATURE``: the backbone feature of the auxiliary FCN head ("res4");
- ``AUX_CONVS_DIM``: channels of the auxiliary head's 3×3 conv;
- ``AUX_LOSS_WEIGHT``: weight of the auxiliary loss; 0 builds no auxiliary head.
"""

from __future__ import annotations

from typing import Any

from segtron.config import CfgNode, add_missing_keys

__all__ = ["add_pspnet_config"]

_DEFAULTS: dict[str, Any] = {
    # Zhao et al., "Pyramid Scene Parsing Network" (CVPR 2017): four pyramid levels.
    "BINS": [1, 2, 3, 6],
    "DROPOUT": 0.1,
    "AUX_IN_FEATURE": "res4",
    "AUX_CONVS_DIM": 256,
    "AUX_LOSS_WEIGHT": 0.4,
}


def add_pspnet_config(cfg: CfgNode) -> None:
    """Add the ``MODEL.PSPNET`` keys to `cfg` (in place); keys already present are kept.

    Args:
        cfg: a config from `segtron.config.get_cfg`, not frozen.
    """
    add_missing_keys(cfg, {"MODEL.PSPNET": _DEFAULTS})
