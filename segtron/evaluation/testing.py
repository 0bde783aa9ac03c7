"""Helpers around evaluation results: CSV-style logging, checks against expected values,
flattening for event writers."""

from __future__ import annotations

import logging
import pprint
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["flatten_results_dict", "print_csv_format", "verify_results"]

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
