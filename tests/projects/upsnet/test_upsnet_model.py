"""Tests of the UPSNet model: configs, training losses, batched inference, train_net."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from segtron.modeling import build_model
from segtron.projects import get_config
from segtron.projects.upsnet import UPSNet, add_upsnet_config
from segtron.structures import BitMasks, Boxes, Instances
from segtron.utils.events import EventStorage

REPO = Path(__file__).resolve().parents[3]
SYNTHETIC = REPO / "configs" / "Synthetic" / "upsnet_R_18.yaml"
NO_UNKNOWN = REPO / "configs" / "Synthetic" / "upsnet_R_18_no_unknown.yaml"
COCO = REPO / "configs" / "COCO-PanopticSegmentation" / "upsnet_R50_1x.yaml"
CITYSCAPES = REPO / "configs" / "Cityscapes-PanopticSegmentation" / "upsnet_R50.yaml"


def _tiny_cfg(*opts: str):
    cfg = get_config(
        str(SYNTHETIC),
        [
            "MODEL.UPSNET.SEM_SEG_DEFORMABLE",
            "True",
            "MODEL.UPSNET.SEM_SEG_ROI_LOSS_WEIGHT",
            "0.2",
            "MODEL.SEM_SEG_HEAD.CONVS_DIM",
            "32",
            "MODEL.FPN.OUT_CHANNELS",
            "32",
            "MODEL.ROI_MASK_HEAD.CONV_DIM",
            "32",
            *opts,
        ],
    )
    return cfg


def _image_input(height: int, width: int, seed: int) -> dict:
    """An image with two squares (classes 0 and 2) over stuff 1 (top) and 2 (bottom)."""
    g = torch.Generator().manual_seed(seed)
    sem = torch.ones(height, width, dtype=torch.long)
    sem[height // 2 :] = 2
    sem[0, 0] = 255
    masks = torch.zeros(2, height, width, dtype=torch.bool)
    masks[0, 4:20, 6:22] = True
    masks[1, 20:36, 24:44] = True
    sem[masks.any(0)] = 0
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(torch.tensor([[6.0, 4.0, 22.0, 20.0], [24.0, 20.0, 44.0, 36.0]]))
    inst.gt_classes = torch.tensor([0, 2])
    inst.gt_masks = BitMasks(masks)
    image = torch.randint(0, 256, (3, height, width), generator=g).to(torch.uint8)
    return {"image": image, "sem_seg": sem, "instances": inst}


def test_configs_load_with_paper_settings() -> None:
    coco, cityscapes = get_config(str(COCO)), get_config(str(CITYSCAPES))
    for cfg in (coco, cityscapes):
        assert cfg.MODEL.META_ARCHITECTURE == "UPSNet" and cfg.MODEL.UPSNET.UNKNOWN_ENABLED
        assert cfg.MODEL.UPSNET.SEM_SEG_DEFORMABLE and cfg.MODEL.UPSNET.BOX_KEEP_FRACTION == 0.7
    weights = [
        (c.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT, c.MODEL.UPSNET.PANOPTIC_LOSS_WEIGHT)
        for c in (coco, cityscapes)
    ]
    assert weights == [(0.2, 0.1), (1.0, 0.5)]
    assert (coco.MODEL.UPSNET.SEM_SEG_NUM_CONVS, cityscapes.MODEL.UPSNET.SEM_SEG_NUM_CONVS) == (
        3,
        2,
    )
    assert (coco.MODEL.UPSNET.STUFF_AREA_LIMIT, cityscapes.MODEL.UPSNET.STUFF_AREA_LIMIT) == (
        4096,
        2048,
    )
    on, off = get_config(str(SYNTHETIC)), get_config(str(NO_UNKNOWN))
    assert on.MODEL.UPSNET.UNKNOWN_ENABLED and not off.MODEL.UPSNET.UNKNOWN_ENABLED
    off.MODEL.UPSNET.UNKNOWN_ENABLED = True
    assert off.dump() == on.dump()  # the ablation changes nothing else


def test_add_upsnet_config_only_adds_keys() -> None:
    cfg = get_config(str(SYNTHETIC))
    before = cfg.dump()
    add_upsnet_config(cfg)  # applied again: keeps the file's values
    assert cfg.dump() == before


@pytest.mark.slow
def test_paper_configs_build() -> None:
    for path, stuff, things in ((COCO, 53, 80), (CITYSCAPES, 11, 8)):
        cfg = get_config(str(path), ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
        model = build_model(cfg)
        assert isinstance(model, UPSNet) and model.num_stuff_classes == stuff
        assert model.sem_seg_head.score.out_channels == stuff + things
        assert model.sem_seg_head.score.in_channels == 4 * 128


def test_training_losses_and_gradients_batch_of_two() -> None:
    torch.manual_seed(0)
    model = build_model(_tiny_cfg())
    model.train()
    inputs = [_image_input(48, 64, 0), _image_input(40, 56, 1)]
    with EventStorage(0):
        losses = model(inputs)
    expected = {"loss_sem_seg", "loss_sem_seg_roi", "loss_panoptic", "loss_mask", "loss_cls"}
    assert expected <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    # The panoptic loss alone reaches the semantic head, its deformable offsets and the
    # mask head: the panoptic head has no parameters of its own.
    losses["loss_panoptic"].backward()
    head = model.sem_seg_head
    for param in (
        head.score.weight,
        head.subnet[0].conv.weight,
        model.roi_heads.mask_head.predictor.weight,
    ):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_training_input_errors_are_explained() -> None:
    model = build_model(_tiny_cfg())
    model.train()
    inputs = [_image_input(48, 64, 0)]
    del inputs[0]["sem_seg"]
    with pytest.raises(ValueError, match="panoptic_separated"):
        model(inputs)
    inputs = [_image_input(48, 64, 0)]
    inputs[0]["sem_seg"][5, 5] = 4  # a label of the 5-class map, not of the separated one
    with EventStorage(0), pytest.raises(ValueError, match="SEM_SEG_HEAD.NUM_CLASSES"):
        model(inputs)
    with pytest.raises(ValueError, match="MASK_ON"):
        build_model(_tiny_cfg("MODEL.MASK_ON", "False"))


@pytest.mark.parametrize("unknown", [True, False])
def test_inference_batch_of_two(unknown: bool) -> None:
    torch.manual_seed(0)
    cfg = _tiny_cfg(
        "MODEL.UPSNET.UNKNOWN_ENABLED",
        str(unknown),
        "MODEL.UPSNET.INSTANCE_SCORE_THRESH",
        "0.0",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
        "MODEL.UPSNET.STUFF_AREA_LIMIT",
        "0",
    )
    model = build_model(cfg).eval()
    inputs = [_image_input(48, 64, 0), _image_input(40, 56, 1)]
    inputs[1].update(height=80, width=112)  # outputs at twice the input size
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    for out, size in zip(outputs, [(48, 64), (80, 112)]):
        assert out["sem_seg"].shape == (3, *size)  # "things", then the 2 stuff classes
        assert out["instances"].image_size == size
        seg, info = out["panoptic_seg"]
        assert seg.shape == size and seg.dtype == torch.int32
        ids = set(torch.unique(seg).tolist()) - {0}
        assert ids == {s["id"] for s in info}
        for s in info:
            if s["isthing"]:
                assert 0 <= s["instance_id"] < len(out["instances"])
                assert s["category_id"] == int(out["instances"].pred_classes[s["instance_id"]])
            else:
                assert s["category_id"] in (1, 2) and s["area"] == int((seg == s["id"]).sum())
        if not unknown:  # without unknown (and no area limit) every pixel is labelled
            assert (seg > 0).all()
    assert any(s["isthing"] for out in outputs for s in out["panoptic_seg"][1])


@pytest.mark.slow
def test_one_train_step_through_train_net(tmp_path) -> None:
    from segtron.data import DatasetCatalog
    from segtron.data.datasets import register_synthetic

    prefix = "upsnettest"
    if f"{prefix}_train_panoptic_separated" not in DatasetCatalog:
        register_synthetic(
            root=tmp_path / "data",
            prefix=prefix,
            num_images={"train": 4, "val": 2},
            image_size=(32, 40),
        )
    spec = importlib.util.spec_from_file_location(
        "_upsnet_train_net", REPO / "tools" / "train_net.py"
    )
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    args = train_net.default_argument_parser().parse_args(
        [
            "--config-file",
            str(SYNTHETIC),
            "INPUT.MIN_SIZE_TRAIN",
            "(32,)",
            "INPUT.MIN_SIZE_TEST",
            "32",
            "SOLVER.MAX_ITER",
            "1",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "DATALOADER.NUM_WORKERS",
            "0",
            "MODEL.UPSNET.STUFF_AREA_LIMIT",
            "16",
            "DATASETS.TRAIN",
            f"('{prefix}_train_panoptic_separated',)",
            "DATASETS.TEST",
            f"('{prefix}_val_panoptic_separated',)",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ]
    )
    results = train_net.main(args)
    assert (tmp_path / "out" / "model_final.pth").is_file()
    assert {"PQ", "SQ", "RQ", "PQ_th", "PQ_st"} <= set(results["panoptic_seg"])
    assert "mIoU" in results["sem_seg"] and "bbox" in results
