"""Tests of the Visualizer, the VideoVisualizer and the colormap: what ends up in the pixels."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from segtron.data import DatasetCatalog, MetadataCatalog
from segtron.data.catalog import Metadata
from segtron.data.datasets import register_synthetic
from segtron.data.detection_utils import read_image
from segtron.structures import Boxes, Instances
from segtron.utils.colormap import colormap, random_color, random_colors
from segtron.utils.panoptic import rgb2id
from segtron.utils.video_visualizer import VideoVisualizer
from segtron.utils.visualizer import ColorMode, GenericMask, Visualizer

H, W = 100, 120
GREY = 128
THING_COLORS = [[220, 20, 60], [0, 130, 200], [250, 190, 0]]
STUFF_COLORS = [[135, 206, 235], [120, 90, 50]]


def _metadata(**extra) -> Metadata:
    return Metadata(
        name="vis-test",
        thing_classes=["circle", "square", "triangle"],
        thing_colors=THING_COLORS,
        stuff_classes=["sky", "ground"],
        stuff_colors=STUFF_COLORS,
        ignore_label=255,
        **extra,
    )


def _grey(value: int = GREY) -> np.ndarray:
    return np.full((H, W, 3), value, dtype=np.uint8)


def _blend(color, background, alpha):
    return alpha * np.asarray(color, dtype=np.float64) + (1 - alpha) * np.asarray(background)


def _assert_close(pixel, expected, tol=3.0):
    assert np.abs(pixel.astype(np.float64) - expected).max() <= tol, (pixel, expected)


def _rect_mask(x0, y0, x1, y1, height=H, width=W) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _instances(boxes, masks, classes, scores=None, image_size=(H, W)) -> Instances:
    fields = {
        "pred_boxes": Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
        "pred_classes": torch.tensor(classes, dtype=torch.int64),
        "scores": torch.tensor(scores if scores is not None else [0.9] * len(classes)),
    }
    if masks is not None:
        fields["pred_masks"] = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, H, W)
    return Instances(image_size, **fields)


def test_colormap_table():
    table = colormap(rgb=True, maximum=1)
    assert table.shape == (74, 3) and table.min() >= 0 and table.max() <= 1
    np.testing.assert_allclose(colormap(rgb=False)[0], table[0, ::-1] * 255, rtol=1e-6)
    drawn = random_color(rgb=True, maximum=1)
    assert any(np.allclose(drawn, c) for c in table)
    drawn = random_colors(10, rgb=True, maximum=1)
    assert len(drawn) == 10 and all(any(np.allclose(d, c) for c in table) for d in drawn)
    with pytest.raises(ValueError):
        colormap(maximum=10)


def test_generic_mask_forms_agree():
    mask = _rect_mask(10, 20, 40, 50)
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    polygon = [[10, 20, 40, 20, 40, 50, 10, 50]]
    for given in (mask, rle, polygon, torch.from_numpy(mask)):
        generic = GenericMask(given, H, W)
        assert generic.area() == 30 * 30
        np.testing.assert_array_equal(generic.bbox(), [10, 20, 40, 50])
        assert generic.mask.sum() == 900 and len(generic.polygons) == 1
    with pytest.raises(ValueError, match="size"):
        GenericMask(np.zeros((5, 5)), H, W)


def test_instance_mask_box_and_label_are_drawn():
    color = THING_COLORS[1]
    predictions = _instances([[20, 40, 60, 90]], [_rect_mask(25, 45, 55, 85)], [1], [0.93])
    vis = Visualizer(_grey(), _metadata(), instance_mode=ColorMode.SEGMENTATION)
    out = vis.draw_instance_predictions(predictions).get_image()
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    # Inside the mask: the image blended with the exact class colour (alpha 0.8).
    _assert_close(out[65, 40], _blend(color, [GREY] * 3, 0.8))
    # Far from the instance the image is untouched.
    np.testing.assert_array_equal(out[95, 110], [GREY] * 3)
    # The label "square 93%" sits on the box's top edge: its box in the class colour and its
    # text in white (the colour is dark) are there, above the box.
    above = out[15:40, 21:70].reshape(-1, 3).astype(np.float64)
    label_background = _blend(color, [GREY] * 3, 0.85)
    assert (np.abs(above - label_background).max(axis=1) <= 4).sum() > 100
    assert (above.min(axis=1) >= 235).sum() > 15  # white text pixels


def test_labels_stay_inside_the_image():
    # A box in the top-right corner: "triangle 99%" cannot go above it nor extend rightwards.
    predictions = _instances([[100, 0, 120, 20]], None, [2], [0.99])
    vis = Visualizer(_grey(), _metadata(), instance_mode=ColorMode.SEGMENTATION)
    out = vis.draw_instance_predictions(predictions).get_image().astype(np.float64)
    label_background = _blend(THING_COLORS[2], [GREY] * 3, 0.85)
    is_label = np.abs(out - label_background).max(axis=2) <= 4
    ys, xs = np.nonzero(is_label)
    assert len(xs) > 100
    assert xs.min() < 80  # moved left to fit ...
    assert xs.max() >= W - 2 and ys.min() <= 1  # ... and stops at the image's edges


def test_small_image_labels_have_a_minimum_size():
    small = np.full((32, 40, 3), GREY, dtype=np.uint8)
    predictions = _instances([[5, 12, 35, 30]], None, [0], [0.5], image_size=(32, 40))
    vis = Visualizer(small, _metadata(), scale=3.0, instance_mode=ColorMode.SEGMENTATION)
    out = vis.draw_instance_predictions(predictions)
    image = out.get_image().astype(np.float64)
    assert image.shape == (96, 120, 3)
    is_text = image.min(axis=2) >= 235  # white text on the dark red box
    ys = np.nonzero(is_text.any(axis=1))[0]
    assert ys.max() - ys.min() >= 8  # glyphs at least 8 output pixels tall


def test_sem_seg_colours_and_ignore_label():
    sem_seg = np.zeros((H, W), dtype=np.int64)
    sem_seg[:, 60:] = 1
    sem_seg[:20, :20] = 255
    img = _grey(100)
    out = Visualizer(img, _metadata()).draw_sem_seg(torch.from_numpy(sem_seg)).get_image()
    _assert_close(out[90, 30], _blend(STUFF_COLORS[0], [100] * 3, 0.8))
    _assert_close(out[90, 110], _blend(STUFF_COLORS[1], [100] * 3, 0.8))
    np.testing.assert_array_equal(out[5, 5], [100] * 3)  # ignore_label: not drawn
    # C×H×W scores draw their best class: the same picture.
    scores = torch.nn.functional.one_hot(torch.from_numpy(sem_seg.clip(0, 1)), 2).permute(2, 0, 1)
    sem_seg_no_ignore = sem_seg.clip(0, 1)
    from_labels = Visualizer(img, _metadata()).draw_sem_seg(sem_seg_no_ignore).get_image()
    from_scores = Visualizer(img, _metadata()).draw_sem_seg(scores.float()).get_image()
    np.testing.assert_array_equal(from_labels, from_scores)


def test_panoptic_colours_void_and_encoded_ids():
    panoptic = np.zeros((H, W), dtype=np.int64)
    panoptic[:, :60] = 1  # sky
    panoptic[40:80, 70:110] = 2  # a square
    segments = [
        {"id": 1, "category_id": 0, "isthing": False},
        {"id": 2, "category_id": 1, "isthing": True, "score": 0.8},
    ]
    img = _grey(90)
    vis = Visualizer(img, _metadata(), instance_mode=ColorMode.SEGMENTATION)
    out = vis.draw_panoptic_seg(torch.from_numpy(panoptic), segments).get_image()
    _assert_close(out[90, 10], _blend(STUFF_COLORS[0], [90] * 3, 0.7))
    _assert_close(out[77, 100], _blend(THING_COLORS[1], [90] * 3, 0.7))
    np.testing.assert_array_equal(out[10, 115], [90] * 3)  # VOID
    # Without segments_info, ids are category * label_divisor + instance (-1 = VOID).
    encoded = np.where(panoptic == 1, 4 * 1000, np.where(panoptic == 2, 1 * 1000 + 7, -1))
    meta = Metadata(
        name="vis-test-encoded",
        thing_classes=["circle", "square", "triangle", "sky", "ground"],
        thing_colors=THING_COLORS + STUFF_COLORS,
        stuff_classes=["circle", "square", "triangle", "sky", "ground"],
        stuff_colors=THING_COLORS + STUFF_COLORS,
        label_divisor=1000,
        thing_dataset_id_to_contiguous_id={1: 0, 2: 1, 3: 2},
    )
    vis = Visualizer(img, meta, instance_mode=ColorMode.SEGMENTATION)
    out = vis.draw_panoptic_seg(encoded, None).get_image()
    _assert_close(out[90, 10], _blend(STUFF_COLORS[1], [90] * 3, 0.7))
    _assert_close(out[77, 100], _blend(THING_COLORS[1], [90] * 3, 0.7))
    np.testing.assert_array_equal(out[10, 115], [90] * 3)


def test_colours_are_stable_across_images():
    one = _instances([[10, 10, 50, 50]], [_rect_mask(10, 10, 50, 50)], [2])
    two = _instances(
        [[60, 50, 110, 95], [10, 10, 50, 50]],
        [_rect_mask(60, 50, 110, 95), _rect_mask(10, 10, 50, 50)],
        [0, 2],
    )
    for metadata in (_metadata(), None):  # metadata colours, then fallback colours by class
        images = [
            Visualizer(_grey(), metadata, instance_mode=ColorMode.SEGMENTATION)
            .draw_instance_predictions(p)
            .get_image()
            for p in (one, two)
        ]
        np.testing.assert_array_equal(images[0][45, 15], images[1][45, 15])
        assert not np.array_equal(images[1][45, 15], images[1][75, 85])
    # IMAGE mode: jittered per instance, yet the same predictions give the same picture.
    first = Visualizer(_grey(), _metadata()).draw_instance_predictions(two).get_image()
    again = Visualizer(_grey(), _metadata()).draw_instance_predictions(two).get_image()
    np.testing.assert_array_equal(first, again)


def test_empty_predictions_leave_the_image_unchanged():
    img = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    empty = _instances([], [], [])
    assert len(empty) == 0
    for mode in (ColorMode.IMAGE, ColorMode.SEGMENTATION):
        vis = Visualizer(img, _metadata(), instance_mode=mode)
        np.testing.assert_array_equal(vis.draw_instance_predictions(empty).get_image(), img)
    # In IMAGE_BW, with no instance to keep in colour, the whole image turns grey.
    vis = Visualizer(img, _metadata(), instance_mode=ColorMode.IMAGE_BW)
    grey = vis.draw_instance_predictions(empty).get_image().astype(np.int64)
    assert np.abs(grey - grey.mean(axis=2, keepdims=True)).max() <= 1
    vis = Visualizer(img, None)
    np.testing.assert_array_equal(vis.overlay_instances().get_image(), img)
    all_ignored = np.full((H, W), 255)
    np.testing.assert_array_equal(vis.draw_sem_seg(all_ignored).get_image(), img)


def test_vis_image_save_writes_png_of_the_scaled_size(tmp_path):
    vis = Visualizer(_grey(), _metadata(), scale=2.0)
    vis.draw_box((10, 10, 50, 40), edge_color="r")
    vis.draw_text("hello", (60, 50))
    path = tmp_path / "drawn.png"
    vis.get_output().save(str(path))
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.mode == "RGB"
        assert saved.size == (2 * W, 2 * H)
        np.testing.assert_array_equal(np.asarray(saved), vis.output.get_image())


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    if "vt_val" not in DatasetCatalog.list():
        root = tmp_path_factory.mktemp("synthetic")
        register_synthetic(root=root, prefix="vt", num_images={"val": 4})
    return "vt_val"


def _blended_fraction(drawn, img, mask, color, alpha=0.5) -> float:
    """Fraction of the mask's pixels drawn as the image blended with ``color``."""
    expected = _blend(color, img[mask], alpha)
    return float((np.abs(drawn[mask] - expected).max(axis=1) <= 3).mean())


