"""Building dataset dicts and data loaders for training and inference.

Mirrors ``detectron2.data.build``: `get_detection_dataset_dicts` merges and filters registered
datasets; `build_detection_train_loader` and `build_detection_test_loader` wrap them with a
mapper, a sampler and a DataLoader, from explicit arguments or a config.
"""

from __future__ import annotations

import itertools
import logging
import operator
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data as torchdata

from segtron.config import configurable
from segtron.data.catalog import DatasetCatalog, MetadataCatalog
from segtron.data.common import (
    AspectRatioGroupedDataset,
    DatasetFromList,
    InferenceBatchCollator,
    MapDataset,
    SeededDataset,
    SkipUnreadableImages,
    ToIterableDataset,
)
from segtron.data.dataset_mapper import DATASET_MAPPER_REGISTRY, DatasetMapper
from segtron.data.detection_utils import check_metadata_consistency
from segtron.data.samplers import (
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingBatchSampler,
    TrainingSampler,
)
from segtron.structures import BoxMode
from segtron.utils import comm
from segtron.utils.env import seed_all_rng
from segtron.utils.file_io import PathManager
from segtron.utils.safe_pickle import load_pickle

__all__ = [
    "build_batch_data_loader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "get_detection_dataset_dicts",
    "load_proposals_into_dataset",
    "print_instances_class_histogram",
    "trivial_batch_collator",
    "worker_init_reset_seed",
]

logger = logging.getLogger(__name__)


def filter_images_with_only_crowd_annotations(
    dataset_dicts: list[dict[str, Any]], dataset_names: Sequence[str]
) -> list[dict[str, Any]]:
    """Drop images that have no non-crowd annotation."""
    kept = [
        d for d in dataset_dicts if any(a.get("iscrowd", 0) == 0 for a in d.get("annotations", []))
    ]
    logger.info(
        f"Removed {len(dataset_dicts) - len(kept)} images with no usable annotations from "
        f"{', '.join(dataset_names)}. {len(kept)} images left."
    )
    return kept


def filter_images_with_few_keypoints(
    dataset_dicts: list[dict[str, Any]], min_keypoints_per_image: int
) -> list[dict[str, Any]]:
    """Drop images with fewer than `min_keypoints_per_image` visible keypoints."""

    def visible_keypoints(dataset_dict: dict[str, Any]) -> int:
        return sum(
            int((np.asarray(a["keypoints"])[2::3] > 0).sum())
            for a in dataset_dict["annotations"]
            if "keypoints" in a
        )

    kept = [d for d in dataset_dicts if visible_keypoints(d) >= min_keypoints_per_image]
    logger.info(
        f"Removed {len(dataset_dicts) - len(kept)} images with fewer than "
        f"{min_keypoints_per_image} keypoints."
    )
    return kept


def load_proposals_into_dataset(
    dataset_dicts: list[dict[str, Any]], proposal_file: str
) -> list[dict[str, Any]]:
    """Attach precomputed proposals to dataset dicts.

    The file is a pickle of a dict with "ids", "boxes", "objectness_logits" and optionally
    "bbox_mode" (XYXY_ABS by default), as written by Detectron2. Images are matched by
    "image_id". The pickle is read with segtron's restricted unpickler, so it cannot run code.
    """
    logger.info(f"Loading proposals from {proposal_file}")
    with PathManager.open(proposal_file, "rb") as f:
        proposals = load_pickle(f, proposal_file)
    for old, new in (("indexes", "ids"), ("scores", "objectness_logits")):
        if old in proposals:
            proposals[new] = proposals.pop(old)
    index_of = {str(image_id): i for i, image_id in enumerate(proposals["ids"])}
    bbox_mode = BoxMode(proposals.get("bbox_mode", BoxMode.XYXY_ABS))
    for record in dataset_dicts:
        i = index_of[str(record["image_id"])]
        record["proposal_boxes"] = proposals["boxes"][i]
        record["proposal_objectness_logits"] = proposals["objectness_logits"][i]
        record["proposal_bbox_mode"] = bbox_mode
    return dataset_dicts


def print_instances_class_histogram(
    dataset_dicts: list[dict[str, Any]], class_names: Sequence[str]
) -> None:
    """Log how many (non-crowd) instances each class has."""
    counts = Counter(
        a["category_id"]
        for d in dataset_dicts
        for a in d.get("annotations", [])
        if not a.get("iscrowd", 0)
    )
    for cat_id in counts:
        if not 0 <= cat_id < len(class_names):
            raise ValueError(
                f"Annotations have category_id {cat_id} but there are {len(class_names)} "
                "classes; category ids must be contiguous in [0, num_classes)."
            )
    lines = [f"{name}: {counts.get(i, 0)}" for i, name in enumerate(class_names)]
    logger.info(
        f"Distribution of instances among all {len(class_names)} categories "
        f"(total {sum(counts.values())}):\n  " + "\n  ".join(lines)
    )


