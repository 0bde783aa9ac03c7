"""Optimizers, gradient clipping and learning-rate schedules built from a config.

:func:`build_optimizer` makes SGD (Detectron2's only choice), Adam or AdamW over the parameter
groups of :func:`get_default_optimizer_params`, wrapped by :func:`maybe_add_gradient_clipping`;
:func:`build_lr_scheduler` makes one of the warmup schedules named by
``SOLVER.LR_SCHEDULER_NAME`` as an :class:`~segtron.solver.lr_scheduler.LRMultiplier`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

import torch
from fvcore.common.param_scheduler import (
    CosineParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
    StepWithFixedGammaParamScheduler,
)

from segtron.config import CfgNode
from segtron.layers import FrozenBatchNorm2d, LayerNorm, NaiveSyncBatchNorm

from .lr_scheduler import LRMultiplier, PolyParamScheduler, WarmupParamScheduler

__all__ = [
    "GradientClipType",
    "build_lr_scheduler",
    "build_optimizer",
    "get_default_optimizer_params",
    "maybe_add_gradient_clipping",
    "reduce_param_groups",
]

logger = logging.getLogger(__name__)

# Modules whose parameters get ``weight_decay_norm``: torch's normalization layers (the lazy
# variants are not subclasses of the others, so they are listed too) and segtron's own.
_NORM_MODULE_TYPES: tuple[type[torch.nn.Module], ...] = (
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d,
    torch.nn.LazyBatchNorm1d,
    torch.nn.LazyBatchNorm2d,
    torch.nn.LazyBatchNorm3d,
    torch.nn.SyncBatchNorm,
    torch.nn.GroupNorm,
    torch.nn.InstanceNorm1d,
    torch.nn.InstanceNorm2d,
    torch.nn.InstanceNorm3d,
    torch.nn.LazyInstanceNorm1d,
    torch.nn.LazyInstanceNorm2d,
    torch.nn.LazyInstanceNorm3d,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
    FrozenBatchNorm2d,
    NaiveSyncBatchNorm,
    LayerNorm,
)

_OPTIMIZERS = ("SGD", "ADAM", "ADAMW")
_LR_SCHEDULERS = (
    "WarmupMultiStepLR",
    "WarmupCosineLR",
    "WarmupStepWithFixedGammaLR",
    "WarmupPolyLR",
)


class GradientClipType(Enum):
    """Values of ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE``.

    VALUE clips each gradient element to [-CLIP_VALUE, CLIP_VALUE]; NORM rescales each
    parameter's gradient whose NORM_TYPE-norm exceeds CLIP_VALUE (Detectron2's two types);
    FULL_MODEL, a segtron addition, rescales all gradients together when the norm of all of
    them exceeds CLIP_VALUE.
    """

    VALUE = "value"
    NORM = "norm"
    FULL_MODEL = "full_model"


def get_default_optimizer_params(
    model: torch.nn.Module,
    base_lr: float | None = None,
    weight_decay: float | None = None,
    weight_decay_norm: float | None = None,
    bias_lr_factor: float | None = 1.0,
    weight_decay_bias: float | None = None,
    lr_factor_func: Callable[[str], float] | None = None,
    overrides: dict[str, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups of ``model`` with per-parameter learning rate and weight decay.

    Each trainable parameter is listed once, even when modules share it; frozen ones
    (``requires_grad=False``) are left out. Hyper-parameters that are None are not set, so the
    optimizer's defaults apply. Groups with equal hyper-parameters are merged
    (:func:`reduce_param_groups`).

    Args:
        model: the model to optimize.
        base_lr: the learning rate of every parameter.
        weight_decay: the weight decay of every parameter.
        weight_decay_norm: the weight decay of the parameters of normalization layers.
        bias_lr_factor: the learning rate of parameters named ``bias`` is
            ``base_lr * bias_lr_factor``.
        weight_decay_bias: the weight decay of parameters named ``bias``.
        lr_factor_func: maps a parameter's full name (as in ``model.named_parameters()``) to a
            factor of ``base_lr``, e.g. for layer-wise decay. (Detectron2 passes a parameter
            of the top-level module as ".name"; segtron passes "name".)
        overrides: hyper-parameters by parameter name within its module, e.g.
            ``{"pos_embed": {"weight_decay": 0.0}}``; they take precedence over all the above.
            The dict is not modified.

    Returns:
        A list of parameter groups for a torch optimizer.

    Raises:
        ValueError: ``bias_lr_factor`` (other than 1) or ``lr_factor_func`` without ``base_lr``,
            or ``overrides`` has a "bias" entry while bias hyper-parameters are also given.
    """
    overrides = dict(overrides or {})
    defaults: dict[str, float] = {}
    if base_lr is not None:
        defaults["lr"] = base_lr
    if weight_decay is not None:
        defaults["weight_decay"] = weight_decay
    bias_overrides: dict[str, float] = {}
    if bias_lr_factor is not None and bias_lr_factor != 1.0:
        if base_lr is None:
            raise ValueError("bias_lr_factor requires base_lr.")
        bias_overrides["lr"] = base_lr * bias_lr_factor
    if weight_decay_bias is not None:
        bias_overrides["weight_decay"] = weight_decay_bias
    if bias_overrides:
        if "bias" in overrides:
            raise ValueError(
                "overrides['bias'] conflicts with bias_lr_factor / weight_decay_bias; set only one."
            )
        overrides["bias"] = bias_overrides
    if lr_factor_func is not None and base_lr is None:
        raise ValueError("lr_factor_func requires base_lr.")

    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            hyperparams = dict(defaults)
            if isinstance(module, _NORM_MODULE_TYPES) and weight_decay_norm is not None:
                hyperparams["weight_decay"] = weight_decay_norm
            if lr_factor_func is not None:
                full_name = f"{module_name}.{param_name}" if module_name else param_name
                hyperparams["lr"] *= lr_factor_func(full_name)
            hyperparams.update(overrides.get(param_name, {}))
            groups.append({"params": [param], **hyperparams})
    return reduce_param_groups(groups)


