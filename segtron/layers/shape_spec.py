"""``ShapeSpec``: the channels, size and stride of a feature map, passed between modules."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ShapeSpec"]


@dataclass
class ShapeSpec:
    """Description of a tensor's shape, used to build modules that consume it.

    Every field is optional: a producer fills in what it knows.

    Attributes:
        channels: number of channels.
        height: spatial height.
        width: spatial width.
        stride: total stride with respect to the network input.
    """

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    stride: int | None = None
