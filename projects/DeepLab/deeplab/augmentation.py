"""Training augmentations of Detectron2's DeepLab project and the mapper that applies them."""

from __future__ import annotations

from typing import Any

from segtron.data import DATASET_MAPPER_REGISTRY, DatasetMapper
from segtron.data import transforms as T

__all__ = ["DeepLabDatasetMapper", "build_sem_seg_train_aug"]


def build_sem_seg_train_aug(cfg: Any) -> list[T.Augmentation]:
    """Resize, crop (avoiding crops dominated by one category), then flip.

    Unlike the core ``DatasetMapper``, which crops before it resizes, DeepLab resizes first
    (multi-scale training: INPUT.MIN_SIZE_TRAIN with MIN_SIZE_TRAIN_SAMPLING), so that every
    training crop has INPUT.CROP.SIZE, the size ASPP's image pooling is built for. Use as
    ``DatasetMapper(cfg, is_train=True, augmentations=build_sem_seg_train_aug(cfg))``.

    Args:
        cfg: a config with the DeepLab keys (INPUT.CROP.SINGLE_CATEGORY_MAX_AREA).

    Returns:
        The augmentations, in order.
    """
    augs: list[T.Augmentation] = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        )
    augs.append(T.RandomFlip())
    return augs


@DATASET_MAPPER_REGISTRY.register()
def DeepLabDatasetMapper(cfg: Any, is_train: bool = True) -> DatasetMapper:  # noqa: N802
    """The core `DatasetMapper` with :func:`build_sem_seg_train_aug`'s order in training.

    Selected with ``INPUT.DATASET_MAPPER_NAME: "DeepLabDatasetMapper"`` (the crop-training
    semantic configs of ``configs/`` set it), as Detectron2's DeepLab ``train_net.py`` does.
    """
    if not is_train:
        return DatasetMapper(cfg, False)
    return DatasetMapper(cfg, True, augmentations=build_sem_seg_train_aug(cfg))