def reduce_param_groups(params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge parameter groups that have the same hyper-parameters.

    A parameter listed in several groups keeps the hyper-parameters of its last group. The
    merged groups come in the order their hyper-parameters first appear.

    Args:
        params: parameter groups, each with a "params" list and hyper-parameters.

    Returns:
        One group per distinct set of hyper-parameters.
    """
    per_param: dict[int, tuple[torch.Tensor, dict[str, Any]]] = {}
    for group in params:
        hyperparams = {key: value for key, value in group.items() if key != "params"}
        for param in group["params"]:
            previous = per_param.get(id(param), (param, {}))[1]
            per_param[id(param)] = (param, {**previous, **hyperparams})
    merged: dict[tuple[tuple[str, Any], ...], list[torch.Tensor]] = {}
    for param, hyperparams in per_param.values():
        merged.setdefault(tuple(sorted(hyperparams.items())), []).append(param)
    return [{**dict(key), "params": group_params} for key, group_params in merged.items()]


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Build ``cfg.SOLVER.OPTIMIZER`` over ``model``'s parameters, with gradient clipping if set.

    The parameter groups come from :func:`get_default_optimizer_params` with ``SOLVER.BASE_LR``,
    ``WEIGHT_DECAY_NORM``, ``BIAS_LR_FACTOR`` and ``WEIGHT_DECAY_BIAS``; other parameters use
    ``SOLVER.WEIGHT_DECAY``. "SGD" (Detectron2's optimizer) uses ``MOMENTUM`` and ``NESTEROV``;
    "ADAM" and "ADAMW" (segtron additions) use ``BETAS``.

    Args:
        cfg: the config.
        model: the model to optimize.

    Returns:
        The optimizer.

    Raises:
        ValueError: ``SOLVER.OPTIMIZER`` is not one of "SGD", "ADAM", "ADAMW" (in any case).
    """
    solver = cfg.SOLVER
    params = get_default_optimizer_params(
        model,
        base_lr=solver.BASE_LR,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        bias_lr_factor=solver.BIAS_LR_FACTOR,
        weight_decay_bias=solver.WEIGHT_DECAY_BIAS,
    )
    name = str(solver.OPTIMIZER).upper()
    if name == "SGD":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            params,
            lr=solver.BASE_LR,
            momentum=solver.MOMENTUM,
            nesterov=solver.NESTEROV,
            weight_decay=solver.WEIGHT_DECAY,
        )
    elif name in ("ADAM", "ADAMW"):
        optimizer_type = torch.optim.Adam if name == "ADAM" else torch.optim.AdamW
        optimizer = optimizer_type(
            params,
            lr=solver.BASE_LR,
            betas=tuple(solver.BETAS),
            weight_decay=solver.WEIGHT_DECAY,
        )
    else:
        raise ValueError(
            f"Unknown SOLVER.OPTIMIZER {solver.OPTIMIZER!r}; expected one of "
            f"{', '.join(_OPTIMIZERS)} (case-insensitive)."
        )
    return maybe_add_gradient_clipping(cfg, optimizer)


