"""Config keys of the semantic baselines: ``add_semantic_baselines_config``.

Adds the nodes ``MODEL.FCN``, ``MODEL.UNET``, ``MODEL.PIXEL_CLASSIFIER`` and
``MODEL.CLASSICAL``; SegNet's encoder reads the core ``MODEL.VGG`` node. Existing keys are never
changed, so the function may be applied to any config, any number of times.
"""

from __future__ import annotations

from typing import Any

from segtron.config import add_missing_keys

__all__ = ["add_semantic_baselines_config"]

_DEFAULTS: dict[str, dict[str, Any]] = {
    # FCN heads (FCNHead): fc6/fc7 as convolutions on the coarsest input feature (FCN's
    # 7x7 and 1x1 convolutions of 4096 channels with dropout 0.5); FC_CHANNELS 0 scores the
    # coarsest feature directly (e.g. on a ResNet).
    "FCN": {"FC_CHANNELS": 4096, "FC_KERNEL_SIZE": 7, "DROPOUT": 0.5},
    # U-Net backbone (build_unet_backbone): number of 2x2 poolings, channels of the first level
    # (doubled at each level), 3x3 convs padded (True) or valid as in the paper (False: the
    # input is mirror-padded so the output covers it), norm after each conv ("" as in the paper).
    "UNET": {"DEPTH": 4, "BASE_CHANNELS": 64, "PADDING": True, "NORM": ""},
    # PixelClassifierHead: kernel size of the conv predicting the classes (U-Net 1, SegNet 3);
    # an optional auxiliary 1x1 classifier in training on a coarse backbone feature (U-Net's
    # "bottleneck", SegNet's "vgg5"; "" for none) and the weight of its loss; CLASS_WEIGHTS, one
    # per class, weight the pixels of each class in both losses (SegNet's median frequency
    # balancing, U-Net's class-frequency weights; empty: unweighted).
    "PIXEL_CLASSIFIER": {
        "KERNEL_SIZE": 1,
        "AUX_IN_FEATURE": "",
        "AUX_LOSS_WEIGHT": 0.4,
        "CLASS_WEIGHTS": [],
    },
    # ClassicalSegmentor: METHOD "otsu", "kmeans" or "grabcut". Segments are named with class
    # statistics of colour and height measured on up to TRAIN_IMAGES images of DATASETS.TRAIN[0].
    "CLASSICAL": {
        "METHOD": "otsu",
        "TRAIN_IMAGES": 50,
        # Name each connected component of a segment separately.
        "SPLIT_COMPONENTS": True,
        "KMEANS_K": 4,
        "KMEANS_ATTEMPTS": 3,
        "GRABCUT_ITERS": 5,
        # GrabCut's initial rectangle leaves this fraction of each side as sure background.
        "GRABCUT_MARGIN": 0.1,
    },
}


def add_semantic_baselines_config(cfg: Any) -> None:
    """Add the semantic baselines' keys to `cfg` (those missing only; nothing is changed).

    Args:
        cfg: a config from ``segtron.config.get_cfg``, not frozen.
    """
    add_missing_keys(cfg.MODEL, _DEFAULTS)