def _draw_at_scale_3(dic, metadata):
    """Draw at scale 3 (as the demo does), sampled back at the image's pixel centres."""
    img = read_image(dic["file_name"], "RGB")
    vis = Visualizer(img, metadata, scale=3.0, instance_mode=ColorMode.SEGMENTATION)
    drawn = vis.draw_dataset_dict(dic).get_image()
    assert drawn.shape == (3 * img.shape[0], 3 * img.shape[1], 3)
    return img, drawn[1::3, 1::3]


def test_draw_dataset_dict_instances_polygons_and_rle(synthetic):
    meta = MetadataCatalog.get(synthetic)
    kinds = set()
    for dic in DatasetCatalog.get(synthetic):
        img, drawn = _draw_at_scale_3(dic, meta)
        for ann in dic["annotations"]:
            segm = ann["segmentation"]
            mask = GenericMask(segm, *img.shape[:2]).mask.astype(bool)
            if mask.sum() < 150:  # mostly under its label
                continue
            kinds.add("polygon" if isinstance(segm, list) else "rle")
            color = meta.thing_colors[ann["category_id"]]
            assert _blended_fraction(drawn, img, mask, color) > 0.45, ann
    assert kinds == {"polygon", "rle"}


def test_draw_dataset_dict_panoptic(synthetic):
    name = synthetic + "_panoptic"
    meta = MetadataCatalog.get(name)
    for dic in DatasetCatalog.get(name):
        img, drawn = _draw_at_scale_3(dic, meta)
        ids = rgb2id(np.asarray(Image.open(dic["pan_seg_file_name"]).convert("RGB")))
        for segment in dic["segments_info"]:
            mask = ids == segment["id"]
            if segment["isthing"]:
                color, least = meta.thing_colors[segment["category_id"]], 0.45
                if mask.sum() < 500:  # a label in the middle covers much of a small thing
                    continue
            else:
                color, least = meta.stuff_colors[segment["category_id"]], 0.85
            assert _blended_fraction(drawn, img, mask, color) > least, segment


