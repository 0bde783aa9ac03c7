"""U-Net (Ronneberger, Fischer & Brox, 2015) as a backbone: :class:`UNet`.

The contracting path has ``depth + 1`` levels of two 3×3 conv + ReLU (channels ``base``,
2·base, ..., doubling per level), separated by 2×2 max poolings; the expanding path upsamples
with a 2×2 transposed convolution halving the channels ("up-conv"), concatenates the skip of
the same level and applies two 3×3 conv + ReLU. The backbone returns the last map as ``"unet"``
(stride 1, ``base`` channels) and the deepest map of the contracting path as ``"bottleneck"``
(stride 2**depth), which a head may supervise directly. :class:`~.heads.PixelClassifierHead`
with a 1×1 kernel is the paper's classifier, and ``SemanticSegmentor`` runs the pair.

``padding=True`` (default) pads every 3×3 convolution: the output has the input's size, and the
backbone asks for inputs divisible by 2**depth. ``padding=False`` is the paper's network, with
unpadded ("valid") convolutions and skips center-cropped to the upsampled map; its output is
smaller than its input by a fixed margin (184 pixels for depth 4: 572 → 388). To keep the model
contract (scores for every input pixel) the input is extended by mirroring, as the paper's
overlap-tile strategy does: it is reflect-padded by half the margin on the top/left and enough on
the bottom/right for every pooling to see an even size, and the output is cropped to the input
size, aligned pixel for pixel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from segtron.layers import Conv2d, ShapeSpec, get_norm
from segtron.layers.weight_init import c2_msra_fill
from segtron.modeling import BACKBONE_REGISTRY, Backbone

__all__ = ["UNet", "build_unet_backbone", "reflect_pad", "unet_valid_output_size"]


def unet_valid_output_size(size: int, depth: int) -> int:
    """Output side of the valid-convolution U-Net for an input side, or 0 if it is unusable.

    An input is usable when every 2×2 pooling sees an even, positive size.

    Args:
        size: the input side.
        depth: number of poolings.

    Returns:
        The output side (e.g. 388 for 572 at depth 4), or 0.
    """
    size -= 4
    for _ in range(depth):
        if size <= 0 or size % 2:
            return 0
        size = size // 2 - 4
    if size <= 0:
        return 0
    for _ in range(depth):
        size = 2 * size - 4
    return size


def reflect_pad(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Mirror-pad (left, right, top, bottom), in steps when a pad exceeds the map's size.

    Args:
        x: an (N, C, H, W) map.
        pads: padding of the left, right, top and bottom sides.

    Returns:
        The padded map.
    """
    remaining = list(pads)
    while any(remaining):
        max_w, max_h = x.shape[-1] - 1, x.shape[-2] - 1
        if max_w == 0 or max_h == 0:  # a single row or column cannot be mirrored
            return F.pad(x, tuple(remaining), mode="replicate")
        step = [min(p, m) for p, m in zip(remaining, (max_w, max_w, max_h, max_h))]
        x = F.pad(x, tuple(step), mode="reflect")
        remaining = [p - s for p, s in zip(remaining, step)]
    return x


def _double_conv(in_channels: int, out_channels: int, padding: int, norm: str) -> nn.Sequential:
    convs = []
    for c_in in (in_channels, out_channels):
        conv = Conv2d(
            c_in,
            out_channels,
            3,
            padding=padding,
            bias=not norm,
            norm=get_norm(norm, out_channels),
            activation=F.relu,
        )
        c2_msra_fill(conv)
        convs.append(conv)
    return nn.Sequential(*convs)


