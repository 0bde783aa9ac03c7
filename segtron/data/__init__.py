"""Datasets, catalogs, loaders and transforms."""

from segtron.data.catalog import DatasetCatalog, Metadata, MetadataCatalog

__all__ = ["DatasetCatalog", "Metadata", "MetadataCatalog"]