def test_video_visualizer_keeps_the_colour_of_a_moving_instance():
    video = VideoVisualizer(_metadata())
    frames = []
    for shift in (0, 4, 8):
        box = [20 + shift, 40, 60 + shift, 90]
        frames.append(
            video.draw_instance_predictions(
                _grey(), _instances([box], [_rect_mask(*[int(v) for v in box])], [1])
            ).get_image()
        )
    centre = (65, 45)
    assert not np.array_equal(frames[0][centre], [GREY] * 3)
    for frame in frames[1:]:
        np.testing.assert_array_equal(frame[centre], frames[0][centre])
    # A new instance elsewhere gets another colour; the tracked one keeps its own.
    both = _instances(
        [[28, 40, 68, 90], [80, 10, 115, 40]],
        [_rect_mask(28, 40, 68, 90), _rect_mask(80, 10, 115, 40)],
        [1, 1],
    )
    frame = video.draw_instance_predictions(_grey(), both).get_image()
    np.testing.assert_array_equal(frame[centre], frames[0][centre])
    assert not np.array_equal(frame[30, 100], frames[0][centre])
    with pytest.raises(ValueError):
        VideoVisualizer(_metadata(), ColorMode.SEGMENTATION)


def test_video_visualizer_tracks_panoptic_things():
    video = VideoVisualizer(_metadata())
    colours = []
    for shift in (0, 3):
        panoptic = np.zeros((H, W), dtype=np.int64)
        panoptic[30:70, 30 + shift : 70 + shift] = 5
        segments = [{"id": 5, "category_id": 0, "isthing": True}]
        out = video.draw_panoptic_seg(_grey(), panoptic, segments).get_image()
        colours.append(out[33, 36])
    np.testing.assert_array_equal(colours[0], colours[1])
    assert not np.array_equal(colours[0], [GREY] * 3)
