"""Tests of parameter groups, optimizer selection and gradient clipping in segtron.solver."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segtron.config import get_cfg
from segtron.layers import FrozenBatchNorm2d, LayerNorm, NaiveSyncBatchNorm
from segtron.solver import (
    build_optimizer,
    get_default_optimizer_params,
    maybe_add_gradient_clipping,
    reduce_param_groups,
)


class _Net(nn.Module):
    """A conv, two norms, a frozen BN, a module used twice and a frozen conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.frozen_bn = FrozenBatchNorm2d(4)
        self.head = nn.Linear(4, 2)
        self.head_alias = self.head
        self.frozen_conv = nn.Conv2d(4, 4, 1, bias=False)
        self.frozen_conv.weight.requires_grad_(False)


def _group_of(groups: list[dict], param: torch.Tensor) -> dict:
    """The one group holding ``param``, without its "params" entry."""
    found = [g for g in groups if any(p is param for p in g["params"])]
    assert len(found) == 1, f"parameter is in {len(found)} groups"
    return {k: v for k, v in found[0].items() if k != "params"}


def _all_params(groups: list[dict]) -> list[torch.Tensor]:
    return [p for g in groups for p in g["params"]]


def test_norm_and_bias_groups_get_their_hyperparameters():
    net = _Net()
    groups = get_default_optimizer_params(
        net,
        base_lr=0.1,
        weight_decay=1e-4,
        weight_decay_norm=0.0,
        bias_lr_factor=2.0,
        weight_decay_bias=0.5,
    )
    assert _group_of(groups, net.conv.weight) == {"lr": 0.1, "weight_decay": 1e-4}
    assert _group_of(groups, net.head.weight) == {"lr": 0.1, "weight_decay": 1e-4}
    assert _group_of(groups, net.bn.weight) == {"lr": 0.1, "weight_decay": 0.0}
    assert _group_of(groups, net.gn.weight) == {"lr": 0.1, "weight_decay": 0.0}
    # Bias hyper-parameters apply to every bias, norm layers' included (Detectron2's order).
    for bias in (net.conv.bias, net.bn.bias, net.gn.bias, net.head.bias):
        assert _group_of(groups, bias) == {"lr": 0.2, "weight_decay": 0.5}
    # Three distinct sets of hyper-parameters -> three merged groups.
    assert len(groups) == 3


def test_each_trainable_parameter_listed_once_and_frozen_ones_left_out():
    net = _Net()
    params = _all_params(get_default_optimizer_params(net, base_lr=0.1))
    trainable = [p for p in net.parameters() if p.requires_grad]  # net.parameters() dedups
    assert len(params) == len(trainable) == 8
    assert {id(p) for p in params} == {id(p) for p in trainable}
    assert not any(p is net.frozen_conv.weight for p in params)


def test_frozen_batchnorm_has_no_trainable_parameters():
    frozen = FrozenBatchNorm2d(4)
    assert list(frozen.parameters()) == []
    assert get_default_optimizer_params(frozen, base_lr=0.1) == []


@pytest.mark.parametrize(
    "norm",
    [
        nn.BatchNorm1d(4),
        nn.SyncBatchNorm(4),
        nn.InstanceNorm2d(4, affine=True),
        nn.LayerNorm(4),
        NaiveSyncBatchNorm(4),
        LayerNorm(4),
    ],
    ids=lambda m: type(m).__name__,
)
def test_weight_decay_norm_reaches_every_norm_type(norm: nn.Module):
    model = nn.Sequential(nn.Linear(4, 4), norm)
    groups = get_default_optimizer_params(
        model, base_lr=1.0, weight_decay=0.3, weight_decay_norm=0.01
    )
    assert _group_of(groups, norm.weight)["weight_decay"] == 0.01
    assert _group_of(groups, norm.bias)["weight_decay"] == 0.01
    assert _group_of(groups, model[0].weight)["weight_decay"] == 0.3


def test_unset_hyperparameters_are_left_to_the_optimizer():
    net = _Net()
    groups = get_default_optimizer_params(net)
    assert len(groups) == 1
    assert set(groups[0]) == {"params"}


def test_overrides_take_precedence_and_are_not_modified():
    net = _Net()
    overrides = {"weight": {"lr": 0.5}}
    groups = get_default_optimizer_params(
        net, base_lr=0.1, weight_decay_norm=0.0, weight_decay_bias=0.2, overrides=overrides
    )
    assert overrides == {"weight": {"lr": 0.5}}
    assert _group_of(groups, net.conv.weight) == {"lr": 0.5}
    assert _group_of(groups, net.bn.weight) == {"lr": 0.5, "weight_decay": 0.0}
    assert _group_of(groups, net.conv.bias) == {"lr": 0.1, "weight_decay": 0.2}


def test_lr_factor_func_sees_full_names_once():
    net = _Net()
    seen: list[str] = []

    def factor(name: str) -> float:
        seen.append(name)
        return 0.1 if name.startswith("conv.") else 1.0

    groups = get_default_optimizer_params(net, base_lr=2.0, lr_factor_func=factor)
    expected = [name for name, p in net.named_parameters() if p.requires_grad]
    assert sorted(seen) == sorted(expected)
    assert "head.weight" in seen and not any(name.startswith("head_alias") for name in seen)
    assert _group_of(groups, net.conv.weight)["lr"] == pytest.approx(0.2)
    assert _group_of(groups, net.conv.bias)["lr"] == pytest.approx(0.2)
    assert _group_of(groups, net.bn.weight)["lr"] == 2.0


