"""Environment helpers: seeding every random number generator in one call."""

from __future__ import annotations

import os
import random
from datetime import datetime

import numpy as np
import torch

__all__ = ["seed_all_rng"]


def seed_all_rng(seed: int | None = None) -> int:
    """Seed Python, NumPy and torch RNGs; a None seed draws one from time, pid and urandom.

    Returns:
        The seed that was used, so a run can log it and be repeated.
    """
    if seed is None:
        seed = (
            os.getpid()
            + int(datetime.now().strftime("%S%f"))
            + int.from_bytes(os.urandom(2), "big")
        ) % (2**31)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed
