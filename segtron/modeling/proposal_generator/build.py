"""``PROPOSAL_GENERATOR_REGISTRY`` and :func:`build_proposal_generator`."""

from __future__ import annotations

from typing import Any

from fvcore.common.registry import Registry
from torch import nn

from segtron.layers import ShapeSpec

__all__ = ["PROPOSAL_GENERATOR_REGISTRY", "build_proposal_generator"]

PROPOSAL_GENERATOR_REGISTRY = Registry("PROPOSAL_GENERATOR")
PROPOSAL_GENERATOR_REGISTRY.__doc__ = """
Registry of proposal generators, selected by ``cfg.MODEL.PROPOSAL_GENERATOR.NAME``.

A registered object is called as ``obj(cfg, input_shape)``, where ``input_shape`` maps feature
names to :class:`ShapeSpec`; it returns an ``nn.Module``.
"""


def build_proposal_generator(cfg: Any, input_shape: dict[str, ShapeSpec]) -> nn.Module | None:
    """Build the proposal generator named by ``cfg.MODEL.PROPOSAL_GENERATOR.NAME``.

    Args:
        cfg: The config.
        input_shape: The shapes of the backbone's output features, by name.

    Returns:
        The proposal generator, or None for ``"PrecomputedProposals"`` (proposals then come
        with the inputs).
    """
    name = cfg.MODEL.PROPOSAL_GENERATOR.NAME
    if name == "PrecomputedProposals":
        return None
    return PROPOSAL_GENERATOR_REGISTRY.get(name)(cfg, input_shape)