def _gradient_clipper(cfg: CfgNode) -> Callable[[Iterable[torch.Tensor]], None]:
    """The function that clips the gradients of the optimizer's parameters as configured."""
    clip_cfg = cfg.SOLVER.CLIP_GRADIENTS
    try:
        clip_type = GradientClipType(clip_cfg.CLIP_TYPE)
    except ValueError as err:
        allowed = ", ".join(repr(t.value) for t in GradientClipType)
        raise ValueError(
            f"Unknown SOLVER.CLIP_GRADIENTS.CLIP_TYPE {clip_cfg.CLIP_TYPE!r}; expected one of "
            f"{allowed}."
        ) from err
    clip_value = float(clip_cfg.CLIP_VALUE)
    norm_type = float(clip_cfg.NORM_TYPE)

    def clip(params: Iterable[torch.Tensor]) -> None:
        params = [p for p in params if p.grad is not None]
        if not params:
            return
        if clip_type is GradientClipType.VALUE:
            torch.nn.utils.clip_grad_value_(params, clip_value)
        elif clip_type is GradientClipType.NORM:
            for param in params:
                torch.nn.utils.clip_grad_norm_(param, clip_value, norm_type)
        else:
            torch.nn.utils.clip_grad_norm_(params, clip_value, norm_type)

    return clip


def maybe_add_gradient_clipping(
    cfg: CfgNode, optimizer: torch.optim.Optimizer | type[torch.optim.Optimizer]
) -> torch.optim.Optimizer | type[torch.optim.Optimizer]:
    """Make ``optimizer`` clip gradients before each step when ``SOLVER.CLIP_GRADIENTS`` is on.

    CLIP_TYPE "value" clips every gradient element to [-CLIP_VALUE, CLIP_VALUE]; "norm" rescales
    each parameter's gradient separately so that its NORM_TYPE-norm is at most CLIP_VALUE (both
    as in Detectron2); "full_model", a segtron addition, rescales all gradients together so
    that the norm over all parameters is at most CLIP_VALUE.

    Args:
        cfg: the config.
        optimizer: an optimizer instance, whose class is switched to a clipping subclass, or an
            optimizer class, for which a clipping subclass is returned.

    Returns:
        ``optimizer`` unchanged when clipping is disabled, else the clipping optimizer or class.

    Raises:
        ValueError: CLIP_TYPE is not one of "value", "norm", "full_model".
    """
    if not cfg.SOLVER.CLIP_GRADIENTS.ENABLED:
        return optimizer
    optimizer_type = type(optimizer) if isinstance(optimizer, torch.optim.Optimizer) else optimizer
    clip = _gradient_clipper(cfg)

    def step(self: torch.optim.Optimizer, closure: Callable[[], float] | None = None) -> Any:
        clip(itertools.chain.from_iterable(group["params"] for group in self.param_groups))
        return optimizer_type.step(self, closure)

    clipping_type = type(
        optimizer_type.__name__ + "WithGradientClip", (optimizer_type,), {"step": step}
    )
    if isinstance(optimizer, torch.optim.Optimizer):
        optimizer.__class__ = clipping_type
        return optimizer
    return clipping_type


