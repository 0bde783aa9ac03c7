"""Thin wrappers over torch layers and functions.

Holds :class:`Conv2d` (a convolution with an optional norm and activation), aliases of torch
layers kept under Detectron2's names, and small tensor helpers (``cat``, ``nonzero_tuple``,
``cross_entropy`` that tolerates empty targets, ``shapes_to_tensor``, ``move_device_like``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "BatchNorm2d",
    "Conv2d",
    "ConvTranspose2d",
    "Linear",
    "cat",
    "cross_entropy",
    "interpolate",
    "move_device_like",
    "nonzero_tuple",
    "shapes_to_tensor",
]

ConvTranspose2d = nn.ConvTranspose2d
BatchNorm2d = nn.BatchNorm2d
Linear = nn.Linear
interpolate = F.interpolate


def shapes_to_tensor(x: list[int], device: torch.device | None = None) -> torch.Tensor:
    """Turn a list of sizes into a 1-D tensor in a way that survives tracing and scripting.

    Args:
        x: python ints (eager mode, scripting) or scalar tensors (tracing, where stacking keeps
            the result tied to the traced inputs instead of recording a constant).
        device: device of the result.

    Returns:
        A 1-D tensor holding the sizes.
    """
    if torch.jit.is_scripting():
        return torch.as_tensor(x, device=device)
    if torch.jit.is_tracing():
        if not all(isinstance(t, torch.Tensor) for t in x):
            raise TypeError("shapes_to_tensor expects scalar tensors while tracing")
        stacked = torch.stack(x)
        return stacked if stacked.device == device else stacked.to(device=device)
    return torch.as_tensor(x, device=device)


def cat(tensors: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """``torch.cat`` that returns the tensor itself, without a copy, for a one-element list.

    Args:
        tensors: tensors to concatenate.
        dim: dimension to concatenate along.

    Returns:
        The concatenation.
    """
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"cat expects a list or tuple of tensors, got {type(tensors)}")
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)


def cross_entropy(
    input: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean", **kwargs: Any
) -> torch.Tensor:
    """``F.cross_entropy`` that gives 0 instead of NaN for an empty target with mean reduction.

    The zero is ``input.sum() * 0`` so the result stays connected to the graph.

    Args:
        input: logits, as for ``F.cross_entropy``.
        target: class indices or probabilities.
        reduction: "mean", "sum" or "none".
        **kwargs: forwarded to ``F.cross_entropy`` (``weight``, ``ignore_index``, ...).

    Returns:
        The loss.
    """
    if target.numel() == 0 and reduction == "mean":
        return input.sum() * 0.0
    return F.cross_entropy(input, target, reduction=reduction, **kwargs)


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` followed by an optional normalization and activation.

    Besides the arguments of ``torch.nn.Conv2d`` it takes two keyword arguments:

    Args:
        norm: a normalization module applied after the convolution, or None. It is stored as
            the submodule ``norm`` (state-dict keys ``<name>.norm.weight`` ...).
        activation: a callable applied last, or None.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        norm: nn.Module | None = kwargs.pop("norm", None)
        activation: Callable[[torch.Tensor], torch.Tensor] | None = kwargs.pop("activation", None)
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve, then normalize, then activate."""
        x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def nonzero_tuple(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``x.nonzero(as_tuple=True)``, written so that it can also be scripted.

    Args:
        x: any tensor.

    Returns:
        One index tensor per dimension of ``x`` (one for a 0-dim tensor).
    """
    if torch.jit.is_scripting():
        if x.dim() == 0:
            x = x.unsqueeze(0)
        return x.nonzero().unbind(1)
    return x.nonzero(as_tuple=True)


@torch.jit.script_if_tracing
def move_device_like(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Move ``src`` to the device of ``dst``.

    Scripted when traced, so that the device is not frozen into the trace as a constant.

    Args:
        src: tensor to move.
        dst: tensor whose device to use.

    Returns:
        ``src`` on ``dst.device``.
    """
    return src.to(dst.device)
