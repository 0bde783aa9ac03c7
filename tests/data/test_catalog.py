"""Tests of DatasetCatalog and MetadataCatalog."""

import copy
import pickle

import pytest

from segtron.data import DatasetCatalog, Metadata, MetadataCatalog


@pytest.fixture
def name(request):
    dataset = f"test_catalog_{request.node.name}"
    yield dataset
    DatasetCatalog.pop(dataset, None)
    MetadataCatalog.pop(dataset, None)


def test_register_is_lazy_and_get_calls_loader(name):
    calls = []

    def load():
        calls.append(1)
        return [{"file_name": "a.jpg"}]

    DatasetCatalog.register(name, load)
    assert calls == [] and name in DatasetCatalog.list()
    assert DatasetCatalog.get(name) == [{"file_name": "a.jpg"}]
    assert calls == [1]


def test_register_twice_or_non_callable_is_an_error(name):
    DatasetCatalog.register(name, list)
    with pytest.raises(KeyError, match="already registered"):
        DatasetCatalog.register(name, list)
    with pytest.raises(TypeError, match="callable"):
        DatasetCatalog.register(name + "_other", [1, 2])


def test_unknown_dataset_lists_registered_names(name):
    DatasetCatalog.register(name, list)
    with pytest.raises(KeyError, match=f"not registered.*{name}"):
        DatasetCatalog.get(name + "_missing")


def test_metadata_set_once_and_readable_errors(name):
    meta = MetadataCatalog.get(name)
    assert meta is MetadataCatalog.get(name) and meta.name == name
    meta.set(thing_classes=["a", "b"], ignore_label=255)
    meta.thing_classes = ["a", "b"]  # same value again is fine
    with pytest.raises(ValueError, match="thing_classes.*cannot be changed"):
        meta.thing_classes = ["c"]
    with pytest.raises(AttributeError, match="stuff_classes.*Available keys are.*thing_classes"):
        _ = meta.stuff_classes
    assert meta.get("stuff_classes", "none") == "none"
    assert meta.as_dict() == {"name": name, "thing_classes": ["a", "b"], "ignore_label": 255}


def test_metadata_copies_and_pickles():
    meta = Metadata(name="x", thing_classes=["a"])
    for clone in (copy.deepcopy(meta), pickle.loads(pickle.dumps(meta))):
        assert clone.as_dict() == meta.as_dict()


def test_metadata_catalog_rejects_empty_name():
    with pytest.raises(ValueError, match="non-empty"):
        MetadataCatalog.get("")
