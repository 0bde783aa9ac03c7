"""Datasets, catalogs, loaders and transforms."""

# Importing ``datasets`` registers the builtin datasets (lazily: nothing is read until used).
from segtron.data import datasets, detection_utils, samplers, transforms
from segtron.data.build import (
    build_batch_data_loader,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    load_proposals_into_dataset,
    print_instances_class_histogram,
)
from segtron.data.catalog import DatasetCatalog, Metadata, MetadataCatalog
from segtron.data.common import DatasetFromList, MapDataset, ToIterableDataset
from segtron.data.dataset_mapper import DATASET_MAPPER_REGISTRY, DatasetMapper
from segtron.data.panoptic_separated_mapper import PanopticSeparatedDatasetMapper

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "DatasetCatalog",
    "DatasetFromList",
    "DatasetMapper",
    "MapDataset",
    "Metadata",
    "MetadataCatalog",
    "PanopticSeparatedDatasetMapper",
    "ToIterableDataset",
    "build_batch_data_loader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "datasets",
    "detection_utils",
    "get_detection_dataset_dicts",
    "load_proposals_into_dataset",
    "print_instances_class_histogram",
    "samplers",
    "transforms",
]
