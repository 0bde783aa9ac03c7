"""The PanopticDeepLab model: configs, Detectron2 checkpoint names, mapper, train and inference."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from segtron.checkpoint import DetectionCheckpointer
from segtron.config import get_cfg
from segtron.data import DatasetCatalog
from segtron.data.datasets import register_synthetic
from segtron.modeling import build_model
from segtron.projects import get_config
from segtron.projects.panoptic_deeplab import (
    PanopticDeeplabDatasetMapper,
    add_panoptic_deeplab_config,
)

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "configs"
CITYSCAPES = CONFIGS / "Cityscapes-PanopticSegmentation"
PLAIN = CITYSCAPES / "panoptic_deeplab_R_52_os16_mg124_poly_90k_bs32_crop_512_1024.yaml"
DSCONV = CITYSCAPES / "panoptic_deeplab_R_52_os16_mg124_poly_90k_bs32_crop_512_1024_dsconv.yaml"
COCO = (
    CONFIGS
    / "COCO-PanopticSegmentation"
    / "panoptic_deeplab_R_52_os16_mg124_poly_200k_bs64_crop_640_640_coco_dsconv.yaml"
)
SYNTHETIC = CONFIGS / "Synthetic" / "panoptic_deeplab_R_18.yaml"
PREFIX = "pdltest"

# Detectron2's names and shapes for the Cityscapes R-52 model (19 classes).
COMMON_KEYS = {
    "backbone.stem.conv1.weight": (64, 3, 3, 3),
    "backbone.stem.conv3.norm.running_var": (128,),
    "backbone.res5.2.conv2.weight": (512, 512, 3, 3),
    "sem_seg_head.decoder.res5.project_conv.convs.0.weight": (256, 2048, 1, 1),
    "sem_seg_head.decoder.res5.project_conv.convs.4.1.bias": (256,),
    "sem_seg_head.decoder.res5.project_conv.project.norm.weight": (256,),
    "sem_seg_head.decoder.res3.project_conv.weight": (64, 512, 1, 1),
    "sem_seg_head.decoder.res2.project_conv.norm.running_mean": (32,),
    "sem_seg_head.predictor.weight": (19, 256, 1, 1),
    "ins_embed_head.decoder.res5.project_conv.convs.0.weight": (256, 2048, 1, 1),
    "ins_embed_head.decoder.res3.project_conv.weight": (64, 512, 1, 1),
    "ins_embed_head.decoder.res2.project_conv.weight": (32, 256, 1, 1),
    "ins_embed_head.center_head.0.weight": (128, 128, 3, 3),
    "ins_embed_head.center_head.1.norm.weight": (32,),
    "ins_embed_head.center_predictor.weight": (1, 32, 1, 1),
    "ins_embed_head.offset_predictor.bias": (2,),
}
PLAIN_KEYS = COMMON_KEYS | {
    "sem_seg_head.decoder.res5.project_conv.convs.1.weight": (256, 2048, 3, 3),
    "sem_seg_head.decoder.res3.fuse_conv.0.weight": (256, 64 + 256, 3, 3),
    "sem_seg_head.decoder.res2.fuse_conv.1.norm.running_var": (256,),
    "sem_seg_head.head.0.weight": (256, 256, 3, 3),
    "sem_seg_head.head.1.norm.weight": (256,),
    "ins_embed_head.decoder.res2.fuse_conv.0.weight": (128, 32 + 128, 3, 3),
    "ins_embed_head.offset_head.1.weight": (32, 128, 3, 3),
}
DSCONV_KEYS = COMMON_KEYS | {
    "sem_seg_head.decoder.res5.project_conv.convs.1.depthwise.weight": (2048, 1, 3, 3),
    "sem_seg_head.decoder.res5.project_conv.convs.3.pointwise.norm.weight": (256,),
    "sem_seg_head.decoder.res3.fuse_conv.depthwise.weight": (320, 1, 5, 5),
    "sem_seg_head.decoder.res3.fuse_conv.pointwise.weight": (256, 320, 1, 1),
    "sem_seg_head.head.depthwise.weight": (256, 1, 5, 5),
    "sem_seg_head.head.pointwise.norm.running_mean": (256,),
    "ins_embed_head.offset_head.depthwise.weight": (128, 1, 5, 5),
    "ins_embed_head.offset_head.pointwise.weight": (32, 128, 1, 1),
}


@pytest.mark.parametrize("path", [PLAIN, DSCONV, COCO, SYNTHETIC], ids=lambda p: p.stem)
def test_configs_load(path):
    cfg = get_config(str(path))
    assert cfg.MODEL.META_ARCHITECTURE == "PanopticDeepLab"
    assert cfg.SOLVER.OPTIMIZER == "ADAM" and cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR"
    assert (
        cfg.MODEL.PANOPTIC_DEEPLAB.USE_DEPTHWISE_SEPARABLE_CONV
        == cfg.MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV
    )


def test_coco_config_values():
    cfg = get_config(str(COCO))
    assert cfg.MODEL.PANOPTIC_DEEPLAB.NMS_KERNEL == 41
    assert cfg.MODEL.PANOPTIC_DEEPLAB.STUFF_AREA == 4096
    assert cfg.MODEL.SEM_SEG_HEAD.LOSS_TOP_K == 1.0 and cfg.INPUT.GAUSSIAN_SIGMA == 8
    assert list(cfg.INPUT.MIN_SIZE_TRAIN) == [int(x * 0.1 * 640) for x in range(5, 16)]


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_config_function_only_adds_keys():
    cfg = get_cfg()
    before = flat(cfg)
    add_panoptic_deeplab_config(cfg)
    after = flat(cfg)
    assert {k: after[k] for k in before} == before  # e.g. SOLVER.OPTIMIZER stays "SGD"
    assert after["INPUT.GAUSSIAN_SIGMA"] == 10 and after["MODEL.INS_EMBED_HEAD.NORM"] == "SyncBN"
    assert after["MODEL.SEM_SEG_HEAD.LOSS_TYPE"] == "hard_pixel_mining"  # DeepLab's keys too
    cfg.INPUT.GAUSSIAN_SIGMA = 3
    add_panoptic_deeplab_config(cfg)  # a second call keeps the values already there
    assert cfg.INPUT.GAUSSIAN_SIGMA == 3


class RecordingCheckpointer(DetectionCheckpointer):
    """Keeps what fvcore reports about the keys of the last loaded model."""

    incompatible: Any = None

    def _load_model(self, checkpoint: dict[str, Any]) -> Any:
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def build_cityscapes(path: Path) -> torch.nn.Module:
    cfg = get_config(str(path), ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    return build_model(cfg).eval()


@pytest.mark.slow
def test_detectron2_checkpoint_names_and_round_trip(tmp_path):
    state = build_cityscapes(PLAIN).state_dict()
    for key, shape in PLAIN_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    source = build_cityscapes(DSCONV)
    state = source.state_dict()
    for key, shape in DSCONV_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert "ins_embed_head.center_head.0.weight" in state  # the center head keeps its 3×3 convs
    # A Detectron2 model zoo file of these names loads with no key missing or unexpected.
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        weights = {name: tensor.numpy() for name, tensor in state.items()}
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo"}, f)
    target = build_cityscapes(DSCONV)
    checkpointer = RecordingCheckpointer(target)
    checkpointer.load(str(path))
    incompatible = checkpointer.incompatible
    assert incompatible.missing_keys == [] and incompatible.unexpected_keys == []
    for key, value in target.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.fixture(scope="module")
def tiny_opts(tmp_path_factory):
    """Options for the Synthetic config on tiny synthetic panoptic data (6 + 2 images, 32×40)."""
    if f"{PREFIX}_train_panoptic" not in DatasetCatalog:
        root = tmp_path_factory.mktemp("pdl_data")
        register_synthetic(
            root=root, prefix=PREFIX, num_images={"train": 6, "val": 2}, image_size=(32, 40)
        )
    opts = [
        "DATASETS.TRAIN",
        f"('{PREFIX}_train_panoptic',)",
        "DATASETS.TEST",
        f"('{PREFIX}_val_panoptic',)",
        "INPUT.MIN_SIZE_TRAIN",
        "(32,)",
        "INPUT.MIN_SIZE_TEST",
        "32",
        "INPUT.GAUSSIAN_SIGMA",
        "2",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        "2",
        "DATALOADER.NUM_WORKERS",
        "0",
    ]
    return opts


@pytest.fixture(scope="module")
def tiny_cfg(tiny_opts):
    return get_config(str(SYNTHETIC), tiny_opts)


def test_mapper_makes_aligned_targets(tiny_cfg):
    mapper = PanopticDeeplabDatasetMapper(tiny_cfg, True)
    dicts = DatasetCatalog.get(f"{PREFIX}_train_panoptic")
    out = mapper(dicts[0])
    height, width = out["image"].shape[1:]
    assert out["sem_seg"].shape == out["center"].shape == (height, width)
    assert out["offset"].shape == (2, height, width)
    assert out["center_weights"].shape == out["offset_weights"].shape == (1, height, width)
    assert set(out["sem_seg"].unique().tolist()) <= {0, 1, 2, 3, 4, 255}
    assert "pan_seg_file_name" not in out and "pan_seg_file_name" in dicts[0]
    with pytest.raises(KeyError, match="standard panoptic"):
        mapper({k: v for k, v in dicts[0].items() if k != "pan_seg_file_name"})


def test_train_losses_and_inference_outputs(tiny_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_cfg)
    mapper = PanopticDeeplabDatasetMapper(tiny_cfg, True)
    batch = [mapper(d) for d in DatasetCatalog.get(f"{PREFIX}_train_panoptic")[:2]]
    losses = model(batch)
    assert set(losses) == {"loss_sem_seg", "loss_center", "loss_offset"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.ins_embed_head.offset_predictor.weight.grad.abs().sum() > 0

    with pytest.raises(ValueError, match="PanopticDeeplabDatasetMapper"):
        model([{"image": batch[0]["image"]}])

    model.eval()
    model.threshold = -1.0  # an untrained heatmap: accept every local maximum
    with torch.no_grad():
        (out,) = model([{"image": batch[0]["image"], "height": 48, "width": 60}])
    assert out["sem_seg"].shape == (5, 48, 60)
    panoptic, segments_info = out["panoptic_seg"]
    assert panoptic.shape == (48, 60) and segments_info is None
    instances = out["instances"]
    assert instances.image_size == (48, 60)
    assert instances.pred_masks.shape[1:] == (48, 60)
    assert len(instances) == len(instances.scores) == len(instances.pred_boxes)
    assert all(c in (0, 1, 2) for c in instances.pred_classes.tolist())


@pytest.mark.slow
def test_train_net_trains_and_evaluates(tiny_opts, tmp_path):
    spec = importlib.util.spec_from_file_location("_tool_train_net", REPO / "tools/train_net.py")
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", str(SYNTHETIC), *tiny_opts, "OUTPUT_DIR", str(tmp_path)]
        # Two iterations do not train the centers: take every local maximum as one.
        + ["MODEL.PANOPTIC_DEEPLAB.CENTER_THRESHOLD", "-1.0"]
    )
    results = train_net.main(args)
    assert (tmp_path / "model_final.pth").is_file()
    assert 0 <= results["panoptic_seg"]["PQ"] <= 100
    assert 0 <= results["sem_seg"]["mIoU"] <= 100
    assert 0 <= results["segm"]["AP"] <= 100 and 0 <= results["bbox"]["AP"] <= 100
