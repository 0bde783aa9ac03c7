"""Data structures shared by models, datasets and evaluators: boxes, instances, images, masks."""

from segtron.structures.boxes import (
    Boxes,
    BoxMode,
    matched_pairwise_iou,
    pairwise_intersection,
    pairwise_ioa,
    pairwise_iou,
    pairwise_point_box_distance,
)
from segtron.structures.image_list import ImageList
from segtron.structures.instances import Instances
from segtron.structures.masks import (
    BitMasks,
    PolygonMasks,
    polygon_area,
    polygons_to_bitmask,
    rasterize_polygons_within_box,
)

__all__ = [
    "BitMasks",
    "BoxMode",
    "Boxes",
    "ImageList",
    "Instances",
    "PolygonMasks",
    "matched_pairwise_iou",
    "pairwise_intersection",
    "pairwise_ioa",
    "pairwise_iou",
    "pairwise_point_box_distance",
    "polygon_area",
    "polygons_to_bitmask",
    "rasterize_polygons_within_box",
]
