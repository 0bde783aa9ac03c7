"""Renaming Caffe2/Detectron weights to Detectron2 names and matching names by suffix.

Caffe2 blob names (``res2_0_branch2a_bn_s``, ``fpn_inner_res3_3_sum_lateral_w``, ``fc6_w``…) are
rewritten to the module paths Detectron2 models use (``res2.0.conv1.norm.weight``,
``fpn_lateral3.weight``, ``box_head.fc1.weight``…). :func:`align_and_update_state_dicts` then
pairs each model key with the checkpoint key that is its longest dotted suffix, so backbone-only
weights (``res2.0.conv1.weight``) land in ``backbone.bottom_up.res2.0.conv1.weight``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

import torch

__all__ = [
    "align_and_update_state_dicts",
    "convert_basic_c2_names",
    "convert_c2_detectron_names",
]

logger = logging.getLogger(__name__)

# Applied in order to names whose "_" were already turned into ".".
_BASIC_RULES: list[tuple[str, str]] = [
    (r"\.w$", ".weight"),
    (r"\.b$", ".bias"),
    # Caffe2 affine BN (scale/bias), BN with statistics, and GN all become "norm".
    (r"(bn|gn)\.s$", "norm.weight"),
    (r"(bn|gn)\.bias$", "norm.bias"),
    (r"bn\.(rm|running\.mean)$", "norm.running_mean"),
    (r"bn\.(riv|running\.var)$", "norm.running_var"),
    (r"bn\.gamma$", "norm.weight"),
    (r"bn\.beta$", "norm.bias"),
    # ResNet stem: "conv1_w" and "res_conv1_bn_s".
    (r"^res\.conv1\.norm\.", "conv1.norm."),
    (r"^conv1\.", "stem.conv1."),
    # Bottleneck / basic blocks.
    (r"\.branch1\.", ".shortcut."),
    (r"\.branch2a\.", ".conv1."),
    (r"\.branch2b\.", ".conv2."),
    (r"\.branch2c\.", ".conv3."),
]

# Detection heads. In FPN models the RPN head is defined on level "fpn2" and shared.
_DETECTRON_RULES: list[tuple[str, str]] = [
    (r"^conv\.rpn(\.fpn2)?\.", "proposal_generator.rpn_head.conv."),
    (r"^rpn\.bbox\.pred(\.fpn2)?\.", "proposal_generator.rpn_head.anchor_deltas."),
    (r"^rpn\.cls\.logits(\.fpn2)?\.", "proposal_generator.rpn_head.objectness_logits."),
    (r"^bbox\.pred\.", "bbox_pred."),
    (r"^cls\.score\.", "cls_score."),
    (r"^fc6\.", "box_head.fc1."),
    (r"^fc7\.", "box_head.fc2."),
    (r"^head\.conv", "box_head.conv"),
    # "fpn_inner_res3_3_sum_lateral_w" and "fpn_res3_3_sum_w" (optionally with "_gn_s").
    (r"^fpn\.inner\.res(\d)\.\d+\.sum\.lateral\.", r"fpn_lateral\1."),
    (r"^fpn\.res(\d)\.\d+\.sum\.", r"fpn_output\1."),
    (r"^\.\[mask\]\.fcn", "mask_head.mask_fcn"),
    (r"^\.mask\.fcn(\d)", r"mask_head.mask_fcn\1"),
    (r"^mask\.fcn\.logits\.", "mask_head.predictor."),
    (r"^conv5\.mask\.", "mask_head.deconv."),
]

# Caffe2 predictors have a background class first; Detectron2 has none (box and mask
# predictors) or puts it last (classification scores). Number of rows per class to drop.
_BACKGROUND_ROWS = {"bbox_pred.": 4, "mask_head.predictor.": 1}


def _apply_rules(name: str, rules: Iterable[tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        name = re.sub(pattern, replacement, name)
    return name


def convert_basic_c2_names(original_keys: Iterable[str]) -> list[str]:
    """Rename Caffe2 backbone blob names to Detectron2 names.

    Handles the ResNet stem and blocks and the BN/GN parameter suffixes; other names only get
    their ``_`` turned into ``.`` and ``_w``/``_b`` into ``.weight``/``.bias``.

    Args:
        original_keys: Caffe2 blob names such as ``res2_0_branch2a_bn_s``.

    Returns:
        The Detectron2 names, in the same order.
    """
    return [_apply_rules(key.replace("_", "."), _BASIC_RULES) for key in original_keys]


def convert_c2_detectron_names(
    weights: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename the weights of a Caffe2 ImageNet or Detectron model to Detectron2 names.

    Besides renaming, this drops classifier blobs (``fc1000``) and momentum blobs, removes the
    background rows of box/mask predictors, moves the background score to the last row of
    ``cls_score``, and gives every affine (frozen) BN a ``running_mean`` of 0 and a
    ``running_var`` of 1, which Caffe2 files do not store.

    Args:
        weights: Caffe2 blob name -> tensor.

    Returns:
        ``(new_weights, new_to_original)``: Detectron2 name -> tensor, and Detectron2 name ->
        the Caffe2 name it came from (for messages).

    Raises:
        ValueError: if two blobs would get the same name.
    """
    original_keys = sorted(k for k in weights if not k.endswith("_momentum"))
    renamed = [
        _apply_rules(name, _DETECTRON_RULES) for name in convert_basic_c2_names(original_keys)
    ]
    new_weights: dict[str, torch.Tensor] = {}
    new_to_original: dict[str, str] = {}
    for original, name in zip(original_keys, renamed):
        if re.match(r"^fc1000\.", name):
            logger.info(f"Dropping ImageNet classifier weight {original}.")
            continue
        if name in new_to_original:
            raise ValueError(
                f"Caffe2 blobs {new_to_original[name]} and {original} both map to {name}."
            )
        value = weights[original]
        for prefix, rows in _BACKGROUND_ROWS.items():
            if name.startswith(prefix):
                value = value[rows:]
                logger.info(f"Removed the background class of {name}: now {tuple(value.shape)}.")
        if name.startswith("cls_score."):
            value = torch.cat([value[1:], value[:1]])
            logger.info(f"Moved the background score of {name} to the last index.")
        new_weights[name] = value
        new_to_original[name] = original
        _add_frozen_bn_statistics(original, name, value, new_weights, new_to_original, weights)
    return new_weights, new_to_original


def _add_frozen_bn_statistics(
    original: str,
    name: str,
    scale: torch.Tensor,
    new_weights: dict[str, torch.Tensor],
    new_to_original: dict[str, str],
    weights: Mapping[str, torch.Tensor],
) -> None:
    """Give an affine Caffe2 BN (``*_bn_s``) identity statistics when the file has none."""
    if not original.endswith("_bn_s") or f"{original[:-2]}_rm" in weights:
        return
    prefix = name[: -len("weight")]
    for stat, fill in (("running_mean", 0.0), ("running_var", 1.0)):
        new_weights[prefix + stat] = torch.full_like(scale, fill)
        new_to_original[prefix + stat] = f"{original} (identity {stat})"


def align_and_update_state_dicts(
    model_state_dict: Mapping[str, torch.Tensor],
    ckpt_state_dict: Mapping[str, torch.Tensor],
    c2_conversion: bool = True,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename checkpoint weights to the model's keys by suffix matching.

    Each model key is matched with the checkpoint key that equals one of its dotted suffixes
    (``backbone.bottom_up.res2.0.conv1.weight`` ends with ``res2.0.conv1.weight`` and with
    ``conv1.weight``); the longest such checkpoint key wins. Shapes are not compared here: the
    caller reports shape mismatches under the model's names.

    Unlike Detectron2, this does not modify ``model_state_dict``; it returns the renamed weights.

    Args:
        model_state_dict: the model's state dict (only its keys are used).
        ckpt_state_dict: checkpoint name -> tensor.
        c2_conversion: rename Caffe2 blob names first with :func:`convert_c2_detectron_names`.

    Returns:
        ``(aligned, unmatched)``: model key -> checkpoint tensor for every matched key, and the
        (original) names of the checkpoint keys that matched no model key.

    Raises:
        ValueError: if one checkpoint key is the best match of two model keys, which would load
            the same weight twice.
    """
    if c2_conversion:
        ckpt_state_dict, original_names = convert_c2_detectron_names(ckpt_state_dict)
    else:
        original_names = {k: k for k in ckpt_state_dict}
    ckpt_keys = set(ckpt_state_dict)
    matched: dict[str, str] = {}  # checkpoint key -> model key
    for model_key in sorted(model_state_dict):
        parts = model_key.split(".")
        candidates = (".".join(parts[i:]) for i in range(len(parts)))  # longest first
        ckpt_key = next((c for c in candidates if c in ckpt_keys), None)
        if ckpt_key is None:
            continue
        if ckpt_key in matched:
            raise ValueError(
                f"Ambiguous name matching: checkpoint key '{original_names[ckpt_key]}' is the "
                f"best match of both model keys '{matched[ckpt_key]}' and '{model_key}'. Rename "
                "the checkpoint keys to full model names to load it."
            )
        matched[ckpt_key] = model_key
        logger.debug(f"{model_key} loaded from {original_names[ckpt_key]}")
    aligned = {model_key: ckpt_state_dict[ckpt_key] for ckpt_key, model_key in matched.items()}
    unmatched = sorted(original_names[k] for k in ckpt_keys if k not in matched)
    logger.info(
        f"Name matching heuristics paired {len(aligned)} of {len(ckpt_keys)} checkpoint keys "
        "with model keys."
    )
    return aligned, unmatched