def _multiplier_schedule(cfg: CfgNode) -> ParamScheduler:
    """The schedule of ``SOLVER.LR_SCHEDULER_NAME`` without its warmup."""
    solver = cfg.SOLVER
    name = solver.LR_SCHEDULER_NAME
    if name == "WarmupMultiStepLR":
        steps = [step for step in solver.STEPS if step < solver.MAX_ITER]
        if len(steps) != len(solver.STEPS):
            logger.warning(
                "SOLVER.STEPS %s has values >= SOLVER.MAX_ITER (%d); they are ignored.",
                tuple(solver.STEPS),
                solver.MAX_ITER,
            )
        return MultiStepParamScheduler(
            values=[solver.GAMMA**k for k in range(len(steps) + 1)],
            milestones=steps,
            num_updates=solver.MAX_ITER,
        )
    if name == "WarmupCosineLR":
        end_value = solver.BASE_LR_END / solver.BASE_LR
        if not 0.0 <= end_value <= 1.0:
            raise ValueError(
                f"SOLVER.BASE_LR_END ({solver.BASE_LR_END}) must lie between 0 and "
                f"SOLVER.BASE_LR ({solver.BASE_LR})."
            )
        return CosineParamScheduler(1.0, end_value)
    if name == "WarmupStepWithFixedGammaLR":
        return StepWithFixedGammaParamScheduler(
            base_value=1.0,
            gamma=solver.GAMMA,
            num_decays=solver.NUM_DECAYS,
            num_updates=solver.MAX_ITER,
        )
    if name == "WarmupPolyLR":
        return PolyParamScheduler(solver.POLY_LR_POWER, solver.POLY_LR_CONSTANT_ENDING)
    raise ValueError(
        f"Unknown SOLVER.LR_SCHEDULER_NAME {name!r}; expected one of {', '.join(_LR_SCHEDULERS)}."
    )


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """Build the learning-rate schedule named by ``SOLVER.LR_SCHEDULER_NAME``.

    The schedules multiply each group's base learning rate by:

    * "WarmupMultiStepLR": ``GAMMA ** k`` after the k-th of ``STEPS``; steps at or beyond
      ``MAX_ITER`` are ignored with a warning (Detectron2 keeps a step equal to ``MAX_ITER``
      and then fails; it has no effect anyway);
    * "WarmupCosineLR": a half cosine from 1 to ``BASE_LR_END / BASE_LR``;
    * "WarmupStepWithFixedGammaLR": ``GAMMA`` at ``NUM_DECAYS`` evenly spaced points;
    * "WarmupPolyLR" (the DeepLab project's): ``(1 - iter / MAX_ITER) ** POLY_LR_POWER``, never
      below ``POLY_LR_CONSTANT_ENDING``. Its linear warmup follows :class:`WarmupParamScheduler`
      (a straight line to the poly value at the warmup's end), where the DeepLab project's
      class multiplies the poly value by the warmup factor; the two differ slightly during the
      warmup only.

    Each is preceded by a ``WARMUP_METHOD`` warmup over ``WARMUP_ITERS`` iterations from
    ``WARMUP_FACTOR`` (:class:`WarmupParamScheduler`); ``RESCALE_INTERVAL`` stretches the
    schedule over the iterations after the warmup.

    Args:
        cfg: the config.
        optimizer: the optimizer whose learning rates are scheduled.

    Returns:
        The scheduler, to be stepped once per iteration.

    Raises:
        ValueError: unknown scheduler name or warmup method, or a bad ``BASE_LR_END``.
    """
    solver = cfg.SOLVER
    schedule = WarmupParamScheduler(
        _multiplier_schedule(cfg),
        solver.WARMUP_FACTOR,
        min(solver.WARMUP_ITERS / solver.MAX_ITER, 1.0),
        solver.WARMUP_METHOD,
        solver.RESCALE_INTERVAL,
    )
    return LRMultiplier(optimizer, multiplier=schedule, max_iter=solver.MAX_ITER)
