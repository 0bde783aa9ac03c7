"""Tests of segtron.evaluation.panoptic_quality against hand-computed COCO panoptic API numbers."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest

from segtron.evaluation.panoptic_quality import (
    PQStat,
    format_panoptic_results,
    main,
    pq_compute,
    pq_compute_single_image,
)

THING, STUFF = 1, 2
CATEGORIES = {THING: {"id": THING, "isthing": 1}, STUFF: {"id": STUFF, "isthing": 0}}


def _row(*ids: int) -> np.ndarray:
    """A 1×N id map."""
    return np.array([ids], dtype=np.int64)


def _score(gt_map, gt_segments, pred_map, pred_segments, categories=CATEGORIES) -> PQStat:
    """Score one image; a GT segment without ``area`` gets its pixel count."""
    gt_segments = [{"area": int((gt_map == s["id"]).sum()), **s} for s in gt_segments]
    gt_ann = {"image_id": 7, "segments_info": gt_segments}
    pred_ann = {"image_id": 7, "segments_info": pred_segments}
    return pq_compute_single_image(gt_ann, pred_ann, gt_map, pred_map, categories)


def _seg(seg_id: int, category_id: int, area: int | None = None, iscrowd: int = 0) -> dict:
    seg = {"id": seg_id, "category_id": category_id, "iscrowd": iscrowd}
    if area is not None:
        seg["area"] = area
    return seg


def _counts(stat: PQStat, category_id: int) -> tuple[int, int, int]:
    cat = stat[category_id]
    return cat.tp, cat.fp, cat.fn


def test_perfect_prediction(pq_write_panoptic):
    id_map = np.zeros((8, 8), dtype=np.int64)
    id_map[:, :4] = 1
    id_map[2:5, 5:7] = 2
    id_map[6:, 4:] = 3
    segments = [
        {"id": 1, "category_id": STUFF},
        {"id": 2, "category_id": THING},
        {"id": 3, "category_id": THING},
    ]
    gt_json, pred_json = pq_write_panoptic(
        [(THING, True), (STUFF, False)],
        [{"id": 1, "gt": (id_map, segments), "pred": (id_map, segments)}],
    )
    res = pq_compute(gt_json, pred_json, num_workers=1)
    for group, n in (("All", 2), ("Things", 1), ("Stuff", 1)):
        assert res[group] == pytest.approx({"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": n})
    assert res["per_class"] == {
        THING: {"pq": 1.0, "sq": 1.0, "rq": 1.0},
        STUFF: {"pq": 1.0, "sq": 1.0, "rq": 1.0},
    }


def test_void_removed_from_union_and_group_averages():
    # GT: thing A on 0-5, VOID on 6-9, stuff B on 10-11. Pred P (thing) on 2-9 covers 4 pixels of
    # A and 4 of VOID: IoU = 4 / (8 + 6 - 4 - 4) = 2/3 (it would be 4/10 with VOID in the union).
    gt = _row(1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2, 2)
    pred = _row(0, 0, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6)
    stat = _score(
        gt,
        [_seg(1, THING, 6), _seg(2, STUFF, 2)],
        pred,
        [_seg(5, THING), _seg(6, STUFF)],
    )
    assert _counts(stat, THING) == (1, 0, 0)
    assert stat[THING].iou == pytest.approx(2 / 3)
    all_res, per_class = stat.pq_average(CATEGORIES, None)
    assert all_res == pytest.approx({"pq": 5 / 6, "sq": 5 / 6, "rq": 1.0, "n": 2})
    assert stat.pq_average(CATEGORIES, True)[0] == pytest.approx(
        {"pq": 2 / 3, "sq": 2 / 3, "rq": 1.0, "n": 1}
    )
    assert stat.pq_average(CATEGORIES, False)[0] == pytest.approx(
        {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    )
    assert per_class[THING] == pytest.approx({"pq": 2 / 3, "sq": 2 / 3, "rq": 1.0})


def test_gt_area_comes_from_json():
    # The JSON claims A has 10 pixels although the PNG shows 4: IoU = 4 / (4 + 10 - 4) = 0.4.
    gt = _row(1, 1, 1, 1)
    stat = _score(gt, [_seg(1, THING, area=10)], _row(5, 5, 5, 5), [_seg(5, THING)])
    assert _counts(stat, THING) == (0, 1, 1)


def test_void_covered_unmatched_prediction_is_not_fp():
    # Q lies on VOID for 3 of its 4 pixels (> 50 %): ignored. R is half on VOID (= 50 %): FP.
    gt = _row(1, 1, 1, 1, 0, 0, 0, 3, 0, 0, 3, 3)
    pred = _row(5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7)
    stat = _score(
        gt,
        [_seg(1, THING), _seg(3, STUFF)],
        pred,
        [_seg(5, THING), _seg(6, THING), _seg(7, STUFF)],
    )
    assert _counts(stat, THING) == (1, 0, 0)
    # Stuff: GT 3 (3 px) vs pred 7 (4 px, 2 on VOID): IoU = 2 / (4 + 3 - 2 - 2) = 2/3 -> TP.
    assert _counts(stat, STUFF) == (1, 0, 0)
    assert stat[STUFF].iou == pytest.approx(2 / 3)

    # Thing 6 has 1 pixel on VOID and 1 on stuff: exactly half is not more than half -> FP.
    half_void = _score(
        _row(1, 1, 0, 2),
        [_seg(1, THING), _seg(2, STUFF)],
        _row(5, 5, 6, 6),
        [_seg(5, THING), _seg(6, THING)],
    )
    assert _counts(half_void, THING) == (1, 1, 0)
    assert _counts(half_void, STUFF) == (0, 0, 1)


def test_crowd_region_of_same_category_excuses_fp():
    # Crowd C (thing) on 0-5, thing A on 6-9, stuff B on 10-13.
    # P (thing) on 0-2 lies on the thing crowd: ignored. S (stuff) on 3-5 lies on a crowd of
    # another category: FP. Crowd segments are never FN and never matched.
    gt = _row(1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3)
    pred = _row(5, 5, 5, 6, 6, 6, 7, 7, 7, 7, 8, 8, 8, 8)
    stat = _score(
        gt,
        [_seg(1, THING, iscrowd=1), _seg(2, THING), _seg(3, STUFF)],
        pred,
        [_seg(5, THING), _seg(6, STUFF), _seg(7, THING), _seg(8, STUFF)],
    )
    assert _counts(stat, THING) == (1, 0, 0)
    assert _counts(stat, STUFF) == (1, 1, 0)
    all_res, per_class = stat.pq_average(CATEGORIES, None)
    assert per_class[STUFF] == pytest.approx({"pq": 2 / 3, "sq": 1.0, "rq": 2 / 3})
    assert all_res == pytest.approx({"pq": 5 / 6, "sq": 1.0, "rq": 5 / 6, "n": 2})


def test_prediction_matching_crowd_exactly_is_not_tp():
    stat = _score(_row(1, 1, 1), [_seg(1, THING, iscrowd=1)], _row(5, 5, 5), [_seg(5, THING)])
    assert _counts(stat, THING) == (0, 0, 0)


def test_iou_exactly_half_is_not_a_match():
    # A has 4 pixels, P covers 2 of them: IoU = 2 / 4 = 0.5, not > 0.5 -> FP + FN.
    stat = _score(_row(1, 1, 1, 1), [_seg(1, THING)], _row(5, 5, 0, 0), [_seg(5, THING)])
    assert _counts(stat, THING) == (0, 1, 1)
    assert stat.pq_average(CATEGORIES, None)[0] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1}
    # Three of four pixels: IoU = 0.75 -> TP.
    stat = _score(_row(1, 1, 1, 1), [_seg(1, THING)], _row(5, 5, 5, 0), [_seg(5, THING)])
    assert _counts(stat, THING) == (1, 0, 0)
    assert stat[THING].iou == pytest.approx(0.75)


def test_different_categories_never_match():
    stat = _score(_row(1, 1), [_seg(1, THING)], _row(5, 5), [_seg(5, STUFF)])
    assert _counts(stat, THING) == (0, 0, 1)
    assert _counts(stat, STUFF) == (0, 1, 0)


def test_category_seen_on_neither_side_is_left_out():
    categories = {**CATEGORIES, 3: {"id": 3, "isthing": 1}}
    stat = _score(_row(1, 1, 2), [_seg(1, THING), _seg(2, STUFF)], _row(5, 5, 0), [_seg(5, THING)])
    # Thing: IoU 1. Stuff: one FN (PQ 0). Category 3: never seen -> not averaged.
    all_res, per_class = stat.pq_average(categories, None)
    assert all_res == pytest.approx({"pq": 0.5, "sq": 0.5, "rq": 0.5, "n": 2})
    assert stat.pq_average(categories, True)[0] == pytest.approx(
        {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    )
    assert per_class[3] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}


def test_empty_group_gives_zero():
    stat = _score(_row(1), [_seg(1, THING)], _row(5), [_seg(5, THING)])
    assert stat.pq_average({THING: CATEGORIES[THING]}, False)[0] == {
        "pq": 0.0,
        "sq": 0.0,
        "rq": 0.0,
        "n": 0,
    }


def test_pq_stat_merge():
    a = _score(_row(1, 1), [_seg(1, THING)], _row(5, 5), [_seg(5, THING)])
    b = _score(_row(1, 1), [_seg(1, THING)], _row(0, 5), [_seg(5, THING)])
    a += b
    assert _counts(a, THING) == (1, 1, 1)
    assert a[THING].iou == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("pred_map", "pred_segments", "message"),
    [
        (_row(5, 9), [_seg(5, THING)], "segment id 9 is in the predicted PNG but not in"),
        (_row(5, 5), [_seg(5, THING), _seg(6, THING)], r"segment ids \[6\] are in the predicted"),
        (_row(5, 5), [_seg(5, 42)], "predicted segment 5 has unknown category_id 42"),
    ],
)
def test_png_json_mismatch_errors(pred_map, pred_segments, message):
    with pytest.raises(ValueError, match="Image 7: " + message):
        _score(_row(1, 1), [_seg(1, THING)], pred_map, pred_segments)


def _single_image(pred_segments=None) -> list[dict]:
    segments = [{"id": 1, "category_id": THING}]
    return [
        {"id": 1, "gt": (_row(1, 1), segments), "pred": (_row(1, 1), pred_segments or segments)}
    ]


def test_file_errors(pq_write_panoptic, tmp_path):
    gt_json, pred_json = pq_write_panoptic([(THING, True)], _single_image())
    (tmp_path / "pred" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"Image 1: the predicted PNG .*1\.png"):
        pq_compute(gt_json, pred_json, num_workers=1)

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        pq_compute(gt_json, str(bad))
    with pytest.raises(FileNotFoundError, match="nowhere.json does not exist"):
        pq_compute(str(tmp_path / "nowhere.json"), pred_json)


def test_image_set_mismatch_errors(pq_write_panoptic, tmp_path):
    gt_json, pred_json = pq_write_panoptic([(THING, True)], _single_image())
    pred = json.loads((tmp_path / "pred.json").read_text())
    extra = dict(pred["annotations"][0], image_id=99)
    (tmp_path / "pred.json").write_text(json.dumps({"annotations": pred["annotations"] + [extra]}))
    with pytest.raises(ValueError, match=r"not in the ground truth, e.g. image ids \[99\]"):
        pq_compute(gt_json, pred_json)


def test_gt_images_without_prediction_are_left_out_with_a_warning(
    pq_write_panoptic, tmp_path, caplog
):
    segments = [_seg(1, THING)]
    images = [
        {"id": 1, "gt": (_row(1, 1), segments), "pred": (_row(1, 1), segments)},
        {"id": 2, "gt": (_row(1, 1), segments), "pred": (_row(0, 0), [])},
    ]
    gt_json, pred_json = pq_write_panoptic([(THING, True)], images)
    with caplog.at_level(logging.WARNING, logger="segtron"):
        assert pq_compute(gt_json, pred_json, num_workers=1)["All"]["pq"] == pytest.approx(2 / 3)
    assert not caplog.records
    pred = json.loads((tmp_path / "pred.json").read_text())
    pred["annotations"] = pred["annotations"][:1]  # image 2 was not predicted (e.g. skipped)
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    with caplog.at_level(logging.WARNING, logger="segtron"):
        res = pq_compute(gt_json, pred_json, num_workers=1)
    assert res["All"] == pytest.approx({"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1})
    assert "no prediction for 1 of the 2 ground-truth images, e.g. image ids [2]" in caplog.text


def test_per_image_errors_name_the_predicted_png(pq_write_panoptic, tmp_path):
    segments = [_seg(1, THING)]
    images = [{"id": 1, "gt": (_row(1, 1), segments), "pred": (_row(1, 2), segments)}]
    gt_json, pred_json = pq_write_panoptic([(THING, True)], images)
    pred_png = tmp_path / "pred" / "1.png"
    message = f"Image 1 (predicted PNG {pred_png}): segment id 2 is in the predicted PNG but not"
    with pytest.raises(ValueError, match=re.escape(message)):
        pq_compute(gt_json, pred_json, num_workers=1)
    pred_png.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=re.escape(f"cannot read the predicted PNG {pred_png}")):
        pq_compute(gt_json, pred_json, num_workers=1)


def test_gt_png_ids_missing_from_gt_json_are_ignored_and_reported(pq_write_panoptic, caplog):
    # GT PNG: thing 1 on 4 pixels and id 2, which the GT JSON does not list, on 2 pixels. The
    # prediction on id 2's pixels is a false positive, as in panopticapi: they are not VOID.
    gt_map, pred_map = _row(1, 1, 1, 1, 2, 2), _row(5, 5, 5, 5, 6, 6)
    pred_segments = [_seg(5, THING), _seg(6, THING)]
    stat = _score(gt_map, [_seg(1, THING)], pred_map, pred_segments)
    assert _counts(stat, THING) == (1, 1, 0)
    assert stat.unlisted_gt_ids == {"image 7": [2]}

    images = [
        {"id": k, "gt": (gt_map, [_seg(1, THING)]), "pred": (pred_map, pred_segments)}
        for k in (1, 2, 3)
    ]
    gt_json, pred_json = pq_write_panoptic([(THING, True)], images)
    with caplog.at_level(logging.WARNING, logger="segtron"):
        res = pq_compute(gt_json, pred_json, num_workers=2)  # warnings come from the workers
    assert res["All"]["pq"] == pytest.approx(3 / (3 + 0.5 * 3))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    gt_folder = gt_json[: -len(".json")]
    assert warnings == [
        f"The ground-truth PNG {gt_folder}/{k}.png has segment ids [2] missing from its JSON's "
        "segments_info; they are ignored (not VOID), as the COCO panoptic API does."
        for k in (1, 2, 3)
    ]


def _random_images(num_images: int, size: int, seed: int) -> list[dict]:
    """Random rectangles: stuff background, thing boxes, some VOID, crowd and jittered preds."""
    rng = np.random.default_rng(seed)
    images = []
    for image_id in range(num_images):
        gt = np.full((size, size), 1, dtype=np.int64)
        pred = np.full((size, size), 1, dtype=np.int64)
        gt_segments = [{"id": 1, "category_id": STUFF + 2 * int(rng.integers(0, 2))}]
        pred_segments = [{"id": 1, "category_id": gt_segments[0]["category_id"]}]
        gt[: rng.integers(0, size // 4)] = 0
        for k in range(2, int(rng.integers(2, 7))):
            y, x = rng.integers(0, size - size // 4, size=2)
            h, w = rng.integers(size // 8, size // 3, size=2)
            category_id = THING + 2 * int(rng.integers(0, 2))
            gt[y : y + h, x : x + w] = k
            gt_segments.append(
                {"id": k, "category_id": category_id, "iscrowd": int(rng.random() < 0.15)}
            )
            if rng.random() < 0.85:
                dy, dx = rng.integers(-size // 16, size // 16 + 1, size=2)
                pred[max(y + dy, 0) : y + dy + h, max(x + dx, 0) : x + dx + w] = k
                pred_category = category_id if rng.random() < 0.9 else 3
                pred_segments.append({"id": k, "category_id": pred_category})
        gt_present = set(np.unique(gt).tolist())
        pred_present = set(np.unique(pred).tolist())
        images.append(
            {
                "id": image_id,
                "gt": (gt, [s for s in gt_segments if s["id"] in gt_present]),
                "pred": (pred, [s for s in pred_segments if s["id"] in pred_present]),
            }
        )
    return images


RANDOM_CATEGORIES = [(1, True), (2, False), (3, True), (4, False)]


def test_multi_worker_equals_single_worker(pq_write_panoptic):
    gt_json, pred_json = pq_write_panoptic(RANDOM_CATEGORIES, _random_images(30, 32, seed=0))
    single = pq_compute(gt_json, pred_json, num_workers=1)
    multi = pq_compute(gt_json, pred_json, num_workers=2)
    assert single["All"]["n"] == 4
    assert 0.2 < single["All"]["pq"] < 0.95
    for group in ("All", "Things", "Stuff"):
        assert multi[group] == pytest.approx(single[group], rel=1e-12)
    for category_id, values in single["per_class"].items():
        assert multi["per_class"][category_id] == pytest.approx(values, rel=1e-12)


def test_cli_prints_table(pq_write_panoptic, capsys):
    gt_json, pred_json = pq_write_panoptic(RANDOM_CATEGORIES, _random_images(200, 64, seed=1))
    assert main(["--gt-json", gt_json, "--pred-json", pred_json, "--workers", "2"]) == 0
    out = capsys.readouterr().out
    expected = pq_compute(gt_json, pred_json, num_workers=1)
    assert format_panoptic_results(expected) in out
    assert f"{100 * expected['All']['pq']:.3f}" in out
    assert "Time elapsed:" in out


def test_cli_reports_bad_input(tmp_path, capsys):
    missing = str(tmp_path / "missing.json")
    assert main(["--gt-json", missing, "--pred-json", missing]) == 1
    assert "missing.json does not exist" in capsys.readouterr().err
