"""Normalization layers and the ``get_norm`` factory that builds them from a config name.

Holds :class:`FrozenBatchNorm2d` (fixed statistics and affine parameters, stored as buffers),
:class:`NaiveSyncBatchNorm` (batch norm whose statistics are averaged across processes and which
is plain ``BatchNorm2d`` in a single process), a channels-first :class:`LayerNorm`, and
:func:`get_norm`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn import functional as dist_fn

from segtron.utils import comm

from .wrappers import BatchNorm2d

__all__ = ["FrozenBatchNorm2d", "LayerNorm", "NaiveSyncBatchNorm", "get_norm"]

logger = logging.getLogger(__name__)

_BN_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm)


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and fixed affine parameters.

    ``weight``, ``bias``, ``running_mean`` and ``running_var`` are buffers, not parameters, so
    optimizers never see them. The forward pass is the affine map
    ``(x - running_mean) / sqrt(running_var + eps) * weight + bias`` folded into one scale and
    one shift, so it works for any batch size, including 0. The initial values make the layer
    the identity; Caffe2 checkpoints that carry only ``weight`` and ``bias`` (already folded)
    keep that identity for the statistics.

    Args:
        num_features: number of channels.
        eps: added to the variance.
    """

    _version = 3

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the frozen affine transform to an (N, C, ...) tensor."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        view = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.to(x.dtype).view(view) + shift.to(x.dtype).view(view)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Versions before 2 saved no statistics: make them the identity. Versions before 3 used
        # running_var without adding eps: shift it so that the output is unchanged.
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            state_dict.setdefault(prefix + "running_mean", torch.zeros_like(self.running_mean))
            state_dict.setdefault(prefix + "running_var", torch.ones_like(self.running_var))
        if version is not None and version < 3:
            logger.info("FrozenBatchNorm %s is upgraded to version 3.", prefix.rstrip("."))
            state_dict[prefix + "running_var"] = state_dict[prefix + "running_var"] - self.eps
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def __repr__(self) -> str:
        return f"FrozenBatchNorm2d(num_features={self.num_features}, eps={self.eps})"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Replace every ``BatchNorm2d`` / ``SyncBatchNorm`` in ``module`` by a frozen copy.

        Args:
            module: a batch-norm layer or any module containing some.

        Returns:
            A new :class:`FrozenBatchNorm2d` if ``module`` itself is a batch norm; otherwise
            ``module``, converted in place.
        """
        if isinstance(module, _BN_TYPES):
            tensors = [*module.parameters(), *module.buffers()]
            frozen = cls(module.num_features, module.eps).to(tensors[0].device if tensors else None)
            with torch.no_grad():
                if module.affine:
                    frozen.weight.copy_(module.weight)
                    frozen.bias.copy_(module.bias)
                if module.running_mean is not None:
                    frozen.running_mean.copy_(module.running_mean)
                    frozen.running_var.copy_(module.running_var)
            return frozen
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module

    @classmethod
    def convert_frozenbatchnorm2d_to_batchnorm2d(cls, module: nn.Module) -> nn.Module:
        """Replace every :class:`FrozenBatchNorm2d` in ``module`` by a trainable ``BatchNorm2d``.

        Args:
            module: a frozen batch norm or any module containing some.

        Returns:
            A new ``BatchNorm2d`` if ``module`` itself is frozen; otherwise ``module``,
            converted in place.
        """
        if isinstance(module, FrozenBatchNorm2d):
            bn = nn.BatchNorm2d(module.num_features, eps=module.eps)
            with torch.no_grad():
                bn.weight.copy_(module.weight)
                bn.bias.copy_(module.bias)
            bn.running_mean.copy_(module.running_mean)
            bn.running_var.copy_(module.running_var)
            return bn.to(module.weight.device)
        for name, child in module.named_children():
            new_child = cls.convert_frozenbatchnorm2d_to_batchnorm2d(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module


class NaiveSyncBatchNorm(BatchNorm2d):
    """Batch norm whose training statistics are averaged over all processes.

    In a single process (no process group, or world size 1) and in eval mode this is exactly
    ``torch.nn.BatchNorm2d``, so "SyncBN" configs run unchanged on one GPU or on CPU. With
    several processes, the per-channel mean and mean of squares are all-reduced (with gradient)
    and the running statistics are updated from the global values.

    Args:
        *args: as for ``torch.nn.BatchNorm2d``.
        stats_mode: "" weights every process equally (the batch must not be empty); "N"
            weights each process by its batch size and accepts empty batches.
        **kwargs: as for ``torch.nn.BatchNorm2d``.
    """

    def __init__(self, *args: Any, stats_mode: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if stats_mode not in ("", "N"):
            raise ValueError(f'stats_mode must be "" or "N", got {stats_mode!r}')
        self._stats_mode = stats_mode

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalize ``input`` (N, C, H, W) with statistics shared across processes."""
        if comm.get_world_size() == 1 or not self.training:
            return super().forward(input)
        batch, channels = input.shape[0], input.shape[1]
        out_dtype = input.dtype
        if input.dtype == torch.float16:
            input = input.float()
        mean = input.mean(dim=[0, 2, 3])
        meansqr = (input * input).mean(dim=[0, 2, 3])
        world_size = dist.get_world_size()
        if self._stats_mode == "":
            if batch == 0:
                raise ValueError('NaiveSyncBatchNorm(stats_mode="") cannot take an empty batch')
            stats = dist_fn.all_reduce(torch.cat([mean, meansqr])) / world_size
            mean, meansqr = torch.split(stats, channels)
            momentum = self.momentum
        else:
            if batch == 0:
                # Zeros that keep the graph connected to the input.
                local = input.new_zeros(2 * channels + 1) + input.sum()
            else:
                local = torch.cat([mean, meansqr, mean.new_ones(1)]) * batch
            stats = dist_fn.all_reduce(local)
            total = stats[-1].detach()
            momentum = total.clamp(max=1) * self.momentum
            mean, meansqr = torch.split(stats[:-1] / total.clamp(min=1), channels)
        var = meansqr - mean * mean
        scale = self.weight * torch.rsqrt(var + self.eps)
        shift = self.bias - mean * scale
        with torch.no_grad():
            self.running_mean += momentum * (mean.detach() - self.running_mean)
            self.running_var += momentum * (var.detach() - self.running_var)
        out = input * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
        return out.to(out_dtype)


