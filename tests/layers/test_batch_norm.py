"""Tests for segtron.layers.batch_norm: frozen, synced and layer norms and get_norm."""

import logging

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segtron.layers import FrozenBatchNorm2d, LayerNorm, NaiveSyncBatchNorm, get_norm
from segtron.layers import batch_norm as bn_module


def _random_bn(channels: int = 5) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=1e-3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.2, 3)
    return bn.eval()


def test_frozen_bn_equals_eval_batchnorm_and_uses_buffers():
    torch.manual_seed(0)
    bn = _random_bn()
    frozen = FrozenBatchNorm2d(5, eps=1e-3)
    # A plain dict, as in checkpoint files: no version metadata.
    frozen.load_state_dict(dict(bn.state_dict()), strict=False)
    assert list(frozen.parameters()) == []
    assert set(dict(frozen.named_buffers())) == {"weight", "bias", "running_mean", "running_var"}
    x = torch.randn(3, 5, 7, 4)
    torch.testing.assert_close(frozen(x), bn(x))
    assert frozen(torch.zeros(0, 5, 7, 4)).shape == (0, 5, 7, 4)


def test_frozen_bn_default_is_identity_and_passes_gradient():
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    y = FrozenBatchNorm2d(3)(x)
    torch.testing.assert_close(y, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_frozen_bn_loads_checkpoint_without_statistics():
    # A version-less state dict with folded weight/bias only (Caffe2 style): stats become 0 / 1.
    frozen = FrozenBatchNorm2d(2)
    state = {"weight": torch.tensor([2.0, 3.0]), "bias": torch.tensor([1.0, -1.0])}
    frozen.load_state_dict(state)
    assert frozen.running_mean.tolist() == [0.0, 0.0]
    assert frozen.running_var.tolist() == [1.0, 1.0]
    x = torch.ones(1, 2, 1, 1)
    expected = torch.tensor([2.0, 3.0]) / (1 + 1e-5) ** 0.5 + torch.tensor([1.0, -1.0])
    torch.testing.assert_close(frozen(x).flatten(), expected)


def test_frozen_bn_version_2_running_var_is_shifted_by_eps():
    model = nn.Sequential(FrozenBatchNorm2d(2))
    state = model.state_dict()
    state["0.running_var"] = torch.tensor([4.0, 9.0])
    state._metadata["0"]["version"] = 2
    model.load_state_dict(state)
    torch.testing.assert_close(model[0].running_var, torch.tensor([4.0, 9.0]) - 1e-5)
    state._metadata["0"]["version"] = 3
    model.load_state_dict(state)
    torch.testing.assert_close(model[0].running_var, torch.tensor([4.0, 9.0]))


def test_convert_frozen_batchnorm_recursive_and_back():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 5, 1), _random_bn(5), nn.Sequential(_random_bn(5)))
    model.eval()
    x = torch.randn(2, 3, 3, 5)
    expected = model(x)
    converted = FrozenBatchNorm2d.convert_frozen_batchnorm(model)
    assert converted is model
    assert isinstance(model[1], FrozenBatchNorm2d) and isinstance(model[2][0], FrozenBatchNorm2d)
    assert model[1].eps == 1e-3
    torch.testing.assert_close(model(x), expected)
    single = FrozenBatchNorm2d.convert_frozen_batchnorm(_random_bn(4))
    assert isinstance(single, FrozenBatchNorm2d)

    back = FrozenBatchNorm2d.convert_frozenbatchnorm2d_to_batchnorm2d(model)
    assert type(back[1]) is nn.BatchNorm2d and type(back[2][0]) is nn.BatchNorm2d
    assert back[1].weight.requires_grad
    torch.testing.assert_close(back.eval()(x), expected)


def test_convert_non_affine_batchnorm():
    bn = nn.BatchNorm2d(2, affine=False).eval()
    bn.running_mean.fill_(1.0)
    frozen = FrozenBatchNorm2d.convert_frozen_batchnorm(bn)
    x = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(frozen(x), bn(x))


def test_naive_sync_bn_is_batchnorm_without_process_group():
    torch.manual_seed(2)
    sync = NaiveSyncBatchNorm(4)
    ref = nn.BatchNorm2d(4)
    x = torch.randn(3, 4, 5, 3)
    torch.testing.assert_close(sync(x), ref(x))
    torch.testing.assert_close(sync.running_mean, ref.running_mean)
    torch.testing.assert_close(sync.running_var, ref.running_var)
    sync.eval()
    ref.eval()
    torch.testing.assert_close(sync(x), ref(x))
    with pytest.raises(ValueError):
        NaiveSyncBatchNorm(4, stats_mode="X")


