"""Tests of segtron.solver's learning-rate schedules against their closed-form formulas."""

from __future__ import annotations

import io
import logging
import math
import warnings
from bisect import bisect_right

import pytest
import torch
from fvcore.common.param_scheduler import CosineParamScheduler
from torch import nn

from segtron.config import CfgNode, get_cfg
from segtron.solver import (
    LRMultiplier,
    WarmupCosineLR,
    WarmupMultiStepLR,
    WarmupParamScheduler,
    WarmupPolyLR,
    build_lr_scheduler,
    build_optimizer,
)

BASE_LR = 2.0
MAX_ITER = 100
WARMUP_ITERS = 10
WARMUP_FACTOR = 0.1


def _cfg(name: str, **solver: object) -> CfgNode:
    cfg = get_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME = name
    cfg.SOLVER.BASE_LR = BASE_LR
    cfg.SOLVER.MAX_ITER = MAX_ITER
    cfg.SOLVER.WARMUP_ITERS = WARMUP_ITERS
    cfg.SOLVER.WARMUP_FACTOR = WARMUP_FACTOR
    for key, value in solver.items():
        cfg.SOLVER[key] = value
    return cfg


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE_LR)


def _run(scheduler: torch.optim.lr_scheduler.LRScheduler, iters: int) -> list[float]:
    """The learning rate used at each of ``iters`` iterations (step after optimizer.step)."""
    lrs = []
    for _ in range(iters):
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def _lrs(cfg: CfgNode, iters: int = MAX_ITER) -> list[float]:
    return _run(build_lr_scheduler(cfg, _optimizer()), iters)


def _linear_warmup(i: int, end_value: float) -> float:
    """Multiplier of a linear warmup from WARMUP_FACTOR to ``end_value`` (Detectron2's)."""
    alpha = i / WARMUP_ITERS
    return WARMUP_FACTOR * (1 - alpha) + end_value * alpha


def _assert_schedule(lrs: list[float], multiplier) -> None:
    """Every iteration's lr equals BASE_LR * the closed form: warmup, then ``multiplier``."""
    end_of_warmup = multiplier(WARMUP_ITERS)
    for i, lr in enumerate(lrs):
        expected = _linear_warmup(i, end_of_warmup) if i < WARMUP_ITERS else multiplier(i)
        assert lr == pytest.approx(BASE_LR * expected, rel=1e-9, abs=1e-12), f"iteration {i}"


def test_multistep(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="segtron.solver.build"):
        lrs = _lrs(_cfg("WarmupMultiStepLR", STEPS=(30, 60, 100, 150), GAMMA=0.1))
    assert "ignored" in caplog.text and "SOLVER.STEPS" in caplog.text
    _assert_schedule(lrs, lambda i: 0.1 ** bisect_right([30, 60], i))
    assert lrs[0] == pytest.approx(BASE_LR * WARMUP_FACTOR)
    assert lrs[5] == pytest.approx(BASE_LR * 0.55)
    assert lrs[WARMUP_ITERS] == lrs[29] == pytest.approx(BASE_LR)
    assert lrs[30] == lrs[59] == pytest.approx(BASE_LR * 0.1)
    assert lrs[60] == lrs[99] == pytest.approx(BASE_LR * 0.01)


def test_cosine_to_base_lr_end():
    end = 0.1
    lrs = _lrs(_cfg("WarmupCosineLR", BASE_LR_END=BASE_LR * end))

    def cosine(i: int) -> float:
        return end + 0.5 * (1 - end) * (1 + math.cos(math.pi * i / MAX_ITER))

    _assert_schedule(lrs, cosine)
    assert lrs[WARMUP_ITERS] == pytest.approx(BASE_LR * cosine(WARMUP_ITERS))
    assert lrs[-1] == pytest.approx(BASE_LR * cosine(MAX_ITER - 1))


def test_cosine_rejects_base_lr_end_above_base_lr():
    with pytest.raises(ValueError, match="BASE_LR_END"):
        _lrs(_cfg("WarmupCosineLR", BASE_LR_END=BASE_LR * 2))


