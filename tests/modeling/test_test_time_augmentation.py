"""Tests of segtron.modeling.test_time_augmentation (DatasetMapperTTA, SemanticSegmentorWithTTA)
with hand-built toy models on CPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from segtron.config import get_cfg
from segtron.modeling import DatasetMapperTTA, SemanticSegmentorWithTTA, sem_seg_postprocess


def tta_cfg(min_sizes: tuple[int, ...], max_size: int = 1000, flip: bool = True) -> Any:
    cfg = get_cfg()
    cfg.TEST.AUG.ENABLED = True
    cfg.TEST.AUG.MIN_SIZES = min_sizes
    cfg.TEST.AUG.MAX_SIZE = max_size
    cfg.TEST.AUG.FLIP = flip
    return cfg


def random_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)


class ToyModel(nn.Module):
    """Scores from a per-image function, resized to the input's height/width as models do.

    Records the size of every image it sees and the size of every batch.
    """

    def __init__(self, scores_fn) -> None:
        super().__init__()
        self.scores_fn = scores_fn
        self.image_sizes: list[tuple[int, int]] = []
        self.batch_sizes: list[int] = []

    def forward(self, batched_inputs: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        self.batch_sizes.append(len(batched_inputs))
        outputs = []
        for x in batched_inputs:
            image = x["image"].float()
            size = tuple(image.shape[-2:])
            self.image_sizes.append(size)
            height, width = x.get("height", size[0]), x.get("width", size[1])
            outputs.append(
                {"sem_seg": sem_seg_postprocess(self.scores_fn(image), size, height, width)}
            )
        return outputs


def pixelwise_model() -> ToyModel:
    """A per-pixel MLP (1×1 convs): equivariant to horizontal flips, not symmetric."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    return ToyModel(lambda image: mlp(image[None] / 255.0)[0].detach())


def size_model() -> ToyModel:
    """Two constant score maps: the height and the width of the image the model is given."""

    def scores(image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        return torch.stack(
            [torch.full((height, width), float(height)), torch.full((height, width), float(width))]
        )

    return ToyModel(scores)


def test_flip_equivariant_model_gives_the_plain_result() -> None:
    image = random_image(30, 40)
    model = pixelwise_model()
    plain = model([{"image": image}])[0]["sem_seg"]
    tta = SemanticSegmentorWithTTA(tta_cfg((30,), flip=True), model)
    model.image_sizes.clear()
    out = tta([{"image": image, "height": 30, "width": 40}])[0]["sem_seg"]
    assert model.image_sizes == [(30, 40), (30, 40)]  # original and flipped
    # Averaging a flipped output without flipping it back would differ: the image is not
    # symmetric, so neither is the model's output.
    assert not torch.allclose(plain, plain.flip(dims=[-1]), atol=1e-3)
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-6)


def test_scores_are_the_exact_mean_over_sizes_and_flips() -> None:
    model = size_model()
    tta = SemanticSegmentorWithTTA(tta_cfg((15, 30, 45), max_size=50), model, batch_size=3)
    out = tta([{"image": random_image(30, 40)}])[0]["sem_seg"]
    # Short edge 15 -> 15×20, 30 -> 30×40, 45 -> 45×60 capped at a long edge of 50 -> 38×50
    # (37.5 rounded half up); each size also flipped.
    assert model.image_sizes == [(15, 20)] * 2 + [(30, 40)] * 2 + [(38, 50)] * 2
    assert model.batch_sizes == [3, 3]
    assert out.shape == (2, 30, 40)
    torch.testing.assert_close(out[0], torch.full((30, 40), (15 + 30 + 38) / 3))
    torch.testing.assert_close(out[1], torch.full((30, 40), (20 + 40 + 50) / 3))


def test_mapper_from_config_flip_option() -> None:
    image = {"image": random_image(30, 40)}
    assert len(DatasetMapperTTA(tta_cfg((15, 30, 45)))(image)) == 6
    no_flip = DatasetMapperTTA(tta_cfg((15, 30, 45), max_size=50, flip=False))(image)
    assert [tuple(x["image"].shape) for x in no_flip] == [(3, 15, 20), (3, 30, 40), (3, 38, 50)]
    with pytest.raises(ValueError, match="TEST.AUG.MIN_SIZES"):
        DatasetMapperTTA(tta_cfg(()))


@pytest.mark.parametrize("output_size", [(33, 47), (67, 93)])
def test_outputs_at_the_original_size_for_odd_sizes(output_size) -> None:
    # (67, 93): the input image was downscaled by the test mapper; the output is at the
    # original "height" × "width".
    model = pixelwise_model()
    tta = SemanticSegmentorWithTTA(tta_cfg((20, 41)), model)
    height, width = output_size
    inputs = {"image": random_image(33, 47), "height": height, "width": width}
    inputs["sem_seg"] = torch.zeros(33, 47, dtype=torch.long)  # labels are not passed on
    out = tta([inputs])[0]["sem_seg"]
    assert out.shape == (4, height, width)
    assert torch.isfinite(out).all()


def test_batch_of_two_images_of_different_sizes() -> None:
    model = pixelwise_model()
    tta = SemanticSegmentorWithTTA(tta_cfg((24, 37)), model, batch_size=3)
    inputs = [{"image": random_image(30, 40, seed=1)}, {"image": random_image(45, 31, seed=2)}]
    batch = tta(inputs)
    assert [tuple(x["sem_seg"].shape) for x in batch] == [(4, 30, 40), (4, 45, 31)]
    for single_input, from_batch in zip(inputs, batch):
        torch.testing.assert_close(tta([single_input])[0]["sem_seg"], from_batch["sem_seg"])


class FixedOutputModel(nn.Module):
    """Returns `make_output(input)` per input, whatever the input's height and width."""

    def __init__(self, make_output) -> None:
        super().__init__()
        self.make_output = make_output

    def forward(self, batched_inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.make_output(x) for x in batched_inputs]


def test_model_without_sem_seg_outputs_names_the_config_key() -> None:
    tta = SemanticSegmentorWithTTA(tta_cfg((30,)), FixedOutputModel(lambda x: {"instances": 0}))
    with pytest.raises(ValueError, match=r"TEST\.AUG\.ENABLED False") as info:
        tta([{"image": random_image(30, 40)}])
    assert "FixedOutputModel returned ['instances']" in str(info.value)


def test_model_ignoring_height_and_width_is_an_error() -> None:
    model = FixedOutputModel(lambda x: {"sem_seg": x["image"][:2].float()})
    tta = SemanticSegmentorWithTTA(tta_cfg((15,)), model)
    with pytest.raises(ValueError, match=r"size \(15, 20\) .* \(30, 40\)"):
        tta([{"image": random_image(30, 40)}])
