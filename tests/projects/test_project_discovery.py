"""Tests of segtron.projects: discovery through the ``segtron.projects`` entry points, config
functions, and get_config's errors."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import pytest

import segtron.projects as projects
from segtron.config import CfgNode, get_cfg


def _entry_point(name: str, module: str) -> EntryPoint:
    return EntryPoint(name=name, value=module, group=projects.ENTRY_POINT_GROUP)


def add_alpha_config(cfg: CfgNode) -> None:
    cfg.MODEL.ALPHA = CfgNode()
    cfg.MODEL.ALPHA.DEPTH = 3
    cfg.MODEL.ALPHA.CALLS = cfg.MODEL.get("ALPHA_CALLS", 0) + 1
    cfg.MODEL.ALPHA_CALLS = cfg.MODEL.ALPHA.CALLS


def add_beta_config(cfg: CfgNode) -> None:
    cfg.MODEL.BETA = CfgNode({"WIDTH": 8})


def add_beta_extra_config(cfg: CfgNode) -> None:
    cfg.SOLVER.BETA_POLY_POWER = 0.9


@pytest.fixture
def fake_projects(monkeypatch):
    """Two fake installed projects; ``beta`` re-exports ``alpha``'s config function."""
    alpha = types.ModuleType("fake_segtron_project_alpha")
    alpha.add_alpha_config = add_alpha_config
    alpha.add_config = lambda cfg: pytest.fail("not an add_<name>_config function")
    alpha.add_not_callable_config = 3
    alpha.helper_add_x_config_ = lambda cfg: pytest.fail("not an add_<name>_config function")
    beta = types.ModuleType("fake_segtron_project_beta")
    beta.add_beta_config = add_beta_config
    beta.add_beta_extra_config = add_beta_extra_config
    beta.add_alpha_config = add_alpha_config  # as a project reusing another one would
    monkeypatch.setitem(sys.modules, alpha.__name__, alpha)
    monkeypatch.setitem(sys.modules, beta.__name__, beta)
    points = [
        _entry_point("beta", beta.__name__),
        _entry_point("alpha", alpha.__name__),
    ]

    def fake_entry_points(*, group: str):
        return [ep for ep in points if ep.group == group]

    monkeypatch.setattr(projects, "entry_points", fake_entry_points)
    return alpha, beta


def test_load_projects_imports_every_entry_point_sorted(fake_projects) -> None:
    alpha, beta = fake_projects
    assert projects.load_projects() == [alpha, beta]


def test_add_project_configs_applies_every_config_function(fake_projects) -> None:
    cfg = get_cfg()
    applied = projects.add_project_configs(cfg)
    assert applied == [
        "fake_segtron_project_alpha.add_alpha_config",
        "fake_segtron_project_beta.add_beta_config",
        "fake_segtron_project_beta.add_beta_extra_config",
    ]
    assert cfg.MODEL.ALPHA.DEPTH == 3
    assert cfg.MODEL.ALPHA_CALLS == 1  # the re-exported function is applied once
    assert cfg.MODEL.BETA.WIDTH == 8
    assert cfg.SOLVER.BETA_POLY_POWER == 0.9


def test_get_config_merges_project_keys_file_and_opts(fake_projects, tmp_path) -> None:
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text("MODEL:\n  ALPHA:\n    DEPTH: 5\n  BETA:\n    WIDTH: 16\n")
    cfg = projects.get_config(str(config_file), ["MODEL.BETA.WIDTH", "32"])
    assert cfg.MODEL.ALPHA.DEPTH == 5
    assert cfg.MODEL.BETA.WIDTH == 32
    assert not cfg.is_frozen()


def test_a_project_that_fails_to_import_is_named(monkeypatch) -> None:
    monkeypatch.setattr(
        projects,
        "entry_points",
        lambda *, group: [_entry_point("gone", "fake_segtron_project_that_does_not_exist")],
    )
    with pytest.raises(ImportError, match="Project 'gone' .*pip install -e"):
        projects.load_projects()


def test_get_config_errors_for_an_empty_or_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="No config file given: pass --config-file"):
        projects.get_config("")
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError, match=r"Config file '.*nope\.yaml' does not exist"):
        projects.get_config(missing)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        projects.get_config(str(tmp_path))  # a folder is not a config file


def test_get_config_rejects_unknown_keys(tmp_path) -> None:
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text("SOLVER:\n  BASE_LR: 0.5\n")
    cfg = projects.get_config(str(config_file))
    assert cfg.SOLVER.BASE_LR == 0.5
    with pytest.raises(KeyError, match="NOT_A_KEY"):
        projects.get_config(str(config_file), ["SOLVER.NOT_A_KEY", "1"])


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("# just a comment\n", "is empty"),
        ("- SOLVER\n- MODEL\n", "must be a YAML mapping .* type list"),
        ("SOLVER: [unclosed\n", "is not valid YAML"),
    ],
)
def test_get_config_errors_for_a_file_that_is_not_a_config(tmp_path, content, message) -> None:
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        projects.get_config(str(config_file))
    assert str(config_file) in str(info.value)


def test_get_config_names_an_invalid_base_file(tmp_path) -> None:
    (tmp_path / "base.yaml").write_text("SOLVER: {BASE_LR: \n")
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: base.yaml\n")
    with pytest.raises(ValueError, match="child.yaml' \\(or a _BASE_ file\\)"):
        projects.get_config(str(child))
