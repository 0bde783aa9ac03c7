"""Tests for segtron.structures.instances.Instances."""

import copy
import pickle

import pytest
import torch

from segtron.structures import BitMasks, Boxes, Instances, PolygonMasks


def _make(n: int, offset: int = 0) -> Instances:
    """Instances of an 8x10 image with n objects whose fields encode their index + offset."""
    ids = list(range(offset, offset + n))
    inst = Instances((8, 10))
    inst.scores = torch.tensor(ids, dtype=torch.float32)
    inst.pred_boxes = Boxes([[i, i, i + 1, i + 1] for i in ids])
    inst.names = [f"obj{i}" for i in ids]
    inst.masks = BitMasks(torch.zeros(n, 8, 10, dtype=torch.bool))
    inst.polys = PolygonMasks([[[i, 0, i + 1, 0, i + 1, 1]] for i in ids])
    return inst


def test_fields_and_attribute_access():
    inst = Instances((4, 5), labels=torch.tensor([3, 1, 2]))
    assert inst.image_size == (4, 5)
    assert len(inst) == 3
    assert inst.has("labels") and not inst.has("scores")
    assert inst.labels.tolist() == [3, 1, 2]
    assert inst.get("labels") is inst.labels
    inst.set("scores", torch.ones(3))
    assert set(inst.get_fields()) == {"labels", "scores"}
    inst.remove("scores")
    assert not inst.has("scores")
    with pytest.raises(AttributeError, match="scores"):
        _ = inst.scores


def test_field_length_mismatch_is_rejected():
    inst = Instances((4, 5), labels=torch.tensor([3, 1, 2]))
    with pytest.raises(ValueError, match="length 2 on Instances of length 3"):
        inst.scores = torch.ones(2)
    with pytest.raises(ValueError, match="length 0"):
        inst.set("boxes", Boxes([]))
    assert not inst.has("scores")
    with pytest.raises(ValueError):
        Instances((4, 5), a=torch.ones(2), b=[1])


def test_len_and_iter_errors():
    with pytest.raises(NotImplementedError, match="Empty Instances"):
        len(Instances((2, 2)))
    with pytest.raises(NotImplementedError, match="not iterable"):
        iter(_make(2))


def test_getitem_int():
    inst = _make(3)
    first = inst[0]
    assert isinstance(first, Instances) and len(first) == 1
    assert first.scores.tolist() == [0.0]
    assert first.names == ["obj0"]
    last = inst[-1]
    assert last.scores.tolist() == [2.0]
    assert last.pred_boxes.tensor.tolist() == [[2, 2, 3, 3]]
    assert len(last.polys) == 1 and last.polys.polygons[0][0][0] == 2
    assert last.image_size == (8, 10)
    for bad in (3, -4):
        with pytest.raises(IndexError, match="out of range"):
            inst[bad]
    with pytest.raises(IndexError):
        _make(0)[0]


def test_getitem_slice_mask_and_index_tensor():
    inst = _make(4)
    assert inst[1:3].scores.tolist() == [1.0, 2.0]
    assert inst[1:3].names == ["obj1", "obj2"]
    tensor_only = Instances((8, 10), scores=inst.scores, boxes=inst.pred_boxes, polys=inst.polys)
    picked = tensor_only[torch.tensor([True, False, False, True])]
    assert picked.scores.tolist() == [0.0, 3.0]
    assert picked.boxes.tensor[:, 0].tolist() == [0.0, 3.0]
    assert [p[0][0] for p in picked.polys.polygons] == [0.0, 3.0]
    reordered = tensor_only[torch.tensor([2, 0])]
    assert reordered.scores.tolist() == [2.0, 0.0]
    none = tensor_only[torch.zeros(4, dtype=torch.bool)]
    assert len(none) == 0 and len(none.boxes) == 0


def test_to_casts_fields_with_to():
    plain = Instances((8, 10), labels=torch.tensor([1, 2]), names=["a", "b"])
    cast = plain.to(torch.float64)
    assert cast.labels.dtype == torch.float64 and cast.labels.tolist() == [1.0, 2.0]
    assert cast.names is plain.names
    inst = _make(2)
    moved = inst.to("cpu")
    assert moved.pred_boxes.device == torch.device("cpu")
    assert moved.image_size == inst.image_size


def test_cat():
    out = Instances.cat([_make(2), _make(0, offset=10), _make(1, offset=5)])
    assert len(out) == 3
    assert out.scores.tolist() == [0.0, 1.0, 5.0]
    assert out.names == ["obj0", "obj1", "obj5"]
    assert out.pred_boxes.tensor[:, 0].tolist() == [0.0, 1.0, 5.0]
    assert out.masks.tensor.shape == (3, 8, 10)
    assert [p[0][0] for p in out.polys] == [0.0, 1.0, 5.0]
    single = _make(1)
    assert Instances.cat([single]) is single


def test_cat_errors():
    with pytest.raises(ValueError, match="same image size"):
        Instances.cat([_make(1), Instances((9, 10), scores=torch.ones(1))])
    with pytest.raises(ValueError, match="at least one"):
        Instances.cat([])
    weird = [Instances((2, 2), s="ab"), Instances((2, 2), s="cd")]
    with pytest.raises(ValueError, match="Unsupported type"):
        Instances.cat(weird)


def test_repr_and_copies():
    inst = Instances((3, 4), scores=torch.tensor([0.5]))
    text = repr(inst)
    assert "num_instances=1" in text
    assert "image_height=3" in text and "image_width=4" in text
    assert "scores" in text
    assert "num_instances=0" in repr(Instances((3, 4)))
    for clone in (copy.deepcopy(inst), pickle.loads(pickle.dumps(inst))):
        assert clone.scores.tolist() == [0.5] and clone.image_size == (3, 4)
