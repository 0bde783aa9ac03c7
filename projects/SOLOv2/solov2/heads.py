"""The heads of SOLO and SOLOv2, with AdelaiDet's module and parameter names.

- :class:`SOLOv2InsHead`: per grid cell, category scores (``cate_tower`` → ``cate_pred``) and
  SOLOv2's dynamic mask kernels (``kernel_tower`` with CoordConv input → ``kernel_pred``).
- :class:`SOLOv2MaskHead`: the unified mask features, P2–P5 fused at stride 4
  (``convs_all_levels.<i>.conv<j>`` → ``conv_pred``).
- :class:`SOLOMaskHead`: SOLO v1's mask branch, S² masks per level predicted directly.

Parameter names match AdelaiDet's ``adet/modeling/solov2/solov2.py`` so its checkpoints load
with no missing keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SOLOMaskHead", "SOLOv2InsHead", "SOLOv2MaskHead", "add_coord_features"]


def add_coord_features(x: torch.Tensor) -> torch.Tensor:
    """CoordConv input: append x and y coordinates in [-1, 1] as two channels.

    Args:
        x: an (N, C, H, W) tensor.

    Returns:
        (N, C + 2, H, W): `x`, then the x coordinate (along W), then y (along H).
    """
    n, _, h, w = x.shape
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([grid_x, grid_y]).expand(n, -1, -1, -1)
    return torch.cat([x, coords], dim=1)


def _conv_norm_relu(in_channels: int, out_channels: int, norm: str, kernel_size: int = 3) -> list:
    """[conv, GroupNorm(32), ReLU] (no norm for "none"); the conv has a bias only without norm."""
    use_norm = norm == "GN"
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not use_norm
        )
    ]
    if use_norm:
        layers.append(nn.GroupNorm(32, out_channels))
    layers.append(nn.ReLU(inplace=True))
    return layers


def _check_norm(norm: str) -> None:
    if norm not in ("GN", "none"):
        raise ValueError(f"MODEL.SOLOV2.NORM must be 'GN' or 'none'; got {norm!r}.")


def _init_normal(modules: Sequence[nn.Module]) -> None:
    """AdelaiDet's initialization: conv weights N(0, 0.01), biases 0."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    nn.init.constant_(layer.bias, 0)


class SOLOv2InsHead(nn.Module):
    """Category branch and (SOLOv2) kernel branch, applied to every level at its grid size.

    Each level's feature is resized (bilinear) to S×S. The category tower sees the feature, the
    kernel tower the feature with CoordConv channels; both are ``num_convs`` × (3×3 conv,
    GN, ReLU). ``cate_pred`` (3×3) gives C scores per cell, its bias set from ``prior_prob``
    (focal-loss prior); ``kernel_pred`` (3×3) gives E kernel weights per cell.

    Args:
        in_channels: channels of every input level.
        num_classes: C, foreground classes.
        num_kernels: E, dynamic kernel weights per cell; 0 builds no kernel branch (SOLO v1).
        num_grids: S of each level.
        channels: channels of the towers.
        num_convs: convolutions per tower.
        norm: "GN" or "none".
        use_coord_conv: whether the kernel tower gets coordinate channels.
        prior_prob: initial foreground probability of the category scores.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_kernels: int,
        num_grids: Sequence[int],
        channels: int = 512,
        num_convs: int = 4,
        norm: str = "GN",
        use_coord_conv: bool = True,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        _check_norm(norm)
        self.num_grids = tuple(int(s) for s in num_grids)
        self.use_coord_conv = use_coord_conv
        towers = {"cate": in_channels}
        if num_kernels > 0:
            towers["kernel"] = in_channels + (2 if use_coord_conv else 0)
        for name, first_channels in towers.items():
            layers = []
            for i in range(num_convs):
                layers += _conv_norm_relu(first_channels if i == 0 else channels, channels, norm)
            self.add_module(f"{name}_tower", nn.Sequential(*layers))
        self.cate_pred = nn.Conv2d(channels, num_classes, 3, padding=1)
        initialized = [self.cate_tower, self.cate_pred]
        if num_kernels > 0:
            self.kernel_pred = nn.Conv2d(channels, num_kernels, 3, padding=1)
            initialized += [self.kernel_tower, self.kernel_pred]
        else:
            self.kernel_tower = self.kernel_pred = None
        _init_normal(initialized)
        nn.init.constant_(self.cate_pred.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(
        self, features: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Predict the category scores and kernels of every level.

        Args:
            features: one (N, C_in, H_l, W_l) map per level, as many as ``num_grids``.

        Returns:
            ``(cate_preds, kernel_preds)``: per level (N, C, S, S) logits and (N, E, S, S)
            kernels; ``kernel_preds`` is None without a kernel branch.
        """
        cate_preds, kernel_preds = [], []
        for feature, grid in zip(features, self.num_grids):
            if self.kernel_pred is not None and self.use_coord_conv:
                feature = add_coord_features(feature)
            feature = F.interpolate(feature, size=grid, mode="bilinear", align_corners=False)
            if self.kernel_pred is not None:
                kernel_preds.append(self.kernel_pred(self.kernel_tower(feature)))
                if self.use_coord_conv:
                    feature = feature[:, :-2]
            cate_preds.append(self.cate_pred(self.cate_tower(feature)))
        return cate_preds, (kernel_preds if self.kernel_pred is not None else None)


