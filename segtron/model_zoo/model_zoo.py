"""Find shipped config files, build their models and point at Detectron2's published weights.

The configs are the YAML files of the repository's ``configs/`` folder. A regular (non-editable)
install copies them into this package (``segtron/model_zoo/configs``, see ``setup.py``); in a
source checkout or an editable install they are read from ``configs/`` at the repository root.
Names are paths relative to that folder, as in ``detectron2.model_zoo``.
"""

from __future__ import annotations

import difflib
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import nn

from segtron.checkpoint import DetectionCheckpointer
from segtron.config import ConfigKeyError, get_cfg
from segtron.modeling import build_model
from segtron.utils.file_io import DETECTRON2_MODEL_ZOO

__all__ = ["get", "get_checkpoint_url", "get_config", "get_config_file"]

# Where a non-editable install puts the configs, then where a source checkout has them.
_CONFIG_ROOTS = (
    Path(__file__).resolve().parent / "configs",
    Path(__file__).resolve().parents[2] / "configs",
)

# Config name (without ".yaml") -> "<model id>/<file>" under <zoo>/<config name>/, for the
# shipped configs that Detectron2 published weights of.
_CHECKPOINT_SUFFIXES = {
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x": "137260431/model_final_a54504.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x": "137849600/model_final_f10217.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x": "138205316/model_final_a3ec72.pkl",
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x": "139514544/model_final_dbfeb4.pkl",
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x": "139514569/model_final_c10459.pkl",
    "Cityscapes/mask_rcnn_R_50_FPN": "142423278/model_final_af9cf5.pkl",
}


def _configs_root() -> Path:
    """The folder that holds the shipped configs."""
    for root in _CONFIG_ROOTS:
        if root.is_dir():
            return root
    raise RuntimeError(
        "segtron's config files are not installed: looked in "
        f"{', '.join(str(root) for root in _CONFIG_ROOTS)}. Reinstall segtron (pip install .) "
        "or use a source checkout."
    )


def _available_configs(root: Path) -> list[str]:
    """The shipped config names, e.g. ``COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml``."""
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*.yaml"))


def _relative_name(config_path: str) -> PurePosixPath:
    """``config_path`` as a relative path inside the configs folder.

    Raises:
        RuntimeError: for absolute paths and paths that leave the folder.
    """
    name = PurePosixPath(str(config_path).replace("\\", "/"))
    if name.is_absolute() or ".." in name.parts or not name.parts:
        raise RuntimeError(
            f"Model zoo config names are paths relative to segtron's configs/ folder, like "
            f"'COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml'; got {config_path!r}."
        )
    return name


def get_config_file(config_path: str) -> str:
    """The path of a config file shipped with segtron.

    Args:
        config_path: the file's path relative to the ``configs/`` folder, e.g.
            ``"COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"``.

    Returns:
        The absolute path of the file.

    Raises:
        RuntimeError: when no such config is shipped; the message suggests close names.
    """
    name = _relative_name(config_path)
    root = _configs_root()
    path = root / name
    if path.is_file():
        return str(path)
    available = _available_configs(root)
    close = difflib.get_close_matches(name.as_posix(), available, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise RuntimeError(f"{config_path} not available in the model zoo ({root}).{hint}")


def get_checkpoint_url(config_path: str) -> str:
    """The URL of Detectron2's published weights trained with a config.

    Args:
        config_path: as in :func:`get_config_file`; ".yaml" may be left out.

    Returns:
        ``https://dl.fbaipublicfiles.com/detectron2/<name>/<model id>/model_final_<hash>.pkl``.

    Raises:
        RuntimeError: when Detectron2 published no weights for this config (e.g. the
            Synthetic configs, which are meant to be trained with tools/train_net.py).
    """
    name = _relative_name(config_path).as_posix().removesuffix(".yaml")
    suffix = _CHECKPOINT_SUFFIXES.get(name)
    if suffix is None:
        published = ", ".join(f"{key}.yaml" for key in _CHECKPOINT_SUFFIXES)
        raise RuntimeError(
            f"Pretrained model for {config_path} is not available: Detectron2 published no "
            f"weights for it. Train it with tools/train_net.py, or use one of: {published}."
        )
    return f"{DETECTRON2_MODEL_ZOO}{name}/{suffix}"


def get_config(config_path: str, trained: bool = False) -> Any:
    """The config of a model-zoo model.

    The core never imports a project (DESIGN.md), so a project's config (with keys that
    ``add_<project>_config`` adds) fails here with advice to load it through
    ``segtron.projects.get_config(get_config_file(path))``, as the tools do.

    Args:
        config_path: as in :func:`get_config_file`.
        trained: set MODEL.WEIGHTS to Detectron2's published weights for this config
            (:func:`get_checkpoint_url`). Otherwise MODEL.WEIGHTS stays as the file sets it:
            usually ImageNet-pretrained backbone weights, or none.

    Returns:
        The config, not frozen.

    Raises:
        RuntimeError: when the config is not shipped, or ``trained`` and no weights exist.
        ConfigKeyError: the config has keys of a project (see above).
    """
    config_file = get_config_file(config_path)
    cfg = get_cfg()
    try:
        cfg.merge_from_file(config_file)
    except ConfigKeyError as e:
        raise ConfigKeyError(
            f"{e}\n{config_path} uses keys that segtron's core does not define; if it belongs "
            "to a project, load it with segtron.projects.get_config("
            f"segtron.model_zoo.get_config_file({config_path!r}))."
        ) from e
    if trained:
        cfg.MODEL.WEIGHTS = get_checkpoint_url(config_path)
    return cfg


def get(config_path: str, trained: bool = False, device: str | None = None) -> nn.Module:
    """Build a model-zoo model and load ``MODEL.WEIGHTS`` into it.

    As in Detectron2, the weights the config names are loaded whether or not ``trained`` is
    set: with ``trained`` these are the published weights, otherwise the file's own
    MODEL.WEIGHTS (often an ImageNet backbone; nothing when it is empty).

    Args:
        config_path: as in :func:`get_config_file`.
        trained: see :func:`get_config`.
        device: the device to build on; by default the config's MODEL.DEVICE, or "cpu" when
            CUDA is not available.

    Returns:
        The model, in training mode (call ``.eval()`` for inference).

    Raises:
        RuntimeError: when the config is not shipped, or ``trained`` and no weights exist.
        FileNotFoundError: when the weights cannot be downloaded (the message says where to
            put the file by hand).
    """
    cfg = get_config(config_path, trained)
    if device is None and not torch.cuda.is_available():
        device = "cpu"
    if device is not None:
        cfg.MODEL.DEVICE = device
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model