class LayerNorm(nn.Module):
    """Layer norm over the channel dimension of a channels-first (N, C, H, W) tensor.

    Args:
        normalized_shape: number of channels.
        eps: added to the variance.
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize each pixel's channel vector, then scale and shift per channel."""
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


_warned_nn_sync_bn = False


def _nn_sync_batch_norm(channels: int) -> nn.Module:
    global _warned_nn_sync_bn
    if dist.is_available() and dist.is_initialized():
        return nn.SyncBatchNorm(channels)
    if not _warned_nn_sync_bn:
        logger.warning("nnSyncBN needs a process group; none is initialized: using BatchNorm2d.")
        _warned_nn_sync_bn = True
    return BatchNorm2d(channels)


_NORMS: dict[str, Callable[[int], nn.Module]] = {
    "BN": BatchNorm2d,
    "SyncBN": NaiveSyncBatchNorm,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": lambda channels: nn.GroupNorm(32, channels),
    "nnSyncBN": _nn_sync_batch_norm,
    "naiveSyncBN": NaiveSyncBatchNorm,
    "naiveSyncBN_N": lambda channels: NaiveSyncBatchNorm(channels, stats_mode="N"),
    "LN": LayerNorm,
}


def get_norm(norm: str | Callable[[int], nn.Module] | None, out_channels: int) -> nn.Module | None:
    """Build a normalization layer from its name.

    Unlike Detectron2, which maps "SyncBN" to ``torch.nn.SyncBatchNorm``, "SyncBN" here gives
    :class:`NaiveSyncBatchNorm`, which degrades to ``BatchNorm2d`` without a process group. The
    state-dict keys are the same.

    Args:
        norm: None or "" for no normalization; one of "BN", "SyncBN", "FrozenBN", "GN" (32
            groups), "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN"; or a callable that takes
            the channel count and returns a module.
        out_channels: number of channels to normalize.

    Returns:
        The normalization module, or None.
    """
    if norm is None:
        return None
    if isinstance(norm, str):
        if not norm:
            return None
        if norm not in _NORMS:
            raise ValueError(f"Unknown norm {norm!r}; expected one of {sorted(_NORMS)} or ''")
        norm = _NORMS[norm]
    return norm(out_channels)