class SOLOv2MaskHead(nn.Module):
    """The unified mask-feature branch of SOLOv2.

    Level i (stride 4·2^i) goes through i × (3×3 conv, GN, ReLU, 2× bilinear upsampling), at
    least one conv; the coarsest level gets CoordConv channels first. The sum at stride 4 goes
    through ``conv_pred`` (1×1 conv to ``num_masks``, GN, ReLU), as in AdelaiDet, which keeps
    that GroupNorm even with norm "none".

    Args:
        in_channels: channels of every input level.
        num_levels: number of input levels, finest (stride 4) first.
        channels: channels of the per-level convs.
        num_masks: E, channels of the mask features.
        norm: "GN" or "none".
    """

    def __init__(
        self, *, in_channels: int, num_levels: int, channels: int, num_masks: int, norm: str
    ) -> None:
        super().__init__()
        _check_norm(norm)
        self.convs_all_levels = nn.ModuleList()
        for i in range(num_levels):
            level = nn.Sequential()
            for j in range(max(i, 1)):
                first = in_channels + (2 if i == num_levels - 1 and i > 0 else 0)
                conv = _conv_norm_relu(first if j == 0 else channels, channels, norm)
                conv[-1] = nn.ReLU(inplace=False)
                level.add_module(f"conv{j}", nn.Sequential(*conv))
                if i > 0:
                    level.add_module(
                        f"upsample{j}",
                        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    )
            self.convs_all_levels.append(level)
        self.conv_pred = nn.Sequential(
            nn.Conv2d(channels, num_masks, 1, bias=norm != "GN"),
            nn.GroupNorm(32, num_masks),
            nn.ReLU(inplace=True),
        )
        self.num_levels = num_levels
        _init_normal([self.convs_all_levels, self.conv_pred])

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fuse the levels into (N, E, H/4, W/4) mask features.

        Args:
            features: ``num_levels`` maps, strides 4, 8, ... (each exactly half the previous
                size, which padding to the backbone's size divisibility guarantees).
        """
        fused = self.convs_all_levels[0](features[0])
        for i in range(1, self.num_levels):
            feature = features[i]
            if i == self.num_levels - 1:
                feature = add_coord_features(feature)
            fused = fused + self.convs_all_levels[i](feature)
        return self.conv_pred(fused)


class SOLOMaskHead(nn.Module):
    """SOLO v1's mask branch: S² mask logits per level, predicted directly.

    A tower shared by the levels (CoordConv input, ``num_convs`` × (3×3 conv, GN, ReLU)), then
    per level l a 1×1 conv ``mask_preds.<l>`` to S_l² channels: channel i·S + j is the mask of
    the object centred in grid cell (i, j). segtron names (no AdelaiDet counterpart).

    Args:
        in_channels: channels of every input level.
        num_grids: S of each level.
        channels: channels of the tower.
        num_convs: convolutions of the tower.
        norm: "GN" or "none".
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_grids: Sequence[int],
        channels: int = 256,
        num_convs: int = 7,
        norm: str = "GN",
    ) -> None:
        super().__init__()
        _check_norm(norm)
        layers = []
        for i in range(num_convs):
            layers += _conv_norm_relu(in_channels + 2 if i == 0 else channels, channels, norm)
        self.mask_tower = nn.Sequential(*layers)
        self.mask_preds = nn.ModuleList(nn.Conv2d(channels, s * s, 1) for s in num_grids)
        _init_normal([self.mask_tower, self.mask_preds])

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Return per level (N, S_l², H_l, W_l) mask logits."""
        return [
            pred(self.mask_tower(add_coord_features(feature)))
            for feature, pred in zip(features, self.mask_preds)
        ]
