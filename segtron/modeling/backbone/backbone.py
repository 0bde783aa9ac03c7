"""``Backbone``: the abstract base class of every feature extractor in segtron.

A backbone maps an image batch to a dict of named feature maps and describes those maps
(channels and stride) through :meth:`Backbone.output_shape`, so that the heads built on top of it
can be sized without running it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from segtron.layers import ShapeSpec

__all__ = ["Backbone"]


class Backbone(nn.Module, ABC):
    """Abstract base class of network backbones.

    Subclasses implement :meth:`forward` and fill ``_out_features`` (the names they return),
    ``_out_feature_channels`` and ``_out_feature_strides`` (dicts keyed by those names), which
    the default :meth:`output_shape` reads. Their ``__init__`` may take any arguments.
    """

    @abstractmethod
    def forward(self, *args: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the feature maps.

        Returns:
            A dict mapping a feature name (e.g. "res2") to its tensor.
        """

    @property
    def size_divisibility(self) -> int:
        """Integer that input height and width must be multiples of, or 0 for no constraint.

        Encoder-decoder backbones whose lateral connections add maps of neighbouring
        resolutions (such as FPN) need inputs padded to their largest stride.
        """
        return 0

    @property
    def padding_constraints(self) -> dict[str, int]:
        """Padding the input should receive, beyond :attr:`size_divisibility`.

        Returns:
            A dict with any of the keys "size_divisibility" and "square_size" (pad to a square
            of this side when positive); empty when there is no constraint.
        """
        return {}

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Describe the returned feature maps.

        Returns:
            A dict mapping each output name to a :class:`ShapeSpec` with its channels and stride.
        """
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }
