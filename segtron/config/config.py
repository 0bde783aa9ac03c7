"""segtron's ``CfgNode``, ``add_missing_keys`` and the ``@configurable`` decorator.

``CfgNode`` is fvcore's yacs-style config node with stricter, friendlier merging: YAML files are
always read with the safe loader (a Python tag is an error, never executed code), and a key that
does not exist in the defaults is reported with the file it came from and the closest valid keys.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import yaml
from fvcore.common.config import CfgNode as _FvcoreCfgNode

__all__ = [
    "CfgNode",
    "ConfigKeyError",
    "add_missing_keys",
    "configurable",
    "get_cfg",
    "global_cfg",
    "set_global_cfg",
]

BASE_KEY = "_BASE_"


class ConfigKeyError(KeyError):
    """A config file or override names a key that the config does not have."""

    def __str__(self) -> str:
        return str(self.args[0])


class CfgNode(_FvcoreCfgNode):
    """A config node that merges YAML files and ``KEY VALUE`` lists safely and strictly."""

    @classmethod
    def load_yaml_with_base(cls, filename: str, allow_unsafe: bool = False) -> dict[str, Any]:
        """Load a YAML file and the ``_BASE_`` files it inherits from, safely.

        Raises:
            ValueError: the file (or one of its bases) is not plain YAML, e.g. it carries a
                ``!!python/...`` tag; the message names the file and line.
        """
        if allow_unsafe:
            raise ValueError(
                "segtron reads configs with the safe YAML loader only; allow_unsafe=True is not "
                "supported."
            )
        try:
            return super().load_yaml_with_base(filename, allow_unsafe=False)
        except yaml.constructor.ConstructorError as err:
            mark = err.problem_mark
            where = f"{mark.name}, line {mark.line + 1}" if mark is not None else filename
            raise ValueError(
                f"Config file {where} uses a YAML tag that the safe loader refuses "
                f"({err.problem}). Configs may hold only plain values (numbers, strings, lists, "
                "mappings): remove the tag."
            ) from err

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a YAML config file (and its ``_BASE_`` chain) into this config.

        Raises:
            ConfigKeyError: the file sets a key this config does not have.
            ValueError: the file is not safe YAML, or a value has the wrong type.
        """
        loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        self._check_known_keys(loaded, f"config file {cfg_filename}")
        loaded = _tuples_like_defaults(self, loaded)
        try:
            self.merge_from_other_cfg(type(self)(loaded))
        except ValueError as err:
            raise ValueError(f"In config file {cfg_filename}: {err}") from err

    def merge_from_list(self, cfg_list: list[Any]) -> None:
        """Merge ``[KEY1, VALUE1, KEY2, VALUE2, ...]`` overrides (e.g. from the command line).

        Raises:
            ValueError: the list has an odd length, or a value has the wrong type.
            ConfigKeyError: a key does not exist.
        """
        if len(cfg_list) % 2:
            raise ValueError(
                f"Config overrides must come in KEY VALUE pairs; got an odd number of items: "
                f"{list(cfg_list)}"
            )
        for full_key in cfg_list[0::2]:
            self._check_full_key(str(full_key), "the command-line overrides")
        super().merge_from_list(cfg_list)

    def _check_known_keys(self, loaded: dict[str, Any], source: str) -> None:
        """Raise ConfigKeyError for the first key of ``loaded`` that this config does not have."""
        pending: list[tuple[CfgNode, dict[str, Any], str]] = [(self, loaded, "")]
        while pending:
            node, values, prefix = pending.pop()
            for key, value in values.items():
                if key not in node:
                    if node.is_new_allowed():
                        continue
                    raise self._unknown_key_error(prefix + key, source)
                if isinstance(node[key], CfgNode) and isinstance(value, dict):
                    pending.append((node[key], value, prefix + key + "."))

    def _check_full_key(self, full_key: str, source: str) -> None:
        """Raise ConfigKeyError when the dotted ``full_key`` does not exist in this config."""
        node: Any = self
        for part in full_key.split("."):
            if isinstance(node, CfgNode) and part not in node and node.is_new_allowed():
                return
            if not isinstance(node, CfgNode) or part not in node:
                raise self._unknown_key_error(full_key, source)
            node = node[part]

    def _unknown_key_error(self, full_key: str, source: str) -> ConfigKeyError:
        known = list(self._iter_full_keys())
        close = difflib.get_close_matches(full_key, known, n=3, cutoff=0.6)
        leaf = full_key.rsplit(".", 1)[-1]
        close += [k for k in known if k.rsplit(".", 1)[-1] == leaf and k not in close][:3]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return ConfigKeyError(
            f"Unknown config key '{full_key}' in {source}.{hint} If the key belongs to a "
            "project, add that project's config first (e.g. add_deeplab_config(cfg)); "
            "tools/train_net.py does this for every project."
        )

    def _iter_full_keys(self, prefix: str = "") -> Iterator[str]:
        for key, value in self.items():
            if isinstance(value, CfgNode):
                yield from value._iter_full_keys(prefix + key + ".")
            else:
                yield prefix + key


def _tuples_like_defaults(defaults: CfgNode, loaded: dict[str, Any]) -> dict[str, Any]:
    """Turn YAML lists into tuples wherever the default is a tuple, at every nesting level.

    yacs coerces only the outer list of a tuple-valued key, so a nested default such as
    ``((10.0, 10.0, 5.0, 5.0), ...)`` came back from a dumped config as a tuple of lists.
    """

    def like(default: Any, value: Any) -> Any:
        if isinstance(default, tuple) and isinstance(value, (list, tuple)):
            inner = default[0] if default else None
            return tuple(like(inner, item) for item in value)
        return value

    result: dict[str, Any] = {}
    for key, value in loaded.items():
        default = defaults.get(key)
        if isinstance(default, CfgNode) and isinstance(value, dict):
            result[key] = _tuples_like_defaults(default, value)
        else:
            result[key] = like(default, value)
    return result


def add_missing_keys(node: CfgNode, defaults: Mapping[str, Any]) -> None:
    """Add to `node` the keys of `defaults` it lacks, never changing a key it has.

    What a project's ``add_<name>_config(cfg)`` does: every project's function is applied to
    every config, so it may add keys but not change an existing default, and it may be called
    on a config that already has its keys (they keep their values).

    Args:
        node: a config node, not frozen.
        defaults: keys (or dotted paths such as ``"MODEL.PSPNET"``, whose missing nodes are
            created) to default values; a mapping value is a node whose keys are added the same
            way, recursively.
    """
    for path, value in defaults.items():
        *parents, key = path.split(".")
        target = node
        for name in parents:
            if name not in target:
                target[name] = CfgNode()
            target = target[name]
        if isinstance(value, Mapping):
            if key not in target:
                target[key] = CfgNode()
            add_missing_keys(target[key], value)
        elif key not in target:
            target[key] = copy.deepcopy(value)


def get_cfg() -> CfgNode:
    """A fresh copy of the default config (Detectron2's keys and defaults)."""
    from segtron.config.defaults import _C

    return _C.clone()


global_cfg = CfgNode()


def set_global_cfg(cfg: CfgNode) -> None:
    """Replace the contents of ``global_cfg`` by ``cfg`` (for quick experiments only)."""
    global_cfg.clear()
    global_cfg.update(cfg)


def configurable(init_func: Callable | None = None, *, from_config: Callable | None = None):
    """Let a class or function be called with explicit arguments or with a config.

    On a class's ``__init__``, the class defines ``from_config(cls, cfg, ...)`` returning a dict of
    ``__init__`` arguments; ``Cls(cfg, ...)`` or ``Cls(cfg=cfg, ...)`` then builds from the config,
    while ``Cls(a=1, b=2)`` builds from explicit arguments. On a function, pass
    ``from_config=fn``, a function whose first argument is ``cfg``.
    Extra keyword arguments that ``from_config`` does not take go to the wrapped callable.
    """
    if init_func is not None:
        if not (inspect.isfunction(init_func) and init_func.__name__ == "__init__"):
            raise TypeError(
                "@configurable without arguments decorates an __init__ method; for a function "
                "use @configurable(from_config=...)."
            )

        @functools.wraps(init_func)
        def wrapped_init(self, *args, **kwargs):
            try:
                from_config_func = type(self).from_config
            except AttributeError as err:
                raise AttributeError(
                    f"{type(self).__name__} uses @configurable but has no classmethod "
                    "'from_config'."
                ) from err
            if not inspect.ismethod(from_config_func):
                raise TypeError(f"{type(self).__name__}.from_config must be a classmethod.")
            if _called_with_cfg(*args, **kwargs):
                explicit = _get_args_from_config(from_config_func, *args, **kwargs)
                init_func(self, **explicit)
            else:
                init_func(self, *args, **kwargs)

        return wrapped_init

    if from_config is None:
        return configurable
    if not inspect.isfunction(from_config):
        raise TypeError("from_config passed to @configurable must be a function.")

    def decorator(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            if _called_with_cfg(*args, **kwargs):
                return func(**_get_args_from_config(from_config, *args, **kwargs))
            return func(*args, **kwargs)

        wrapped.from_config = from_config
        return wrapped

    return decorator


def _called_with_cfg(*args: Any, **kwargs: Any) -> bool:
    """Whether a call passes a config as its first argument or as ``cfg=``."""
    if args and isinstance(args[0], _FvcoreCfgNode):
        return True
    return isinstance(kwargs.get("cfg"), _FvcoreCfgNode)


def _get_args_from_config(from_config_func: Callable, *args: Any, **kwargs: Any) -> dict:
    """Call ``from_config`` with what it accepts; pass the other kwargs through unchanged."""
    signature = inspect.signature(from_config_func)
    first = next(iter(signature.parameters), None)
    if first != "cfg":
        name = getattr(from_config_func, "__qualname__", repr(from_config_func))
        raise TypeError(f"{name} must take 'cfg' as its first argument.")
    takes_var_kwargs = any(
        p.kind == inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    )
    if takes_var_kwargs:
        return from_config_func(*args, **kwargs)
    accepted = set(signature.parameters)
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in accepted}
    result = from_config_func(*args, **kwargs)
    result.update(extra)
    return result
