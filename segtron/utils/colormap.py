"""A fixed table of distinct colours for drawing classes and instances.

The table holds the same 74 colours, in the same order, as Detectron2's (itself from Detectron),
so a class drawn with ``colormap()[i]`` looks the same in both toolkits. Colours are RGB floats
in [0, 1] internally; every function returns them scaled to ``maximum`` and in RGB or BGR order.
"""

from __future__ import annotations

import random

import numpy as np

__all__ = ["colormap", "random_color", "random_colors"]

# RGB in [0, 1], four colours per line.
# fmt: off
_COLORS = np.array([
    (0.000, 0.447, 0.741), (0.850, 0.325, 0.098), (0.929, 0.694, 0.125), (0.494, 0.184, 0.556),
    (0.466, 0.674, 0.188), (0.301, 0.745, 0.933), (0.635, 0.078, 0.184), (0.300, 0.300, 0.300),
    (0.600, 0.600, 0.600), (1.000, 0.000, 0.000), (1.000, 0.500, 0.000), (0.749, 0.749, 0.000),
    (0.000, 1.000, 0.000), (0.000, 0.000, 1.000), (0.667, 0.000, 1.000), (0.333, 0.333, 0.000),
    (0.333, 0.667, 0.000), (0.333, 1.000, 0.000), (0.667, 0.333, 0.000), (0.667, 0.667, 0.000),
    (0.667, 1.000, 0.000), (1.000, 0.333, 0.000), (1.000, 0.667, 0.000), (1.000, 1.000, 0.000),
    (0.000, 0.333, 0.500), (0.000, 0.667, 0.500), (0.000, 1.000, 0.500), (0.333, 0.000, 0.500),
    (0.333, 0.333, 0.500), (0.333, 0.667, 0.500), (0.333, 1.000, 0.500), (0.667, 0.000, 0.500),
    (0.667, 0.333, 0.500), (0.667, 0.667, 0.500), (0.667, 1.000, 0.500), (1.000, 0.000, 0.500),
    (1.000, 0.333, 0.500), (1.000, 0.667, 0.500), (1.000, 1.000, 0.500), (0.000, 0.333, 1.000),
    (0.000, 0.667, 1.000), (0.000, 1.000, 1.000), (0.333, 0.000, 1.000), (0.333, 0.333, 1.000),
    (0.333, 0.667, 1.000), (0.333, 1.000, 1.000), (0.667, 0.000, 1.000), (0.667, 0.333, 1.000),
    (0.667, 0.667, 1.000), (0.667, 1.000, 1.000), (1.000, 0.000, 1.000), (1.000, 0.333, 1.000),
    (1.000, 0.667, 1.000), (0.333, 0.000, 0.000), (0.500, 0.000, 0.000), (0.667, 0.000, 0.000),
    (0.833, 0.000, 0.000), (1.000, 0.000, 0.000), (0.000, 0.167, 0.000), (0.000, 0.333, 0.000),
    (0.000, 0.500, 0.000), (0.000, 0.667, 0.000), (0.000, 0.833, 0.000), (0.000, 1.000, 0.000),
    (0.000, 0.000, 0.167), (0.000, 0.000, 0.333), (0.000, 0.000, 0.500), (0.000, 0.000, 0.667),
    (0.000, 0.000, 0.833), (0.000, 0.000, 1.000), (0.000, 0.000, 0.000), (0.143, 0.143, 0.143),
    (0.857, 0.857, 0.857), (1.000, 1.000, 1.000),
], dtype=np.float32)
# fmt: on


def _check_maximum(maximum: float) -> None:
    if maximum not in (1, 255):
        raise ValueError(f"maximum must be 1 or 255; got {maximum}.")


def colormap(rgb: bool = False, maximum: float = 255) -> np.ndarray:
    """The whole colour table.

    Args:
        rgb: return RGB colours; BGR (OpenCV's order) when False.
        maximum: 255 or 1, the value of a full channel.

    Returns:
        A float32 array of N×3 colours in [0, maximum].

    Raises:
        ValueError: ``maximum`` is neither 1 nor 255.
    """
    _check_maximum(maximum)
    colors = _COLORS * maximum
    return colors if rgb else colors[:, ::-1]


def random_color(rgb: bool = False, maximum: float = 255) -> np.ndarray:
    """One colour of the table, drawn with NumPy's global random generator.

    Args:
        rgb: return an RGB colour; BGR when False.
        maximum: 255 or 1, the value of a full channel.

    Returns:
        A float32 vector of 3 numbers in [0, maximum].
    """
    _check_maximum(maximum)
    color = _COLORS[np.random.randint(len(_COLORS))] * maximum
    return color if rgb else color[::-1]


def random_colors(N: int, rgb: bool = False, maximum: float = 255) -> list[np.ndarray]:
    """``N`` different colours of the table, in random order (Python's ``random`` module).

    Args:
        N: how many colours, at most the size of the table.
        rgb: return RGB colours; BGR when False.
        maximum: 255 or 1, the value of a full channel.

    Returns:
        A list of ``N`` float32 vectors of 3 numbers in [0, maximum].

    Raises:
        ValueError: ``N`` is larger than the table or ``maximum`` is neither 1 nor 255.
    """
    _check_maximum(maximum)
    if not 0 <= N <= len(_COLORS):
        raise ValueError(f"Cannot draw {N} different colours from a table of {len(_COLORS)}.")
    colors = [_COLORS[i] * maximum for i in random.sample(range(len(_COLORS)), N)]
    return colors if rgb else [c[::-1] for c in colors]
