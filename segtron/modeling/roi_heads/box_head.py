"""Box heads: the per-region feature extractors that feed the box predictor.

Holds ``ROI_BOX_HEAD_REGISTRY``, :func:`build_box_head` and :class:`FastRCNNConvFCHead`, the
head of FPN models. Submodule names (``conv1``, ``fc1``, ``fc2`` ...) are Detectron2's, so
its checkpoints load unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from fvcore.common.registry import Registry
from torch import nn

from segtron.config import configurable
from segtron.layers import Conv2d, ShapeSpec, get_norm
from segtron.layers.weight_init import c2_msra_fill, c2_xavier_fill

__all__ = ["ROI_BOX_HEAD_REGISTRY", "FastRCNNConvFCHead", "build_box_head"]

ROI_BOX_HEAD_REGISTRY = Registry("ROI_BOX_HEAD")
ROI_BOX_HEAD_REGISTRY.__doc__ = """
Registry of box heads, selected by ``cfg.MODEL.ROI_BOX_HEAD.NAME``.

A registered object is called as ``obj(cfg, input_shape)`` with the :class:`ShapeSpec` of the
pooled region features, and returns a module that maps (R, C, H, W) features to per-region
features and has an ``output_shape`` property (a :class:`ShapeSpec`).
"""


@ROI_BOX_HEAD_REGISTRY.register()
class FastRCNNConvFCHead(nn.Sequential):
    """Convolutions (3×3, ReLU) followed by fully connected layers (ReLU) on pooled regions.

    The layers are named ``conv1, conv2, ...``, then ``flatten``, ``fc1``, ``fc_relu1``,
    ``fc2``, ``fc_relu2`` ... as in Detectron2.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        conv_dims: list[int],
        fc_dims: list[int],
        conv_norm: str = "",
    ) -> None:
        """Create the head.

        Args:
            input_shape: channels, height and width of the pooled region features.
            conv_dims: output channels of each convolution (none for an empty list).
            fc_dims: output size of each fully connected layer (none for an empty list).
            conv_norm: normalization after each convolution (see
                :func:`segtron.layers.get_norm`); convolutions have no bias when it is set.

        Raises:
            ValueError: when there is neither a convolution nor a fully connected layer.
        """
        super().__init__()
        if len(conv_dims) + len(fc_dims) == 0:
            raise ValueError("FastRCNNConvFCHead needs at least one conv or fc layer")
        self._output_size: int | tuple[int, int, int] = (
            input_shape.channels,
            input_shape.height,
            input_shape.width,
        )
        self.conv_norm_relus: list[Conv2d] = []
        for k, conv_dim in enumerate(conv_dims):
            conv = Conv2d(
                self._output_size[0],
                conv_dim,
                kernel_size=3,
                padding=1,
                bias=not conv_norm,
                norm=get_norm(conv_norm, conv_dim),
                activation=nn.ReLU(),
            )
            self.add_module(f"conv{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            self._output_size = (conv_dim, self._output_size[1], self._output_size[2])

        self.fcs: list[nn.Linear] = []
        for k, fc_dim in enumerate(fc_dims):
            if k == 0:
                self.add_module("flatten", nn.Flatten())
            fc = nn.Linear(int(np.prod(self._output_size)), fc_dim)
            self.add_module(f"fc{k + 1}", fc)
            self.add_module(f"fc_relu{k + 1}", nn.ReLU())
            self.fcs.append(fc)
            self._output_size = fc_dim

        for layer in self.conv_norm_relus:
            c2_msra_fill(layer)
        for layer in self.fcs:
            c2_xavier_fill(layer)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: ShapeSpec) -> dict[str, Any]:
        """Arguments from ``cfg.MODEL.ROI_BOX_HEAD`` (NUM_CONV, CONV_DIM, NUM_FC, FC_DIM, NORM)."""
        head = cfg.MODEL.ROI_BOX_HEAD
        return {
            "input_shape": input_shape,
            "conv_dims": [head.CONV_DIM] * head.NUM_CONV,
            "fc_dims": [head.FC_DIM] * head.NUM_FC,
            "conv_norm": head.NORM,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layers in order.

        Args:
            x: (R, C, H, W) pooled region features.

        Returns:
            (R, fc_dim) features, or (R, conv_dim, H, W) without fully connected layers.
        """
        for layer in self:
            x = layer(x)
        return x

    @property
    def output_shape(self) -> ShapeSpec:
        """The shape of one region's output: channels only after fc layers, else C, H, W."""
        size = self._output_size
        if isinstance(size, int):
            return ShapeSpec(channels=size)
        return ShapeSpec(channels=size[0], height=size[1], width=size[2])


def build_box_head(cfg: Any, input_shape: ShapeSpec) -> nn.Module:
    """Build the box head named by ``cfg.MODEL.ROI_BOX_HEAD.NAME``.

    Args:
        cfg: a config node.
        input_shape: shape of the pooled region features.

    Returns:
        The box head.
    """
    return ROI_BOX_HEAD_REGISTRY.get(cfg.MODEL.ROI_BOX_HEAD.NAME)(cfg, input_shape)
