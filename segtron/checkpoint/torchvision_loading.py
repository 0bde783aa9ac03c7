"""Recognising torchvision ResNet state dicts and renaming them to Detectron2 names.

torchvision names a ResNet ``conv1``/``bn1``, ``layer1``…``layer4``, ``bnK`` and
``downsample.0/1``; Detectron2 names the same tensors ``stem.conv1``/``stem.conv1.norm``,
``res2``…``res5``, ``convK.norm`` and ``shortcut``/``shortcut.norm``. The classifier (``fc``) and
the BN counters (``num_batches_tracked``) have no Detectron2 counterpart and are dropped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

__all__ = ["convert_torchvision_resnet_names", "is_torchvision_resnet"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_BLOCK_KEY = re.compile(r"^layer[1-4]\.\d+\.(conv|bn)\d\.")

_RULES: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
    (r"^conv1\.", "stem.conv1."),
    (r"^bn1\.", "stem.conv1.norm."),
    (r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}."),
    (r"\.bn(\d)\.", r".conv\1.norm."),
    (r"\.downsample\.0\.", ".shortcut."),
    (r"\.downsample\.1\.", ".shortcut.norm."),
]


def is_torchvision_resnet(keys: Iterable[str]) -> bool:
    """Whether checkpoint keys look like a torchvision ResNet (``layer1.0.conv1.weight``…).

    Args:
        keys: the checkpoint's state dict or its keys.

    Returns:
        True if some key is a torchvision block parameter and the stem is named ``conv1``.
    """
    keys = list(keys)
    return "conv1.weight" in keys and any(_BLOCK_KEY.match(k) for k in keys)


def convert_torchvision_resnet_names(state_dict: Mapping[str, T]) -> dict[str, T]:
    """Rename a torchvision ResNet state dict to Detectron2's ResNet names.

    Args:
        state_dict: torchvision name -> tensor, e.g. from ``torchvision.models.resnet50()``.

    Returns:
        Detectron2 name -> tensor (``stem.conv1.weight``, ``res2.0.conv1.norm.weight``,
        ``res2.0.shortcut.weight``…), without ``fc.*`` and ``num_batches_tracked``.
    """
    converted: dict[str, T] = {}
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith(".num_batches_tracked"):
            continue
        new_key = key
        for pattern, replacement in _RULES:
            new_key = re.sub(pattern, replacement, new_key)
        converted[new_key] = value
    logger.info(
        f"Renamed a torchvision ResNet state dict to Detectron2 names: kept {len(converted)} of "
        f"{len(state_dict)} keys (fc and num_batches_tracked dropped)."
    )
    return converted
