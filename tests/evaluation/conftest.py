"""Fixtures shared by the evaluation tests: writing small COCO-panoptic datasets to disk."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segtron.utils.panoptic import id2rgb


def _write_split(folder: Path, json_path: Path, categories: list[dict], images: list[dict], side):
    """Write the ``side`` ("gt" or "pred") maps of ``images`` as PNGs plus one JSON file."""
    folder.mkdir(parents=True, exist_ok=True)
    annotations = []
    for image in images:
        id_map, segments = image[side]
        file_name = f"{image['id']}.png"
        Image.fromarray(id2rgb(np.asarray(id_map))).save(folder / file_name)
        segments_info = []
        for seg in segments:
            seg = dict(seg)
            if side == "gt":
                seg.setdefault("iscrowd", 0)
                seg.setdefault("area", int((np.asarray(id_map) == seg["id"]).sum()))
            segments_info.append(seg)
        annotations.append(
            {"image_id": image["id"], "file_name": file_name, "segments_info": segments_info}
        )
    data = {
        "images": [
            {
                "id": image["id"],
                "file_name": f"{image['id']}.jpg",
                "height": int(np.asarray(image["gt"][0]).shape[0]),
                "width": int(np.asarray(image["gt"][0]).shape[1]),
            }
            for image in images
        ],
        "annotations": annotations,
        "categories": categories,
    }
    json_path.write_text(json.dumps(data))


@pytest.fixture
def pq_write_panoptic(tmp_path: Path) -> Callable[..., tuple[str, str]]:
    """A function writing GT and predictions in COCO panoptic format under ``tmp_path``.

    Call it as ``write(categories, images)`` with ``categories`` a list of ``(id, isthing)``
    and each image a dict ``{"id", "gt": (id_map, segments), "pred": (id_map, segments)}``;
    segments are dicts with ``id`` and ``category_id`` (GT: optional ``iscrowd``, ``area``
    defaults to the pixel count). It returns the GT and prediction JSON paths; the PNG folders
    are the JSON paths without ``.json``.
    """

    def write(categories: list[tuple[int, bool]], images: list[dict]) -> tuple[str, str]:
        cats = [
            {"id": cid, "name": f"c{cid}", "isthing": int(isthing)} for cid, isthing in categories
        ]
        _write_split(tmp_path / "gt", tmp_path / "gt.json", cats, images, "gt")
        _write_split(tmp_path / "pred", tmp_path / "pred.json", cats, images, "pred")
        return str(tmp_path / "gt.json"), str(tmp_path / "pred.json")

    return write
