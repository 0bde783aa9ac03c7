"""Tests for segtron.structures.image_list.ImageList."""

import pytest
import torch

from segtron.structures import ImageList


def _image(*shape: int, fill: float) -> torch.Tensor:
    return torch.full(shape, fill)


def test_padding_with_size_divisibility_and_odd_sizes():
    a = torch.arange(3 * 17 * 23, dtype=torch.float32).reshape(3, 17, 23)
    b = _image(3, 31, 9, fill=-2.0)
    images = ImageList.from_tensors([a, b], size_divisibility=32, pad_value=7.0)
    assert images.tensor.shape == (2, 3, 32, 32)
    assert images.image_sizes == [(17, 23), (31, 9)]
    assert len(images) == 2
    assert torch.equal(images[0], a)
    assert torch.equal(images[1], b)
    # Padding goes bottom/right and holds pad_value.
    assert (images.tensor[0, :, 17:, :] == 7).all()
    assert (images.tensor[0, :, :, 23:] == 7).all()
    assert (images.tensor[1, :, 31:, :] == 7).all()
    assert (images.tensor[1, :, :, 9:] == 7).all()
    assert images.tensor.is_contiguous()


def test_no_divisibility_pads_to_max():
    images = ImageList.from_tensors([_image(2, 5, 3, fill=1), _image(2, 4, 6, fill=1)])
    assert images.tensor.shape == (2, 2, 5, 6)
    assert images.tensor.sum() == 2 * (5 * 3 + 4 * 6)


def test_single_image_fast_path():
    image = _image(3, 17, 23, fill=1.0)
    images = ImageList.from_tensors([image], size_divisibility=32, pad_value=-1.0)
    assert images.tensor.shape == (1, 3, 32, 32)
    assert torch.equal(images[0], image)
    assert images.tensor.sum() == 3 * 17 * 23 - 3 * (32 * 32 - 17 * 23)
    unpadded = ImageList.from_tensors([image])
    assert unpadded.tensor.shape == (1, 3, 17, 23)


def test_two_dimensional_images():
    images = ImageList.from_tensors((_image(3, 4, fill=1), _image(5, 2, fill=2)), 4)
    assert images.tensor.shape == (2, 8, 4)
    assert images[1].shape == (5, 2) and (images[1] == 2).all()
    assert images.image_sizes == [(3, 4), (5, 2)]


def test_padding_constraints():
    small = [_image(1, 17, 23, fill=1), _image(1, 9, 30, fill=1)]
    square = ImageList.from_tensors(small, padding_constraints={"square_size": 40})
    assert square.tensor.shape == (2, 1, 40, 40)
    rounded = ImageList.from_tensors(
        small, padding_constraints={"square_size": 40, "size_divisibility": 32}
    )
    assert rounded.tensor.shape == (2, 1, 64, 64)
    override = ImageList.from_tensors(
        small, size_divisibility=32, padding_constraints={"size_divisibility": 5}
    )
    assert override.tensor.shape == (2, 1, 20, 30)
    kept = ImageList.from_tensors(small, size_divisibility=8, padding_constraints={})
    assert kept.tensor.shape == (2, 1, 24, 32)
    single = ImageList.from_tensors(small[:1], padding_constraints={"square_size": 31})
    assert single.tensor.shape == (1, 1, 31, 31)
    assert torch.equal(single[0], small[0])
    with pytest.raises(ValueError, match="square_size=20"):
        ImageList.from_tensors(small, padding_constraints={"square_size": 20})


def test_errors():
    with pytest.raises(ValueError, match="non-empty"):
        ImageList.from_tensors([])
    with pytest.raises(ValueError, match="leading dimensions"):
        ImageList.from_tensors([torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)])
    with pytest.raises(ValueError, match="shape"):
        ImageList.from_tensors([torch.zeros(4)])


def test_to_and_device():
    images = ImageList.from_tensors([torch.zeros(3, 5, 6, dtype=torch.uint8)])
    cast = images.to(torch.float32)
    assert cast.tensor.dtype == torch.float32
    assert cast.image_sizes == [(5, 6)]
    assert cast.device == torch.device("cpu")
    direct = ImageList(torch.zeros(2, 3, 8, 8), [(8, 5), (2, 8)])
    assert direct[0].shape == (3, 8, 5) and direct[1].shape == (3, 2, 8)