def test_layer_norm_channels_first_matches_functional():
    torch.manual_seed(3)
    ln = LayerNorm(6)
    with torch.no_grad():
        ln.weight.uniform_()
        ln.bias.uniform_()
    x = torch.randn(2, 6, 3, 5)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,), ln.weight, ln.bias, eps=1e-6)
    torch.testing.assert_close(ln(x), expected.permute(0, 3, 1, 2))


def test_get_norm_names():
    assert get_norm(None, 8) is None
    assert get_norm("", 8) is None
    assert type(get_norm("BN", 8)) is nn.BatchNorm2d
    for name in ("SyncBN", "naiveSyncBN"):
        norm = get_norm(name, 8)
        assert type(norm) is NaiveSyncBatchNorm and norm._stats_mode == ""
    assert get_norm("naiveSyncBN_N", 8)._stats_mode == "N"
    assert isinstance(get_norm("FrozenBN", 8), FrozenBatchNorm2d)
    gn = get_norm("GN", 64)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32 and gn.num_channels == 64
    assert isinstance(get_norm("LN", 8), LayerNorm)
    custom = get_norm(lambda c: nn.GroupNorm(2, c), 8)
    assert custom.num_groups == 2
    with pytest.raises(ValueError, match="Unknown norm"):
        get_norm("BatchNorm", 8)


def test_nn_sync_bn_falls_back_to_batchnorm_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(bn_module, "_warned_nn_sync_bn", False)
    with caplog.at_level(logging.WARNING, logger=bn_module.__name__):
        first, second = get_norm("nnSyncBN", 4), get_norm("nnSyncBN", 4)
    assert type(first) is nn.BatchNorm2d and type(second) is nn.BatchNorm2d
    assert sum("nnSyncBN" in r.getMessage() for r in caplog.records) == 1


def _run_as_rank_zero(monkeypatch, sync: NaiveSyncBatchNorm, x, other_rank_input):
    """Run ``sync`` on ``x`` as rank 0 of 2, the other rank holding ``other_rank_input``."""
    monkeypatch.setattr(bn_module.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(bn_module.dist, "get_world_size", lambda group=None: 2)
    captured = []
    monkeypatch.setattr(bn_module.dist_fn, "all_reduce", lambda t: captured.append(t) or t)
    NaiveSyncBatchNorm(sync.num_features, stats_mode=sync._stats_mode)(other_rank_input)
    other = captured[0].detach()
    monkeypatch.setattr(bn_module.dist_fn, "all_reduce", lambda t: t + other)
    return sync(x)


@pytest.mark.parametrize("stats_mode", ["", "N"])
def test_naive_sync_bn_uses_statistics_of_all_processes(monkeypatch, stats_mode):
    torch.manual_seed(4)
    full = torch.randn(4, 3, 5, 3)
    ref = nn.BatchNorm2d(3)
    expected = ref(full)[:2]
    sync = NaiveSyncBatchNorm(3, stats_mode=stats_mode)
    out = _run_as_rank_zero(monkeypatch, sync, full[:2], full[2:])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sync.running_mean, ref.running_mean)
    # The synced running variance is the biased one (BatchNorm2d stores the unbiased one).
    biased_var = full.var(dim=[0, 2, 3], unbiased=False)
    torch.testing.assert_close(sync.running_var, 0.9 + 0.1 * biased_var)


def test_naive_sync_bn_mode_n_weights_by_batch_size_and_accepts_empty(monkeypatch):
    torch.manual_seed(5)
    full = torch.randn(4, 3, 2, 3)
    sync = NaiveSyncBatchNorm(3, stats_mode="N")
    out = _run_as_rank_zero(monkeypatch, sync, full[:3], full[3:])
    torch.testing.assert_close(out, nn.BatchNorm2d(3)(full)[:3], atol=1e-5, rtol=1e-4)
    # The other rank has no samples: this rank's statistics are the global ones.
    sync = NaiveSyncBatchNorm(3, stats_mode="N")
    out = _run_as_rank_zero(monkeypatch, sync, full, full[:0])
    torch.testing.assert_close(out, nn.BatchNorm2d(3)(full), atol=1e-5, rtol=1e-4)
    # This rank has no samples: empty output, no running-statistics update from it alone.
    sync = NaiveSyncBatchNorm(3, stats_mode="N")
    assert _run_as_rank_zero(monkeypatch, sync, full[:0], full[:0]).shape == (0, 3, 2, 3)
    assert sync.running_mean.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="empty batch"):
        _run_as_rank_zero(monkeypatch, NaiveSyncBatchNorm(3), full[:0], full)
