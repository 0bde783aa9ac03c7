"""Tests of segtron.model_zoo: config lookup, published checkpoint URLs, building models."""

from __future__ import annotations

from pathlib import Path

import pytest

from segtron import model_zoo
from segtron.checkpoint import DetectionCheckpointer
from segtron.config import ConfigKeyError
from segtron.modeling import GeneralizedRCNN, PanopticFPN

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ZOO = "https://dl.fbaipublicfiles.com/detectron2/"

# Detectron2's published weights of the configs shipped here (model id / file).
PUBLISHED = {
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x": "137260431/model_final_a54504.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x": "137849600/model_final_f10217.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x": "138205316/model_final_a3ec72.pkl",
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x": "139514544/model_final_dbfeb4.pkl",
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x": "139514569/model_final_c10459.pkl",
    "Cityscapes/mask_rcnn_R_50_FPN": "142423278/model_final_af9cf5.pkl",
}


@pytest.mark.parametrize(
    "name",
    [f"{name}.yaml" for name in PUBLISHED]
    + ["Synthetic/mask_rcnn_R_18_FPN.yaml", "Synthetic/panoptic_fpn_R_18.yaml"],
)
def test_get_config_file_finds_shipped_configs(name):
    path = Path(model_zoo.get_config_file(name))
    assert path.is_absolute() and path.is_file()
    assert path.read_bytes() == (CONFIGS / name).read_bytes()


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_checkpoint_urls_are_detectron2s(name):
    url = f"{ZOO}{name}/{PUBLISHED[name]}"
    assert model_zoo.get_checkpoint_url(f"{name}.yaml") == url
    assert model_zoo.get_checkpoint_url(name) == url


def test_unknown_configs_are_clear_errors():
    with pytest.raises(RuntimeError, match="Did you mean COCO-InstanceSegmentation/mask_rcnn_R_50"):
        model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R50_FPN_1x.yaml")
    with pytest.raises(RuntimeError, match="not available in the model zoo"):
        model_zoo.get_config_file("no/such/config.yaml")
    for outside in ("../setup.py", "/etc/passwd", ""):
        with pytest.raises(RuntimeError, match="relative to segtron's configs/"):
            model_zoo.get_config_file(outside)


def test_configs_without_published_weights():
    for name in ("Synthetic/mask_rcnn_R_18_FPN.yaml", "Misc/semantic_R_50_FPN_1x.yaml"):
        with pytest.raises(RuntimeError, match="Detectron2 published no weights") as info:
            model_zoo.get_checkpoint_url(name)
        assert "mask_rcnn_R_50_FPN_3x.yaml" in str(info.value)  # the list of those that have
    with pytest.raises(RuntimeError):
        model_zoo.get_config("Synthetic/mask_rcnn_R_18_FPN.yaml", trained=True)


def test_get_config():
    name = "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml"
    cfg = model_zoo.get_config(name)
    assert cfg.MODEL.META_ARCHITECTURE == "PanopticFPN"
    assert cfg.MODEL.WEIGHTS == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    assert cfg.SOLVER.MAX_ITER == 270000
    trained = model_zoo.get_config(name, trained=True)
    assert trained.MODEL.WEIGHTS == model_zoo.get_checkpoint_url(name)
    assert not trained.is_frozen()


def test_get_builds_the_model_on_the_cpu():
    model = model_zoo.get("Synthetic/panoptic_fpn_R_18.yaml", device="cpu")
    assert isinstance(model, PanopticFPN)
    assert model.training and model.device.type == "cpu"
    assert model.roi_heads.num_classes == 3


def test_get_trained_loads_the_published_weights(monkeypatch):
    loaded = []
    monkeypatch.setattr(DetectionCheckpointer, "load", lambda self, path: loaded.append(path))
    name = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
    model = model_zoo.get(name, trained=True, device="cpu")
    assert isinstance(model, GeneralizedRCNN)
    assert loaded == [model_zoo.get_checkpoint_url(name)]


def test_project_config_names_the_way_to_load_it(tmp_path, monkeypatch):
    project_cfg = tmp_path / "project.yaml"
    project_cfg.write_text("MODEL:\n  MY_PROJECT:\n    DEPTH: 3\n")
    monkeypatch.setattr(model_zoo.model_zoo, "get_config_file", lambda path: str(project_cfg))
    with pytest.raises(ConfigKeyError, match=r"segtron\.projects\.get_config"):
        model_zoo.get_config("Project/project.yaml")