def test_step_with_fixed_gamma():
    lrs = _lrs(_cfg("WarmupStepWithFixedGammaLR", NUM_DECAYS=3, GAMMA=0.5))
    _assert_schedule(lrs, lambda i: 0.5 ** (i // 25))
    assert [lrs[i] / BASE_LR for i in (24, 25, 49, 50, 74, 75, 99)] == pytest.approx(
        [1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]
    )


def test_step_with_fixed_gamma_rescaled_after_warmup():
    lrs = _lrs(_cfg("WarmupStepWithFixedGammaLR", NUM_DECAYS=3, GAMMA=0.5, RESCALE_INTERVAL=True))
    # The 90 iterations after the warmup are split into 4 equal parts of 22.5 iterations.
    _assert_schedule(lrs, lambda i: 0.5 ** math.floor((i - WARMUP_ITERS) / 22.5))
    assert [lrs[i] / BASE_LR for i in (32, 33, 54, 55, 77, 78)] == pytest.approx(
        [1, 0.5, 0.5, 0.25, 0.25, 0.125]
    )


@pytest.mark.parametrize("ending", [0.0, 0.05])
def test_poly(ending: float):
    lrs = _lrs(_cfg("WarmupPolyLR", POLY_LR_POWER=0.9, POLY_LR_CONSTANT_ENDING=ending))

    def poly(i: int) -> float:
        return max((1 - i / MAX_ITER) ** 0.9, ending)

    _assert_schedule(lrs, poly)
    assert lrs[WARMUP_ITERS] == pytest.approx(BASE_LR * 0.9**0.9)
    assert lrs[90] == pytest.approx(BASE_LR * 0.1**0.9)
    assert lrs[-1] == pytest.approx(BASE_LR * max(0.01**0.9, ending))


def test_constant_warmup_and_no_warmup():
    lrs = _lrs(_cfg("WarmupPolyLR", WARMUP_METHOD="constant"))
    assert lrs[:WARMUP_ITERS] == pytest.approx([BASE_LR * WARMUP_FACTOR] * WARMUP_ITERS)
    assert lrs[WARMUP_ITERS] == pytest.approx(BASE_LR * 0.9**0.9)
    lrs = _lrs(_cfg("WarmupCosineLR", WARMUP_ITERS=0), iters=2)
    assert lrs[0] == pytest.approx(BASE_LR)


def test_unknown_names():
    with pytest.raises(ValueError, match="WarmupMultiStepLR, .*WarmupPolyLR"):
        _lrs(_cfg("WarmupExpLR"))
    with pytest.raises(ValueError, match="warmup method 'exp'"):
        _lrs(_cfg("WarmupMultiStepLR", WARMUP_METHOD="exp"))


def test_lr_holds_after_max_iter():
    lrs = _lrs(_cfg("WarmupStepWithFixedGammaLR"), iters=MAX_ITER + 5)
    assert lrs[MAX_ITER:] == [lrs[MAX_ITER - 1]] * 5


def test_groups_keep_their_ratio_with_gradient_clipping():
    cfg = _cfg("WarmupCosineLR", BIAS_LR_FACTOR=2.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(cfg, model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler = build_lr_scheduler(cfg, optimizer)
        _run(scheduler, 40)
    by_param = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert by_param[id(model.bias)] == pytest.approx(2 * by_param[id(model.weight)])
    assert by_param[id(model.weight)] == pytest.approx(scheduler.get_last_lr()[0])


@pytest.mark.parametrize(
    "name", ["WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepWithFixedGammaLR", "WarmupPolyLR"]
)
def test_state_dict_round_trip(name: str):
    cfg = _cfg(name, STEPS=(30, 60))
    through = _lrs(cfg)
    k = 37
    first = build_lr_scheduler(cfg, _optimizer())
    _run(first, k)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    resumed = build_lr_scheduler(cfg, _optimizer())  # a fresh optimizer at iteration 0
    resumed.load_state_dict(state)
    assert resumed.get_last_lr() == [through[k]]
    assert _run(resumed, MAX_ITER - k) == through[k:]


def test_lr_multiplier_rejects_plain_callables():
    with pytest.raises(ValueError, match="ParamScheduler"):
        LRMultiplier(_optimizer(), multiplier=lambda where: 1.0, max_iter=10)


def test_warmup_param_scheduler_rescaled():
    schedule = WarmupParamScheduler(CosineParamScheduler(1.0, 0.0), 0.5, 0.2, rescale_interval=True)
    assert schedule(0.0) == pytest.approx(0.5)
    assert schedule(0.1) == pytest.approx(0.75)  # linear from 0.5 to cosine(0.2) = 1
    assert schedule(0.6) == pytest.approx(0.5)  # cosine half-way through the rest


def _legacy_warmup(i: int) -> float:
    if i >= WARMUP_ITERS:
        return 1.0
    alpha = i / WARMUP_ITERS
    return WARMUP_FACTOR * (1 - alpha) + alpha


def test_legacy_multistep_and_cosine():
    kwargs = {"warmup_factor": WARMUP_FACTOR, "warmup_iters": WARMUP_ITERS}
    lrs = _run(WarmupMultiStepLR(_optimizer(), [30, 60], gamma=0.1, **kwargs), MAX_ITER)
    for i, lr in enumerate(lrs):
        expected = BASE_LR * _legacy_warmup(i) * 0.1 ** bisect_right([30, 60], i)
        assert lr == pytest.approx(expected)
    lrs = _run(WarmupCosineLR(_optimizer(), MAX_ITER, **kwargs), MAX_ITER)
    for i, lr in enumerate(lrs):
        expected = BASE_LR * _legacy_warmup(i) * 0.5 * (1 + math.cos(math.pi * i / MAX_ITER))
        assert lr == pytest.approx(expected)
    with pytest.raises(ValueError, match="increasing"):
        WarmupMultiStepLR(_optimizer(), [60, 30])


@pytest.mark.parametrize("ending", [0.0, 0.05])
def test_legacy_poly(ending: float):
    scheduler = WarmupPolyLR(
        _optimizer(),
        MAX_ITER,
        warmup_factor=WARMUP_FACTOR,
        warmup_iters=WARMUP_ITERS,
        power=0.9,
        constant_ending=ending,
    )
    lrs = _run(scheduler, MAX_ITER + 2)
    for i, lr in enumerate(lrs[:MAX_ITER]):
        poly = (1 - i / MAX_ITER) ** 0.9
        if i >= WARMUP_ITERS:
            poly = max(poly, ending)
        assert lr == pytest.approx(BASE_LR * _legacy_warmup(i) * poly)
    assert lrs[MAX_ITER:] == pytest.approx([BASE_LR * ending] * 2)