def get_detection_dataset_dicts(
    names: str | Sequence[str],
    filter_empty: bool = True,
    min_keypoints: int = 0,
    proposal_files: Sequence[str] | None = None,
    check_consistency: bool = True,
) -> list[dict[str, Any]] | torchdata.Dataset:
    """Load, merge and filter the dataset dicts of registered datasets.

    Args:
        names: dataset names registered in `DatasetCatalog`.
        filter_empty: drop images without non-crowd annotations.
        min_keypoints: drop images with fewer visible keypoints.
        proposal_files: one proposal file per dataset, or None.
        check_consistency: check that the datasets have the same "thing_classes".

    Returns:
        The merged list of dicts (or the torch dataset when the catalog returns one).

    Raises:
        ValueError: for no names, an empty dataset, or nothing left after filtering.
    """
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise ValueError("get_detection_dataset_dicts needs at least one dataset name.")
    dataset_lists = [DatasetCatalog.get(name) for name in names]
    if isinstance(dataset_lists[0], torchdata.Dataset):
        if len(dataset_lists) > 1:
            return torchdata.ConcatDataset(dataset_lists)
        return dataset_lists[0]
    for name, dicts in zip(names, dataset_lists):
        if len(dicts) == 0:
            raise ValueError(
                f"Dataset '{name}' is empty: its loader returned no images. Check that the "
                "dataset files exist and are in the expected layout."
            )
    if proposal_files is not None:
        if len(proposal_files) != len(names):
            raise ValueError(f"Got {len(proposal_files)} proposal files for {len(names)} datasets.")
        dataset_lists = [
            load_proposals_into_dataset(dicts, path)
            for dicts, path in zip(dataset_lists, proposal_files)
        ]
    dataset_dicts = list(itertools.chain.from_iterable(dataset_lists))

    has_instances = "annotations" in dataset_dicts[0]
    if filter_empty and has_instances:
        dataset_dicts = filter_images_with_only_crowd_annotations(dataset_dicts, names)
    if min_keypoints > 0 and has_instances:
        dataset_dicts = filter_images_with_few_keypoints(dataset_dicts, min_keypoints)
    if check_consistency and has_instances:
        class_names = MetadataCatalog.get(names[0]).get("thing_classes")
        if class_names is not None:
            check_metadata_consistency("thing_classes", names)
            print_instances_class_histogram(dataset_dicts, class_names)
    if not dataset_dicts:
        raise ValueError(f"No valid data found in {', '.join(names)} after filtering.")
    return dataset_dicts


def trivial_batch_collator(batch: list[Any]) -> list[Any]:
    """Return the batch list unchanged (models take a list of dicts)."""
    return batch


def worker_init_reset_seed(worker_id: int) -> None:
    """Seed every RNG of a DataLoader worker from torch's per-worker seed.

    torch gives each worker ``base_seed + worker_id``, with ``base_seed`` drawn from the
    loader's generator, so workers differ from one another and a seeded run repeats.
    """
    seed_all_rng(torch.initial_seed() % 2**31)


