"""The backbone registry and :func:`build_backbone`, which builds the one a config names."""

from __future__ import annotations

from typing import Any

from fvcore.common.registry import Registry

from segtron.layers import ShapeSpec

from .backbone import Backbone

__all__ = ["BACKBONE_REGISTRY", "build_backbone"]

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Registry of backbone builders, selected by ``cfg.MODEL.BACKBONE.NAME``.

A registered object is called as ``obj(cfg, input_shape)``, where ``cfg`` is a config node and
``input_shape`` a :class:`segtron.layers.ShapeSpec` describing the input image, and must return
a :class:`Backbone`.
"""


def build_backbone(cfg: Any, input_shape: ShapeSpec | None = None) -> Backbone:
    """Build the backbone named by ``cfg.MODEL.BACKBONE.NAME``.

    Args:
        cfg: a config node.
        input_shape: shape of the input image; by default as many channels as
            ``cfg.MODEL.PIXEL_MEAN`` has entries.

    Returns:
        The backbone.

    Raises:
        KeyError: when no backbone is registered under that name (the message lists the
            registered ones, which fvcore's registry does not).
        TypeError: when the registered builder does not return a :class:`Backbone`.
    """
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    name = cfg.MODEL.BACKBONE.NAME
    if name not in BACKBONE_REGISTRY:
        registered = sorted(key for key, _ in BACKBONE_REGISTRY)
        raise KeyError(
            f"cfg.MODEL.BACKBONE.NAME = {name!r} is not registered in BACKBONE_REGISTRY; "
            f"registered backbones: {registered}"
        )
    backbone = BACKBONE_REGISTRY.get(name)(cfg, input_shape)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"Backbone builder {name!r} returned {type(backbone)}, not a Backbone")
    return backbone
