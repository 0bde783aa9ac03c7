"""Drawing of one synthetic scene: sky and ground, a VOID patch, a crowd and occluding shapes.

Shapes are polygons (a circle is a 24-gon) rasterized with pycocotools, so the masks are
exactly what a COCO polygon annotation of the shape rasterizes to. See
``segtron.data.datasets.synthetic`` for the dataset built from these scenes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_util

__all__ = ["Scene", "Shape", "render_scene"]

_SKY_COLOR = np.array([135.0, 190.0, 235.0])
_GROUND_COLOR = np.array([120.0, 90.0, 50.0])
_VERTICES = {0: 24, 1: 4, 2: 3}  # circle, square, triangle


@dataclass
class Shape:
    """One segment of a scene.

    Attributes:
        category_id: the dataset category id.
        isthing: whether the category is a thing.
        visible: H×W bool mask of the pixels the segment owns in the final image.
        full: H×W bool mask of the whole shape, including parts hidden by later shapes.
        polygon: the flat polygon ``[x0, y0, x1, y1, ...]`` of a single shape, else None.
        iscrowd: whether the segment is a crowd region.
    """

    category_id: int
    isthing: bool
    visible: np.ndarray
    full: np.ndarray
    polygon: list[float] | None = None
    iscrowd: bool = False

    @property
    def occluded(self) -> bool:
        """Whether a later shape hides part of this one."""
        return bool((self.full & ~self.visible).any())


@dataclass
class Scene:
    """A rendered image (H×W×3 uint8, RGB) and its segments in drawing order."""

    image: np.ndarray
    shapes: list[Shape]


def _polygon(kind: int, cx: float, cy: float, radius: float, angle: float) -> list[float]:
    """A regular polygon with ``_VERTICES[kind]`` corners, rounded to 0.01 px."""
    angles = angle + 2 * np.pi * np.arange(_VERTICES[kind]) / _VERTICES[kind]
    xs, ys = cx + radius * np.cos(angles), cy + radius * np.sin(angles)
    return [round(float(v), 2) for xy in zip(xs, ys) for v in xy]


def _rasterize(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
    return mask_util.decode(rle).astype(bool)


def _background(
    rng: np.random.Generator, sky: np.ndarray, yy: np.ndarray, xx: np.ndarray
) -> np.ndarray:
    """A float H×W×3 image: a smooth sky gradient above, textured ground below."""
    height = sky.shape[0]
    sky_color = _SKY_COLOR + rng.uniform(-30, 30, 3)
    sky_img = sky_color + (yy / height * 50.0)[..., None] + rng.normal(0, 3, (*sky.shape, 3))
    phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.8)
    stripes = 12.0 * np.sin(freq * yy + 0.2 * xx + phase)[..., None]
    ground_color = _GROUND_COLOR + rng.uniform(-30, 30, 3)
    ground_img = ground_color + stripes + rng.normal(0, 14, (*sky.shape, 3))
    return np.where(sky[..., None], sky_img, ground_img)


def _crowd(
    rng: np.random.Generator, thing_ids: tuple[int, ...], height: int, width: int
) -> tuple[int, np.ndarray]:
    """A cluster of 6–9 tiny shapes of one class; returns (category id, mask)."""
    kind = int(rng.integers(len(thing_ids)))
    cx, cy = rng.uniform(16, width - 16), rng.uniform(16, height - 16)
    polygons = [
        _polygon(
            kind,
            cx + rng.uniform(-11, 11),
            cy + rng.uniform(-11, 11),
            rng.uniform(2.0, 4.0),
            rng.uniform(0, 2 * np.pi),
        )
        for _ in range(int(rng.integers(6, 10)))
    ]
    return thing_ids[kind], _rasterize(polygons, height, width)


def _owner_map(base: np.ndarray, fulls: list[np.ndarray]) -> np.ndarray:
    """Which segment owns each pixel when the masks are painted in order over ``base``.

    ``base`` holds -1 (VOID), 0 (sky) and 1 (ground); mask ``i`` paints label ``i + 2``.
    """
    owner = base.copy()
    for i, full in enumerate(fulls):
        owner[full] = i + 2
    return owner


def render_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    sky_id: int,
    ground_id: int,
    thing_ids: tuple[int, ...] = (1, 2, 3),
) -> Scene:
    """Draw one random scene.

    Things that would stay less than half visible (or under 20 pixels) are left out, so every
    thing annotation shows most of its shape.

    Args:
        rng: the random generator (the only source of randomness).
        height: image height.
        width: image width.
        sky_id: category id of the top stuff region.
        ground_id: category id of the bottom stuff region.
        thing_ids: category ids of circle, square and triangle.

    Returns:
        The image and its segments: sky, ground, then things in drawing order.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    horizon = rng.uniform(0.3, 0.7) * height + rng.uniform(-0.15, 0.15) * (xx - width / 2)
    sky = yy < horizon
    image = _background(rng, sky, yy, xx)
    base = np.where(sky, 0, 1)
    if rng.random() < 0.25:  # an unlabelled patch: VOID in every annotation
        ph, pw = rng.integers(6, 15, 2)
        y0, x0 = rng.integers(0, height - ph), rng.integers(0, width - pw)
        base[y0 : y0 + ph, x0 : x0 + pw] = -1
        image[y0 : y0 + ph, x0 : x0 + pw] = rng.uniform(0, 255, (ph, pw, 3))

    candidates: list[tuple[int, np.ndarray, list[float] | None]] = []
    if min(height, width) >= 48 and rng.random() < 0.3:
        candidates.append((*_crowd(rng, thing_ids, height, width), None))
    short = min(height, width)
    for _ in range(int(rng.integers(1, 6))):
        kind = int(rng.integers(len(thing_ids)))
        radius = rng.uniform(0.06, 0.2) * short * (np.sqrt(2) if kind == 1 else 1.0)
        cx = rng.uniform(radius + 1, width - radius - 1)
        cy = rng.uniform(radius + 1, height - radius - 1)
        polygon = _polygon(kind, cx, cy, radius, rng.uniform(0, 2 * np.pi))
        candidates.append((thing_ids[kind], _rasterize([polygon], height, width), polygon))

    while True:
        owner = _owner_map(base, [full for _, full, _ in candidates])
        keep = [
            (owner == i + 2).sum() >= max(20, 0.5 * full.sum())
            for i, (_, full, _) in enumerate(candidates)
        ]
        if all(keep):
            break
        candidates = [c for c, k in zip(candidates, keep) if k]

    shapes = [
        Shape(category_id, False, owner == label, base == label)
        for label, category_id in ((0, sky_id), (1, ground_id))
    ]
    for i, (category_id, full, polygon) in enumerate(candidates):
        image[full] = rng.uniform(20, 235, 3) + rng.normal(0, 6, (int(full.sum()), 3))
        shapes.append(
            Shape(category_id, True, owner == i + 2, full, polygon, iscrowd=polygon is None)
        )
    shapes = [s for s in shapes if s.visible.any()]
    return Scene(np.clip(image, 0, 255).round().astype(np.uint8), shapes)
