"""Helpers around evaluation results: CSV-style logging, checks against expected values,
flattening for event writers."""

from __future__ import annotations

import logging
import pprint
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
from tabulate import tabulate

__all__ = ["flatten_results_dict", "format_results_table", "print_csv_format", "verify_results"]

logger = logging.getLogger(__name__)


def print_csv_format(results: Mapping[str, Any]) -> None:
    """Log the summary metrics of each task as comma-separated lines, easy to paste elsewhere.

    Per-class metrics (names containing ``-``, such as ``AP-person``) are left out.

    Args:
        results: ``{task: {metric: value}}`` as returned by ``inference_on_dataset``; a task
            whose value is not a mapping is logged as ``task=value``.
    """
    if not isinstance(results, Mapping):
        raise TypeError(f"Results must be a mapping, got {type(results).__name__}.")
    for task, res in results.items():
        if isinstance(res, Mapping):
            summary = [(k, v) for k, v in res.items() if "-" not in k]
            logger.info("copypaste: Task: %s", task)
            logger.info("copypaste: %s", ",".join(k for k, _ in summary))
            logger.info("copypaste: %s", ",".join(f"{v:.4f}" for _, v in summary))
        else:
            logger.info("copypaste: %s=%s", task, res)


def format_results_table(results: Mapping[str, Any]) -> str:
    """A readable table of the summary metrics: one row per task, one column per metric.

    Per-class metrics (names containing ``-``) are left out, as in `print_csv_format`.

    Args:
        results: ``{task: {metric: value}}``, or ``{dataset: {task: {metric: value}}}``.
    """
    if results and all(isinstance(v, Mapping) for v in results.values()):
        nested = [v for v in results.values() if any(isinstance(x, Mapping) for x in v.values())]
        if nested and len(nested) == len(results):
            return "\n\n".join(
                f"{name}:\n{format_results_table(res)}" for name, res in results.items()
            )
    blocks = []
    for task, res in results.items():
        if not isinstance(res, Mapping):
            blocks.append(f"{task}: {res}")
            continue
        summary = {k: v for k, v in res.items() if "-" not in k}
        rows = [[task, *(f"{v:.3f}" for v in summary.values())]]
        blocks.append(
            tabulate(rows, headers=["task", *summary], tablefmt="pipe", disable_numparse=True)
        )
    return "\n\n".join(blocks)


def verify_results(cfg: Any, results: Mapping[str, Mapping[str, float]]) -> bool:
    """Check results against ``cfg.TEST.EXPECTED_RESULTS``; exits the process on a mismatch.

    Each expected entry is ``[task, metric, value, tolerance]``; a metric that is missing,
    not finite, or further than ``tolerance`` from ``value`` fails the check.

    Args:
        cfg: a config with ``TEST.EXPECTED_RESULTS``.
        results: ``{task: {metric: value}}``.

    Returns:
        True when every expectation holds (or there are none).
    """
    expected_results = cfg.TEST.EXPECTED_RESULTS
    if not len(expected_results):
        return True
    ok = True
    for task, metric, expected, tolerance in expected_results:
        actual = results.get(task, {}).get(metric)
        if actual is None or not np.isfinite(actual) or abs(actual - expected) > tolerance:
            ok = False
    if not ok:
        logger.error("Result verification failed!")
        logger.error("Expected Results: %s", expected_results)
        logger.error("Actual Results: %s", pprint.pformat(results))
        sys.exit(1)
    logger.info("Results verification passed.")
    return True


def flatten_results_dict(results: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten nested mappings into one level, joining keys with ``/``.

    Example: ``{"bbox": {"AP": 50.0}}`` becomes ``{"bbox/AP": 50.0}``.

    Args:
        results: a possibly nested mapping.
    """
    flat: dict[str, Any] = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            for sub_key, sub_value in flatten_results_dict(value).items():
                flat[f"{key}/{sub_key}"] = sub_value
        else:
            flat[key] = value
    return flat