class UNet(Backbone):
    """U-Net's contracting and expanding paths; output ``"unet"`` at stride 1.

    Outputs ``"unet"`` and ``"bottleneck"`` (the output of ``down<depth>``).

    Submodules: ``down0`` .. ``down<depth>`` (the levels of the contracting path, each a
    two-conv ``nn.Sequential``), ``up<depth-1>`` .. ``up0`` (the up-convs, transposed 2×2
    convolutions) and ``dec<depth-1>`` .. ``dec0`` (the two convs after each concatenation).

    Args:
        in_channels: input channels.
        base_channels: channels of the first level (64 in the paper).
        depth: number of 2×2 poolings (4 in the paper).
        padding: pad the 3×3 convolutions (True) or not (False, the paper's network; see the
            module docstring for how its smaller output is handled).
        norm: normalization after each 3×3 convolution ("" for none, as in the paper).
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        base_channels: int = 64,
        depth: int = 4,
        padding: bool = True,
        norm: str = "",
    ) -> None:
        super().__init__()
        if depth < 1 or base_channels < 1:
            raise ValueError(
                f"UNet needs depth >= 1 and base_channels >= 1: {depth}, {base_channels}"
            )
        self.depth = depth
        self.padding = padding
        pad = 1 if padding else 0
        widths = [base_channels * 2**level for level in range(depth + 1)]
        c_in = in_channels
        for level, width in enumerate(widths):
            self.add_module(f"down{level}", _double_conv(c_in, width, pad, norm))
            c_in = width
        for level in reversed(range(depth)):
            up = nn.ConvTranspose2d(widths[level + 1], widths[level], kernel_size=2, stride=2)
            c2_msra_fill(up)
            self.add_module(f"up{level}", up)
            self.add_module(
                f"dec{level}", _double_conv(2 * widths[level], widths[level], pad, norm)
            )
        self._out_features = ["unet", "bottleneck"]
        self._out_feature_channels = {"unet": base_channels, "bottleneck": widths[-1]}
        self._out_feature_strides = {"unet": 1, "bottleneck": 2**depth}
        if not padding:
            # The margin lost by valid convolutions, from the smallest usable input side.
            side = next(s for s in range(1, 2 ** (depth + 5)) if unet_valid_output_size(s, depth))
            self.margin = side - unet_valid_output_size(side, depth)

    @property
    def size_divisibility(self) -> int:
        """2**depth with padded convolutions (exact poolings); 0 in valid mode (padded here)."""
        return 2**self.depth if self.padding else 0

    def _valid_input_side(self, side: int) -> int:
        """The smallest usable input side whose output covers ``side`` pixels."""
        size = side + self.margin
        while unet_valid_output_size(size, self.depth) < side:
            size += 1
        return size

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the output map.

        Args:
            x: an (N, C, H, W) tensor; with padded convolutions H and W must be divisible by
                2**depth (``SemanticSegmentor`` pads to ``size_divisibility``).

        Returns:
            ``{"unet": (N, base_channels, H, W) map, "bottleneck": the deepest map}``; in
            valid mode the bottleneck covers the mirror-padded input.
        """
        if x.dim() != 4:
            raise ValueError(f"UNet takes an (N, C, H, W) input, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if self.padding:
            unit = 2**self.depth
            if height % unit or width % unit:
                raise ValueError(
                    f"UNet with padded convolutions needs H and W divisible by 2**depth = {unit}; "
                    f"got {height}x{width}. Pad the input (SemanticSegmentor does so)."
                )
        else:
            half = self.margin // 2
            extra_h = self._valid_input_side(height) - height - half
            extra_w = self._valid_input_side(width) - width - half
            x = reflect_pad(x, (half, extra_w, half, extra_h))
        skips = []
        for level in range(self.depth + 1):
            if level > 0:
                x = F.max_pool2d(x, 2)
            x = getattr(self, f"down{level}")(x)
            skips.append(x)
        for level in reversed(range(self.depth)):
            x = getattr(self, f"up{level}")(x)
            skip = skips[level]
            dy, dx = (skip.shape[-2] - x.shape[-2]) // 2, (skip.shape[-1] - x.shape[-1]) // 2
            skip = skip[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
            x = getattr(self, f"dec{level}")(torch.cat([skip, x], dim=1))
        return {"unet": x[..., :height, :width], "bottleneck": skips[-1]}


@BACKBONE_REGISTRY.register()
def build_unet_backbone(cfg: Any, input_shape: ShapeSpec) -> UNet:
    """Build a :class:`UNet` from ``MODEL.UNET.*`` (DEPTH, BASE_CHANNELS, PADDING, NORM).

    Args:
        cfg: a config node.
        input_shape: shape of the input image (its channels are used).

    Returns:
        The backbone.

    Raises:
        ValueError: for a DEPTH or BASE_CHANNELS below 1, naming the key.
    """
    u = cfg.MODEL.UNET
    for key in ("DEPTH", "BASE_CHANNELS"):
        if not isinstance(u[key], int) or u[key] < 1:
            raise ValueError(f"cfg.MODEL.UNET.{key} = {u[key]!r} must be a positive integer")
    return UNet(
        input_shape.channels,
        base_channels=u.BASE_CHANNELS,
        depth=u.DEPTH,
        padding=u.PADDING,
        norm=u.NORM,
    )
