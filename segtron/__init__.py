"""segtron: a Detectron2-compatible toolkit for semantic, instance and panoptic segmentation."""

__version__ = "0.1.0"
