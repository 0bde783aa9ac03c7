"""Registration of the builtin datasets under Detectron2's names.

The datasets live under ``$SEGTRON_DATASETS`` (default ``./datasets``); registering reads no
file. For now this registers the synthetic datasets (``synthetic_train``, ``synthetic_val`` and
their panoptic and semantic forms), generated into ``<datasets root>/synthetic`` on first use.
"""

from __future__ import annotations

import os

from segtron.data.datasets.synthetic import register_synthetic

__all__: list[str] = []


def _root() -> str:
    """The datasets root: ``$SEGTRON_DATASETS``, default ``./datasets``."""
    return os.path.expanduser(os.environ.get("SEGTRON_DATASETS", "datasets"))


register_synthetic(os.path.join(_root(), "synthetic"))