def test_parameter_option_errors():
    net = _Net()
    with pytest.raises(ValueError, match="bias_lr_factor requires base_lr"):
        get_default_optimizer_params(net, bias_lr_factor=2.0)
    with pytest.raises(ValueError, match="lr_factor_func requires base_lr"):
        get_default_optimizer_params(net, lr_factor_func=lambda name: 1.0)
    with pytest.raises(ValueError, match="overrides\\['bias'\\] conflicts"):
        get_default_optimizer_params(
            net, base_lr=0.1, weight_decay_bias=0.0, overrides={"bias": {"lr": 1.0}}
        )


def test_reduce_param_groups_merges_equal_hyperparameters():
    a, b, c = (nn.Parameter(torch.zeros(1)) for _ in range(3))
    groups = reduce_param_groups(
        [
            {"params": [a, b], "lr": 1.0},
            {"params": [b], "weight_decay": 0.0},
            {"params": [c], "lr": 1.0},
        ]
    )
    assert len(groups) == 2
    assert groups[0]["lr"] == 1.0 and "weight_decay" not in groups[0]
    assert [id(p) for p in groups[0]["params"]] == [id(a), id(c)]
    assert groups[1] == {"lr": 1.0, "weight_decay": 0.0, "params": [b]}


def test_build_optimizer_default_is_sgd_with_config_values():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.02
    cfg.SOLVER.NESTEROV = True
    net = _Net()
    opt = build_optimizer(cfg, net)
    assert type(opt) is torch.optim.SGD
    assert opt.defaults["momentum"] == 0.9
    assert opt.defaults["nesterov"] is True
    assert opt.defaults["weight_decay"] == cfg.SOLVER.WEIGHT_DECAY
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_param[id(net.conv.weight)]["weight_decay"] == 1e-4
    assert by_param[id(net.conv.weight)]["lr"] == 0.02
    assert by_param[id(net.bn.weight)]["weight_decay"] == 0.0


@pytest.mark.parametrize(
    "name, expected", [("adamw", torch.optim.AdamW), ("Adam", torch.optim.Adam)]
)
def test_build_optimizer_adam_variants_use_betas(name: str, expected: type):
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = name
    cfg.SOLVER.BETAS = (0.5, 0.9)
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    opt = build_optimizer(cfg, _Net())
    assert type(opt) is expected
    assert opt.defaults["betas"] == (0.5, 0.9)
    assert opt.defaults["weight_decay"] == 0.05


def test_build_optimizer_unknown_name():
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = "RMSprop"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER 'RMSprop'.*SGD, ADAM, ADAMW"):
        build_optimizer(cfg, _Net())


class _TwoParams(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(2))
        self.b = nn.Parameter(torch.zeros(1))
        self.unused = nn.Parameter(torch.zeros(1))


def _step_with_grads(clip_type: str | None, norm_type: float = 2.0) -> _TwoParams:
    """One plain SGD step (lr 1) with gradients a = [3, -4], b = [0.6] under the given clipping."""
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 1.0
    cfg.SOLVER.MOMENTUM = 0.0
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = clip_type is not None
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type or "value"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = norm_type
    model = _TwoParams()
    opt = build_optimizer(cfg, model)
    model.a.grad = torch.tensor([3.0, -4.0])
    model.b.grad = torch.tensor([0.6])  # model.unused keeps no gradient
    opt.step()
    return model


def test_no_clipping_when_disabled():
    model = _step_with_grads(None)
    torch.testing.assert_close(model.a.grad, torch.tensor([3.0, -4.0]))
    torch.testing.assert_close(model.a.data, torch.tensor([-3.0, 4.0]))


def test_clip_by_value():
    model = _step_with_grads("value")
    torch.testing.assert_close(model.a.grad, torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(model.b.grad, torch.tensor([0.6]))
    torch.testing.assert_close(model.a.data, torch.tensor([-1.0, 1.0]))
    assert model.unused.grad is None


def test_clip_by_norm_is_per_parameter():
    model = _step_with_grads("norm")
    torch.testing.assert_close(model.a.grad, torch.tensor([0.6, -0.8]))  # norm 5 -> 1
    torch.testing.assert_close(model.b.grad, torch.tensor([0.6]))  # norm 0.6, untouched
    torch.testing.assert_close(model.a.data, torch.tensor([-0.6, 0.8]))


def test_clip_by_max_norm():
    model = _step_with_grads("norm", norm_type=float("inf"))
    torch.testing.assert_close(model.a.grad, torch.tensor([0.75, -1.0]))


def test_clip_full_model_norm():
    model = _step_with_grads("full_model")
    total = (3.0**2 + 4.0**2 + 0.6**2) ** 0.5
    torch.testing.assert_close(model.a.grad, torch.tensor([3.0, -4.0]) / total)
    torch.testing.assert_close(model.b.grad, torch.tensor([0.6]) / total)
    all_grads = torch.cat([model.a.grad, model.b.grad])
    torch.testing.assert_close(all_grads.norm(), torch.tensor(1.0))
    torch.testing.assert_close(model.b.data, torch.tensor([-0.6]) / total)


def test_clipping_an_optimizer_class():
    cfg = get_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    clipping_sgd = maybe_add_gradient_clipping(cfg, torch.optim.SGD)
    assert issubclass(clipping_sgd, torch.optim.SGD) and clipping_sgd is not torch.optim.SGD
    param = nn.Parameter(torch.zeros(2))
    opt = clipping_sgd([param], lr=1.0)
    param.grad = torch.tensor([2.0, -0.25])
    opt.step()
    torch.testing.assert_close(param.data, torch.tensor([-0.5, 0.25]))


def test_unknown_clip_type():
    cfg = get_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "global"
    with pytest.raises(
        ValueError, match="CLIP_GRADIENTS.CLIP_TYPE 'global'.*'value', 'norm', 'full_model'"
    ):
        build_optimizer(cfg, _TwoParams())
