"""Namespace under which every project of ``projects/`` is installed, and project discovery.

``projects/<Name>/<package>`` is installed as ``segtron.projects.<package>`` by ``setup.py``
(editable or not), which also lists it under the ``segtron.projects`` entry-point group. The
core never imports from here; tools call `add_project_configs` so that one tool serves every
project: importing a project registers its components, and its ``add_<name>_config(cfg)``
functions add its config keys.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Sequence
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import yaml

from segtron.config import get_cfg

__all__ = ["add_project_configs", "get_config", "load_projects"]

ENTRY_POINT_GROUP = "segtron.projects"
_CONFIG_FUNCTION = re.compile(r"^add_\w+_config$")

logger = logging.getLogger(__name__)


def load_projects() -> list[ModuleType]:
    """Import every installed project (which registers its models), sorted by name.

    Returns:
        The projects' modules.

    Raises:
        ImportError: a project failed to import; the message names it.
    """
    modules = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            modules.append(importlib.import_module(ep.value))
        except ImportError as e:
            raise ImportError(
                f"Project {ep.name!r} ({ep.value}) failed to import: {e}. Re-run "
                "`pip install -e .` if its folder was renamed or removed."
            ) from e
    return modules


def add_project_configs(cfg: Any) -> list[str]:
    """Import every project and apply its ``add_<name>_config(cfg)`` functions to `cfg`.

    Each function is applied once, in the order of the projects' names, even when several
    projects export it.

    Args:
        cfg: a config from `segtron.config.get_cfg`, not frozen.

    Returns:
        The qualified names of the functions applied.
    """
    applied = []
    seen: set[int] = set()
    for module in load_projects():
        for name in sorted(dir(module)):
            func = getattr(module, name)
            # A project that re-exports another project's function (Panoptic-DeepLab reusing
            # DeepLab's) must not apply it a second time, after keys it already changed.
            if _CONFIG_FUNCTION.match(name) and callable(func) and id(func) not in seen:
                seen.add(id(func))
                func(cfg)
                applied.append(f"{module.__name__}.{name}")
    logger.debug(f"Project config functions applied: {applied}")
    return applied


def get_config(config_file: str, opts: Sequence[str] | None = None) -> Any:
    """The config of a tool run: defaults, every project's keys, the file, then `opts`.

    Args:
        config_file: a YAML config (``_BASE_`` inheritance allowed).
        opts: ``KEY VALUE`` overrides from the command line.

    Returns:
        The config, not frozen.

    Raises:
        FileNotFoundError: `config_file` is "" or does not exist.
        ValueError: the file is empty, is not valid YAML, or is not a mapping of config keys.
    """
    if not config_file:
        raise FileNotFoundError(
            "No config file given: pass --config-file, e.g. "
            "--config-file configs/Synthetic/semantic_R_18_FPN.yaml (see configs/)."
        )
    if not os.path.isfile(config_file):
        raise FileNotFoundError(
            f"Config file {config_file!r} does not exist (working directory: {os.getcwd()}); "
            "the configs shipped with segtron are under configs/."
        )
    _check_config_file(config_file)
    cfg = get_cfg()
    add_project_configs(cfg)
    try:
        cfg.merge_from_file(config_file)
    except yaml.YAMLError as e:  # in a _BASE_ file
        raise ValueError(f"Config file {config_file!r} (or a _BASE_ file): {e}") from e
    cfg.merge_from_list(list(opts or []))
    return cfg


def _check_config_file(config_file: str) -> None:
    """Raise a ValueError naming `config_file` when it is empty, not YAML or not a mapping.

    Without this, fvcore fails on such files with a bare TypeError or AttributeError.
    """
    try:
        with open(config_file) as f:
            content = yaml.safe_load(f)
    except yaml.constructor.ConstructorError:
        return  # a YAML tag: CfgNode.merge_from_file explains that one
    except yaml.YAMLError as e:
        raise ValueError(f"Config file {config_file!r} is not valid YAML: {e}") from e
    if content is None:
        raise ValueError(
            f"Config file {config_file!r} is empty (or holds only comments); a config file is a "
            "YAML mapping of config keys, e.g. '_BASE_: Base-Synthetic.yaml'."
        )
    if not isinstance(content, dict):
        raise ValueError(
            f"Config file {config_file!r} must be a YAML mapping of config keys (KEY: value); "
            f"got a value of type {type(content).__name__}."
        )
