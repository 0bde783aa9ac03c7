"""``COCOPanopticEvaluator``: PQ / SQ / RQ of a model's ``panoptic_seg`` outputs, as in Detectron2.

Each output is stored as a COCO-panoptic PNG plus its ``segments_info`` (with dataset category
ids); ``evaluate`` gathers them from every rank, writes ``predictions.json`` and the PNGs, and
scores them with ``segtron.evaluation.panoptic_quality`` against the dataset's ``panoptic_json`` and
``panoptic_root``.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import tempfile
from collections import OrderedDict
from typing import Any

import numpy as np
from PIL import Image

from segtron.data import MetadataCatalog
from segtron.evaluation.evaluator import DatasetEvaluator
from segtron.evaluation.panoptic_quality import format_panoptic_results, pq_compute
from segtron.utils import comm
from segtron.utils.file_io import PathManager
from segtron.utils.panoptic import id2rgb

__all__ = ["COCOPanopticEvaluator"]

logger = logging.getLogger(__name__)


class COCOPanopticEvaluator(DatasetEvaluator):
    """Panoptic Quality of ``panoptic_seg`` predictions under the COCO panoptic API's rules.

    ``evaluate`` synchronizes the processes, so it must be called on every rank; only the main
    process returns results.

    Args:
        dataset_name: a dataset whose metadata has ``panoptic_json``, ``panoptic_root``,
            ``thing_dataset_id_to_contiguous_id`` and ``stuff_dataset_id_to_contiguous_id``
            (and ``label_divisor`` for outputs without ``segments_info``).
        output_dir: where ``predictions.json`` and the predicted PNGs (in ``predictions/``) are
            written; None uses a temporary folder that is removed afterwards.
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None) -> None:
        self._metadata = MetadataCatalog.get(dataset_name)
        self._thing_contiguous_id_to_dataset_id = {
            v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()
        }
        self._stuff_contiguous_id_to_dataset_id = {
            v: k for k, v in self._metadata.stuff_dataset_id_to_contiguous_id.items()
        }
        self._output_dir = output_dir
        if output_dir is not None:
            os.makedirs(output_dir, exist_ok=True)
        self._predictions: list[dict] = []

    def reset(self) -> None:
        """Forget the predictions of a previous round."""
        self._predictions = []

    def _convert_category_id(self, segment_info: dict) -> dict:
        """A copy of ``segment_info`` with its contiguous category id mapped to the dataset id.

        A segment without ``isthing`` is taken to carry a dataset category id already.
        """
        segment_info = dict(segment_info)
        isthing = segment_info.pop("isthing", None)
        if isthing is None:
            return segment_info
        mapping = (
            self._thing_contiguous_id_to_dataset_id
            if isthing
            else self._stuff_contiguous_id_to_dataset_id
        )
        contiguous_id = int(segment_info["category_id"])
        if contiguous_id not in mapping:
            kind = "thing" if isthing else "stuff"
            raise ValueError(
                f"Predicted segment {segment_info.get('id')} has {kind} category {contiguous_id}, "
                f"which is not a contiguous {kind} id of dataset '{self._metadata.name}' "
                f"(known: {sorted(mapping)})."
            )
        segment_info["category_id"] = mapping[contiguous_id]
        return segment_info

    def _segments_from_label_divisor(self, panoptic_img: np.ndarray) -> list[dict]:
        """Segments of an id map encoded as ``category * label_divisor + instance``, -1 = VOID."""
        label_divisor = self._metadata.label_divisor
        thing_ids = set(self._metadata.thing_dataset_id_to_contiguous_id.values())
        segments_info = []
        for panoptic_label in np.unique(panoptic_img).tolist():
            if panoptic_label == -1:
                continue
            pred_class = panoptic_label // label_divisor
            segments_info.append(
                {
                    "id": panoptic_label + 1,
                    "category_id": pred_class,
                    "isthing": pred_class in thing_ids,
                }
            )
        return segments_info

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Encode each ``panoptic_seg`` output as a PNG and keep it with its segments.

        Args:
            inputs: dataset dicts with ``image_id`` and ``file_name``.
            outputs: dicts whose ``panoptic_seg`` is ``(H×W ids, segments_info)``. When
                ``segments_info`` is None, the ids are decoded with the metadata's
                ``label_divisor`` (-1 is VOID) and shifted by one, as Detectron2 does.
        """
        for inp, output in zip(inputs, outputs):
            panoptic_img, segments_info = output["panoptic_seg"]
            if hasattr(panoptic_img, "cpu"):
                panoptic_img = panoptic_img.cpu().numpy()
            panoptic_img = np.asarray(panoptic_img, dtype=np.int64)
            if segments_info is None:
                segments_info = self._segments_from_label_divisor(panoptic_img)
                panoptic_img = panoptic_img + 1
            file_name = os.path.splitext(os.path.basename(inp["file_name"]))[0] + ".png"
            with io.BytesIO() as buffer:
                Image.fromarray(id2rgb(panoptic_img)).save(buffer, format="PNG")
                png_bytes = buffer.getvalue()
            self._predictions.append(
                {
                    "image_id": inp["image_id"],
                    "file_name": file_name,
                    "png_string": png_bytes,
                    "segments_info": [
                        _to_json_types(self._convert_category_id(s)) for s in segments_info
                    ],
                }
            )

    def evaluate(self) -> OrderedDict | None:
        """Gather the predictions of every rank, write them and compute PQ on the main process.

        Returns:
            ``{"panoptic_seg": {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st",
            "RQ_st"}}`` in percent on the main process (an empty dict when nothing was
            processed); None on the other ranks.
        """
        comm.synchronize()
        predictions = list(itertools.chain(*comm.gather(self._predictions)))
        if not comm.is_main_process():
            return None
        if not predictions:
            logger.warning("COCOPanopticEvaluator did not receive any prediction.")
            return OrderedDict()

        if self._output_dir is None:
            with tempfile.TemporaryDirectory(prefix="panoptic_eval") as tmp_dir:
                pq_res = self._write_and_score(predictions, tmp_dir)
        else:
            pq_res = self._write_and_score(predictions, self._output_dir)

        res = {}
        for suffix, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
            for key in ("pq", "sq", "rq"):
                res[key.upper() + suffix] = 100 * pq_res[group][key]
        _print_panoptic_results(pq_res)
        return OrderedDict({"panoptic_seg": res})

    def _write_and_score(self, predictions: list[dict], output_dir: str) -> dict[str, Any]:
        """Write ``predictions.json`` and ``predictions/*.png`` under ``output_dir``; score them."""
        pred_folder = os.path.join(output_dir, "predictions")
        os.makedirs(pred_folder, exist_ok=True)
        logger.info("Writing %d panoptic predictions to %s ...", len(predictions), pred_folder)
        annotations = []
        for pred in predictions:
            with open(os.path.join(pred_folder, pred["file_name"]), "wb") as f:
                f.write(pred["png_string"])
            annotations.append({k: v for k, v in pred.items() if k != "png_string"})

        gt_json = PathManager.get_local_path(self._metadata.panoptic_json)
        with open(gt_json, encoding="utf-8") as f:
            json_data = json.load(f)
        json_data["annotations"] = annotations
        predictions_json = os.path.join(output_dir, "predictions.json")
        with open(predictions_json, "w", encoding="utf-8") as f:
            json.dump(json_data, f)
        return pq_compute(
            gt_json,
            predictions_json,
            gt_folder=PathManager.get_local_path(self._metadata.panoptic_root),
            pred_folder=pred_folder,
        )


def _to_json_types(segment_info: dict) -> dict:
    """``segment_info`` with numpy / torch scalars turned into plain Python numbers."""
    return {k: v.item() if hasattr(v, "item") else v for k, v in segment_info.items()}


def _print_panoptic_results(pq_res: dict[str, Any]) -> None:
    """Log the All / Things / Stuff table of a ``pq_compute`` result."""
    logger.info("Panoptic Evaluation Results:\n%s", format_panoptic_results(pq_res))
