"""Tests of the classical baselines (Otsu, k-means, GrabCut), segment naming and
ClassicalSegmentor, on hand-built images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segtron.projects.semantic_baselines import ClassicalSegmentor, ClassModel
from segtron.projects.semantic_baselines.classical_methods import (
    grabcut_segments,
    kmeans_segments,
    name_segments,
    otsu_segments,
    split_components,
)

SKY, GROUND, SQUARE = (235, 206, 135), (50, 90, 120), (40, 40, 220)  # BGR


def scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 40x48 BGR image: sky on top, ground below, a red square across both; and its labels
    (0 square, 1 sky, 2 ground)."""
    rng = np.random.default_rng(seed)
    image = np.empty((40, 48, 3), np.float64)
    labels = np.empty((40, 48), np.int64)
    image[:20], labels[:20] = SKY, 1
    image[20:], labels[20:] = GROUND, 2
    image[14:28, 18:32], labels[14:28, 18:32] = SQUARE, 0
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def test_otsu_splits_bright_sky_from_dark_ground() -> None:
    image, labels = scene()
    segments = otsu_segments(image)
    assert set(np.unique(segments)) == {0, 1}
    assert (segments[labels == 1] == 1).all()  # sky is brighter than the threshold
    assert (segments[labels == 2] == 0).all()


def test_kmeans_finds_the_three_colours() -> None:
    image, labels = scene()
    segments = kmeans_segments(image, k=3)
    for c in range(3):
        found = np.unique(segments[labels == c])
        assert len(found) == 1  # each region is one cluster ...
        assert (segments == found[0]).sum() == (labels == c).sum()  # ... and only it
    assert np.array_equal(segments, kmeans_segments(image, k=3))  # deterministic


def test_grabcut_separates_a_central_object() -> None:
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(128, 6, (40, 48, 3)), 0, 255).astype(np.uint8)
    image[12:28, 14:34] = SQUARE
    foreground = grabcut_segments(image, iters=3, margin=0.1).astype(bool)
    truth = np.zeros((40, 48), bool)
    truth[12:28, 14:34] = True
    assert iou(foreground, truth) > 0.9


def test_grabcut_falls_back_to_the_rectangle() -> None:
    flat = np.full((20, 20, 3), 100, np.uint8)  # nothing to model: OpenCV may fail
    segments = grabcut_segments(flat, iters=2, margin=0.25)
    assert segments.shape == (20, 20) and segments[0].sum() == 0
    tiny = grabcut_segments(np.zeros((2, 2, 3), np.uint8), margin=0.1)
    assert tiny.sum() == 0  # no room for a band: all background


def test_split_components_and_majority_naming() -> None:
    segments = np.array([[0, 0, 1, 0], [0, 0, 1, 0]])
    parts = split_components(segments)
    assert len(np.unique(parts)) == 3 and parts[0, 0] != parts[0, 3]
    # Per-pixel votes: class 1 wins the left block by majority even with one extreme pixel.
    log_post = np.zeros((8, 2))
    log_post[:, 1] = 1.0
    log_post[0] = [1000.0, 0.0]
    named = name_segments(parts, log_post)
    assert (named == 1).all()


def test_class_model_fit_and_posterior() -> None:
    image, labels = scene()
    labels_void = labels.copy()
    labels_void[0, 0] = 255
    model = ClassModel.fit([(image, labels_void)], num_classes=4, ignore_value=255)
    assert np.isneginf(model.log_prior[3])  # class 3 never appears
    np.testing.assert_allclose(np.exp(model.log_prior[:3]).sum(), 1.0)
    # Means of (B, G, R, height): sky's colour and a height in the top half.
    np.testing.assert_allclose(model.means[1, :3] * 255, SKY, atol=2)
    assert model.means[1, 3] < 0.5 < model.means[2, 3]
    with pytest.raises(ValueError, match="no class pixel"):
        ClassModel.fit([(image, np.full((40, 48), 255))], num_classes=3, ignore_value=255)


@pytest.mark.parametrize("method", ["otsu", "kmeans", "grabcut"])
def test_classical_segmentor_contract(method: str) -> None:
    train_image, train_labels = scene(seed=1)
    model = ClassicalSegmentor(
        method=method,
        class_model=ClassModel.fit([(train_image, train_labels)], 3, 255),
        kmeans_k=3,
    ).eval()
    image, labels = scene(seed=2)
    tensor = torch.as_tensor(image).permute(2, 0, 1).float()
    (out,) = model([{"image": tensor}])
    scores = out["sem_seg"]
    assert scores.shape == (3, 40, 48) and torch.equal(scores.sum(0), torch.ones(40, 48))
    predicted = scores.argmax(0).numpy()
    accuracy = (predicted == labels).mean()
    if method == "kmeans":  # its clusters are the three regions
        assert accuracy == 1.0
    else:  # two segments: sky and ground get their class, the square is lost or merged
        assert (predicted[labels == 1] == 1).mean() > 0.9 or method == "grabcut"
        assert accuracy > 0.5
    (resized,) = model([{"image": tensor, "height": 20, "width": 24}])
    assert resized["sem_seg"].shape == (3, 20, 24)
    assert torch.equal(resized["sem_seg"].argmax(0), scores.argmax(0)[::2, ::2])


def test_classical_segmentor_refuses_training_and_bad_method() -> None:
    image, labels = scene()
    class_model = ClassModel.fit([(image, labels)], 3, 255)
    model = ClassicalSegmentor(method="otsu", class_model=class_model)
    assert model.training
    with pytest.raises(RuntimeError, match="--eval-only"):
        model([{"image": torch.zeros(3, 8, 8)}])
    with pytest.raises(ValueError, match="MODEL.CLASSICAL.METHOD"):
        ClassicalSegmentor(method="watershed", class_model=class_model)
