"""The meta-architecture registry and :func:`build_model`, which builds the model a config names."""

from __future__ import annotations

from typing import Any

import torch
from fvcore.common.registry import Registry
from torch import nn

__all__ = ["META_ARCH_REGISTRY", "build_model"]

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Registry of meta-architectures (whole models), selected by ``cfg.MODEL.META_ARCHITECTURE``.

A registered object is called as ``obj(cfg)`` and must return an ``nn.Module`` that keeps the
model contract: it takes a list of input dicts and returns a dict of losses in training and a
list of result dicts in inference.
"""


class _UnknownMetaArchError(KeyError):
    """A ``KeyError`` whose message prints as written (``KeyError`` would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _check_device(device: str) -> torch.device:
    """Parse ``MODEL.DEVICE`` and make sure that a CUDA device exists when one is asked for."""
    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"cfg.MODEL.DEVICE = {device!r} is not a valid torch device.") from err
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"cfg.MODEL.DEVICE = {device!r}, but CUDA is not available on this machine. "
            "To run on the CPU, add `MODEL.DEVICE cpu` to the command line (or set "
            "MODEL.DEVICE: cpu in the config file)."
        )
    return parsed


def build_model(cfg: Any) -> nn.Module:
    """Build the model named by ``cfg.MODEL.META_ARCHITECTURE`` and move it to ``MODEL.DEVICE``.

    No weights are loaded: use ``DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)`` for that.

    Args:
        cfg: a config node.

    Returns:
        The model, on ``cfg.MODEL.DEVICE``.

    Raises:
        KeyError: when no meta-architecture is registered under that name; the message lists
            the registered ones and says how a project's architecture gets registered.
        RuntimeError: when ``MODEL.DEVICE`` asks for CUDA and none is available.
    """
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in META_ARCH_REGISTRY:
        registered = sorted(key for key, _ in META_ARCH_REGISTRY)
        raise _UnknownMetaArchError(
            f"cfg.MODEL.META_ARCHITECTURE = {name!r} is not registered in META_ARCH_REGISTRY; "
            f"registered meta-architectures: {registered}. A project's meta-architecture is "
            "registered when its package (segtron.projects.<name>) is imported and its "
            "add_<name>_config(cfg) applied, as tools/train_net.py does for every project."
        )
    device = _check_device(cfg.MODEL.DEVICE)
    model = META_ARCH_REGISTRY.get(name)(cfg)
    return model.to(device)