def build_batch_data_loader(
    dataset: torchdata.Dataset,
    sampler: torchdata.Sampler | None,
    total_batch_size: int,
    *,
    aspect_ratio_grouping: bool = False,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    drop_last: bool = True,
    seed: int | None = None,
    aspect_ratios: Sequence[float] | None = None,
    **kwargs: Any,
) -> Any:
    """Batch a (mapped) dataset with a sampler into a loader of per-rank batches.

    A map-style dataset with a sampler is batched by a
    `~segtron.data.samplers.TrainingBatchSampler` (exposed as the loader's ``batch_sampler``),
    which the trainer repositions when it resumes a run, so that the resumed run loads the same
    batches, with the same augmentations, as an uninterrupted one. Aspect-ratio grouping then
    uses `aspect_ratios` (computed from the dataset dicts by `build_detection_train_loader`);
    without them it falls back to grouping loaded elements, as Detectron2 does.

    Args:
        dataset: a map-style dataset (with `sampler`) or an iterable dataset (sampler None).
        sampler: the indices to load.
        total_batch_size: the batch size summed over all ranks; must divide by world size.
        aspect_ratio_grouping: batch landscape and portrait images separately.
        num_workers: DataLoader workers.
        collate_fn: batch collation; the default keeps a list of dicts.
        drop_last: drop a last incomplete batch (always the case with a sampler, whose stream
            is normally infinite).
        seed: the run's seed of the per-element augmentation seeds (and of the workers' base
            seed); None draws one shared by all ranks.
        aspect_ratios: width / height of each element of `dataset`.
        **kwargs: more DataLoader arguments.

    Returns:
        An iterable of batches.
    """
    world_size = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world_size != 0:
        raise ValueError(
            f"Total batch size ({total_batch_size}) must be a positive multiple of the number "
            f"of processes ({world_size}); set SOLVER.IMS_PER_BATCH accordingly."
        )
    batch_size = total_batch_size // world_size
    collate = trivial_batch_collator if collate_fn is None else collate_fn
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(seed)
    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("An iterable dataset cannot be combined with a sampler.")
    elif sampler is None:
        raise ValueError(
            "A map-style dataset needs a sampler (e.g. TrainingSampler(len(dataset))); only an "
            "iterable dataset can be batched without one."
        )
    elif not aspect_ratio_grouping or aspect_ratios is not None:
        batch_sampler = TrainingBatchSampler(
            sampler,
            batch_size,
            aspect_ratios=list(aspect_ratios) if aspect_ratio_grouping else None,
            item_seed=seed,
        )
        return torchdata.DataLoader(
            SeededDataset(dataset),
            batch_sampler=batch_sampler,
            num_workers=num_workers,
            collate_fn=collate,
            worker_init_fn=worker_init_reset_seed,
            generator=generator,
            **kwargs,
        )
    else:
        dataset = ToIterableDataset(dataset, sampler, shard_chunk_size=batch_size)

    if aspect_ratio_grouping:
        if not drop_last:
            raise ValueError("Aspect-ratio grouping always drops incomplete batches.")
        loader = torchdata.DataLoader(
            dataset,
            num_workers=num_workers,
            collate_fn=operator.itemgetter(0),
            worker_init_fn=worker_init_reset_seed,
            generator=generator,
            **kwargs,
        )
        grouped = AspectRatioGroupedDataset(loader, batch_size)
        return grouped if collate_fn is None else MapDataset(grouped, collate_fn)
    return torchdata.DataLoader(
        dataset,
        batch_size=batch_size,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate,
        worker_init_fn=worker_init_reset_seed,
        generator=generator,
        **kwargs,
    )


def _aspect_ratios(dataset_dicts: list[Any]) -> list[float] | None:
    """width / height of each dict, or None when some dict lacks them."""
    try:
        return [d["width"] / d["height"] for d in dataset_dicts]
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def _registered_train_mapper(cfg: Any) -> Callable:
    """The training mapper that ``cfg.INPUT.DATASET_MAPPER_NAME`` names."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    try:
        mapper_class = DATASET_MAPPER_REGISTRY.get(name)
    except KeyError:
        known = sorted(name for name, _ in DATASET_MAPPER_REGISTRY)
        raise KeyError(
            f"cfg.INPUT.DATASET_MAPPER_NAME = {name!r} is not a registered mapper; known: "
            f"{known}. A project's mapper is registered when the project is imported "
            "(segtron.projects.load_projects)."
        ) from None
    return mapper_class(cfg, True)


def _train_loader_from_config(
    cfg: Any,
    mapper: Callable | None = None,
    *,
    dataset: Any = None,
    sampler: torchdata.Sampler | None = None,
) -> dict[str, Any]:
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=(
                cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
            ),
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
    if mapper is None:
        mapper = _registered_train_mapper(cfg)
    if sampler is None and not isinstance(dataset, torchdata.IterableDataset):
        sampler_name = cfg.DATALOADER.SAMPLER_TRAIN
        logger.info(f"Using training sampler {sampler_name}")
        if sampler_name == "TrainingSampler":
            sampler = TrainingSampler(len(dataset))
        elif sampler_name == "RepeatFactorTrainingSampler":
            factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
                dataset, cfg.DATALOADER.REPEAT_THRESHOLD, sqrt=cfg.DATALOADER.REPEAT_SQRT
            )
            sampler = RepeatFactorTrainingSampler(factors)
        else:
            raise ValueError(
                f"Unknown DATALOADER.SAMPLER_TRAIN {sampler_name!r}; use 'TrainingSampler' or "
                "'RepeatFactorTrainingSampler'."
            )
    return {
        "dataset": dataset,
        "sampler": sampler,
        "mapper": mapper,
        "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "aspect_ratio_grouping": cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
    }


@configurable(from_config=_train_loader_from_config)
def build_detection_train_loader(
    dataset: list[dict[str, Any]] | torchdata.Dataset,
    *,
    mapper: Callable[[Any], Any] | None,
    sampler: torchdata.Sampler | None = None,
    total_batch_size: int,
    aspect_ratio_grouping: bool = True,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Build an infinite training loader yielding lists of mapped dicts (one batch per rank).

    Call it with a config (``build_detection_train_loader(cfg, mapper=...)``: DATASETS.TRAIN,
    DATALOADER.*, SOLVER.IMS_PER_BATCH; without a mapper, the one that
    INPUT.DATASET_MAPPER_NAME names in ``DATASET_MAPPER_REGISTRY``) or with explicit arguments.
    An element whose image (or label PNG) is missing or cannot be decoded is skipped with a
    warning and another one is drawn (`~segtron.data.common.SkipUnreadableImages`).

    Args:
        dataset: a list of dataset dicts or a torch dataset.
        mapper: applied to each element; None when the dataset is already mapped.
        sampler: indices to load; defaults to a `TrainingSampler`. Must be None for an
            iterable dataset.
        total_batch_size: batch size over all ranks.
        aspect_ratio_grouping: batch landscape and portrait images separately.
        num_workers: DataLoader workers.
        collate_fn: batch collation; the default keeps a list of dicts.
        **kwargs: passed to `build_batch_data_loader` (e.g. ``seed``).

    Returns:
        An iterable of batches.
    """
    aspect_ratios = None
    if isinstance(dataset, list):
        aspect_ratios = _aspect_ratios(dataset) if aspect_ratio_grouping else None
        dataset = DatasetFromList(dataset, copy=False)
    if mapper is not None:
        dataset = MapDataset(dataset, SkipUnreadableImages(mapper))
    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("An iterable dataset cannot be combined with a sampler.")
    elif sampler is None:
        sampler = TrainingSampler(len(dataset))
    elif not isinstance(sampler, torchdata.Sampler):
        raise TypeError(f"Expected a torch Sampler, got {type(sampler)}.")
    kwargs.setdefault("aspect_ratios", aspect_ratios)
    return build_batch_data_loader(
        dataset,
        sampler,
        total_batch_size,
        aspect_ratio_grouping=aspect_ratio_grouping,
        num_workers=num_workers,
        collate_fn=collate_fn,
        **kwargs,
    )


