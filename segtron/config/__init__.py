"""Configuration: ``get_cfg()`` with Detectron2's keys and defaults, and ``@configurable``."""

from segtron.config.config import (
    CfgNode,
    ConfigKeyError,
    add_missing_keys,
    configurable,
    get_cfg,
    global_cfg,
    set_global_cfg,
)

__all__ = [
    "CfgNode",
    "ConfigKeyError",
    "add_missing_keys",
    "configurable",
    "get_cfg",
    "global_cfg",
    "set_global_cfg",
]
