"""Test-wide fixtures."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def segtron_logger_propagates() -> Iterator[None]:
    """Start every test with the "segtron" logger propagating to the root logger.

    ``setup_logger()`` (called by ``default_setup`` and the tools, as in Detectron2) stops the
    logger propagating; pytest's ``caplog`` listens on the root logger, so a test that ran an
    earlier setup in the same worker would otherwise hide every later test's log lines. The
    handlers a test's setup added are removed and closed afterwards.
    """
    logger = logging.getLogger("segtron")
    handlers, propagate = list(logger.handlers), logger.propagate
    logger.propagate = True
    yield
    for handler in [h for h in logger.handlers if h not in handlers]:
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = propagate