def _test_loader_from_config(
    cfg: Any, dataset_name: str | Sequence[str], mapper: Callable | None = None
) -> dict[str, Any]:
    names = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name)
    proposal_files = None
    if cfg.MODEL.LOAD_PROPOSALS:
        tests = list(cfg.DATASETS.TEST)
        proposal_files = [cfg.DATASETS.PROPOSAL_FILES_TEST[tests.index(n)] for n in names]
    dataset = get_detection_dataset_dicts(names, filter_empty=False, proposal_files=proposal_files)
    if mapper is None:
        mapper = DatasetMapper(cfg, False)
    is_iterable = isinstance(dataset, torchdata.IterableDataset)
    return {
        "dataset": dataset,
        "mapper": mapper,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "sampler": None if is_iterable else InferenceSampler(len(dataset)),
    }


@configurable(from_config=_test_loader_from_config)
def build_detection_test_loader(
    dataset: list[dict[str, Any]] | torchdata.Dataset,
    *,
    mapper: Callable[[Any], Any] | None,
    sampler: torchdata.Sampler | None = None,
    batch_size: int = 1,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> torchdata.DataLoader:
    """Build a finite inference loader that visits each element once (sharded by rank).

    Call it with a config and a dataset name (``build_detection_test_loader(cfg, "name")``) or
    with explicit arguments. An element whose image (or label PNG) is missing or cannot be
    decoded is left out of its batch with a warning; with the default collation such a batch
    is an `~segtron.data.common.InferenceBatch` whose ``skipped`` lists them (possibly with no
    element left), which `~segtron.evaluation.inference_on_dataset` reports.

    Args:
        dataset: a list of dataset dicts or a torch dataset.
        mapper: applied to each element; None when the dataset is already mapped.
        sampler: defaults to an `InferenceSampler`; must be None for an iterable dataset.
        batch_size: images per batch on each rank.
        num_workers: DataLoader workers.
        collate_fn: batch collation; the default keeps a list of dicts.

    Returns:
        A DataLoader yielding lists of mapped dicts.
    """
    if isinstance(dataset, list):
        dataset = DatasetFromList(dataset, copy=False)
    if mapper is not None:
        dataset = MapDataset(dataset, SkipUnreadableImages(mapper, keep_marker=True))
    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("An iterable dataset cannot be combined with a sampler.")
    elif sampler is None:
        sampler = InferenceSampler(len(dataset))
    return torchdata.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=False,
        num_workers=num_workers,
        collate_fn=InferenceBatchCollator(collate_fn),
    )
