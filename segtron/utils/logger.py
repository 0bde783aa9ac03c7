"""Logging setup: coloured console output on the main process, a plain log file per rank."""

from __future__ import annotations

import logging
import os
import sys

from termcolor import colored

from segtron.utils.file_io import PathManager

__all__ = ["setup_logger"]


class _ColorfulFormatter(logging.Formatter):
    def __init__(self, *args, root_name: str, abbrev_name: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._root_name = root_name + "."
        self._abbrev_name = abbrev_name + "." if abbrev_name else ""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging API)
        record.name = record.name.replace(self._root_name, self._abbrev_name)
        log = super().formatMessage(record)
        if record.levelno == logging.WARNING:
            prefix = colored("WARNING", "red", attrs=["blink"])
        elif record.levelno in (logging.ERROR, logging.CRITICAL):
            prefix = colored("ERROR", "red", attrs=["blink", "underline"])
        else:
            return log
        return prefix + " " + log


def setup_logger(
    output: str | None = None,
    distributed_rank: int = 0,
    *,
    color: bool = True,
    name: str = "segtron",
    abbrev_name: str | None = None,
) -> logging.Logger:
    """Configure the ``name`` logger, replacing what an earlier call configured.

    Calling it again (e.g. for a second run in one process, with another output folder) does
    not duplicate console lines, and the earlier run's log file stops receiving messages.

    Args:
        output: a ``.txt``/``.log`` file, or a folder (then ``<output>/log.txt``); ranks other
            than 0 write to ``<file>.rank<N>``. None logs to the console only.
        distributed_rank: rank of this process; only rank 0 logs to the console.
        color: colour WARNING/ERROR prefixes on the console.
        name: the logger to configure.
        abbrev_name: shorter name shown in the console (default ``st`` for ``segtron``).
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for old in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(old)
        old.close()
        if getattr(old, _MARK) == "file":
            old.stream.close()
    if abbrev_name is None:
        abbrev_name = "st" if name == "segtron" else name
    plain = logging.Formatter(
        "[%(asctime)s] %(name)s %(levelname)s: %(message)s", datefmt="%m/%d %H:%M:%S"
    )
    if distributed_rank == 0:
        console = logging.StreamHandler(stream=sys.stdout)
        console.setLevel(logging.DEBUG)
        console.setFormatter(
            _ColorfulFormatter(
                colored("[%(asctime)s %(name)s]: ", "green") + "%(message)s",
                datefmt="%m/%d %H:%M:%S",
                root_name=name,
                abbrev_name=str(abbrev_name),
            )
            if color
            else plain
        )
        _add_handler(logger, console, "console")
    if output is not None:
        filename = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
        if distributed_rank > 0:
            filename = f"{filename}.rank{distributed_rank}"
        PathManager.mkdirs(os.path.dirname(filename) or ".")
        handler = logging.StreamHandler(PathManager.open(filename, "a"))
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(plain)
        _add_handler(logger, handler, "file")
    return logger


# Marks the handlers that setup_logger installed, so that a later call can replace them.
_MARK = "_segtron_setup_logger"


def _add_handler(logger: logging.Logger, handler: logging.StreamHandler, kind: str) -> None:
    """Add `handler`, marked with its kind: a "file" handler's stream is ours to close."""
    setattr(handler, _MARK, kind)
    logger.addHandler(handler)
