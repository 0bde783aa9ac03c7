"""Tests of the SOLOv2 and SOLO meta-architectures: configs, AdelaiDet compatibility, training
and inference with 0, 1 and 200 objects, boxes from masks, TorchScript export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from segtron.config import get_cfg
from segtron.modeling import build_model
from segtron.projects import get_config
from segtron.projects.solov2 import (
    SOLO,
    InferenceParams,
    SOLOv2,
    add_solov2_config,
    export_torchscript,
    masks_to_boxes,
)
from segtron.structures import BitMasks, Boxes, Instances

REPO = Path(__file__).resolve().parents[3]
SYNTHETIC = str(REPO / "configs" / "Synthetic" / "solov2_R_18.yaml")
COCO = REPO / "configs" / "COCO-InstanceSegmentation"
CPU = ["MODEL.DEVICE", "cpu"]


def _tiny_cfg(arch: str = "SOLOv2"):
    """The synthetic config, smaller: 1 instance conv of 32 channels, SOLO tower of 2."""
    return get_config(
        SYNTHETIC,
        [
            "MODEL.META_ARCHITECTURE", arch, "MODEL.SOLOV2.INSTANCE_CHANNELS", "32",
            "MODEL.SOLOV2.NUM_INSTANCE_CONVS", "1",
            "MODEL.SOLO.NUM_MASK_CONVS", "2", "MODEL.SOLO.MASK_TOWER_CHANNELS", "32",
        ],
    )  # fmt: skip


def _lively(model: SOLOv2) -> SOLOv2:
    """Randomly initialized heads predict nothing above the thresholds; make them predict."""
    torch.manual_seed(0)
    nn.init.constant_(model.ins_head.cate_pred.bias, 0.0)
    if isinstance(model, SOLO):
        for conv in model.mask_head.mask_preds:
            nn.init.normal_(conv.weight, std=0.3)
    else:
        nn.init.normal_(model.ins_head.kernel_pred.weight, std=0.3)
    return model.eval()


def _instances(n: int, h: int, w: int, seed: int = 0) -> Instances:
    g = torch.Generator().manual_seed(seed)
    inst = Instances((h, w))
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    boxes = []
    for k in range(n):
        s = int(torch.randint(6, 40, (1,), generator=g))
        y0 = int(torch.randint(0, h - s, (1,), generator=g))
        x0 = int(torch.randint(0, w - s, (1,), generator=g))
        masks[k, y0 : y0 + s, x0 : x0 + s] = True
        boxes.append([x0, y0, x0 + s, y0 + s])
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.randint(0, 3, (n,), generator=g)
    inst.gt_masks = BitMasks(masks)
    return inst


def _image(h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)) * 255


# --- configs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,arch,depth",
    [
        (COCO / "solov2_R50_1x.yaml", "SOLOv2", 50),
        (COCO / "solov2_R50_3x.yaml", "SOLOv2", 50),
        (COCO / "solov2_R101_3x.yaml", "SOLOv2", 101),
        (COCO / "solo_R50_1x.yaml", "SOLO", 50),
        (Path(SYNTHETIC), "SOLOv2", 18),
    ],
)
def test_configs_load(path: Path, arch: str, depth: int) -> None:
    cfg = get_config(str(path))
    assert cfg.MODEL.META_ARCHITECTURE == arch and cfg.MODEL.RESNETS.DEPTH == depth
    assert cfg.INPUT.MASK_FORMAT == "bitmask" and cfg.MODEL.MASK_ON
    if "COCO" in str(path):
        assert cfg.SOLVER.BASE_LR == 0.01 and cfg.SOLVER.IMS_PER_BATCH == 16
        assert cfg.INPUT.MIN_SIZE_TRAIN == (640, 672, 704, 736, 768, 800)
        assert cfg.MODEL.SOLOV2.NUM_GRIDS == [40, 36, 24, 16, 12]
        # 3x: 270k iterations of 16 images, 36 epochs of COCO's 118k images.
        if "3x" in path.name:
            assert cfg.SOLVER.MAX_ITER == 270000


def test_synthetic_and_solo_configs_build() -> None:
    assert type(build_model(get_config(SYNTHETIC))) is SOLOv2
    assert type(build_model(_tiny_cfg("SOLO"))) is SOLO


def test_add_solov2_config_only_adds_keys() -> None:
    cfg = get_cfg()
    before = cfg.dump()
    add_solov2_config(cfg)
    cfg.MODEL.SOLOV2.SIGMA = 0.3
    add_solov2_config(cfg)  # a second call keeps the changed value
    assert cfg.MODEL.SOLOV2.SIGMA == 0.3 and cfg.MODEL.SOLOV2.LOSS.DICE_WEIGHT == 3.0
    del cfg.MODEL["SOLOV2"], cfg.MODEL["SOLO"]
    assert cfg.dump() == before


ADELAIDET_BASE = """MODEL:
  META_ARCHITECTURE: "SOLOv2"
  MASK_ON: True
  BACKBONE:
    NAME: "build_resnet_fpn_backbone"
  RESNETS:
    OUT_FEATURES: ["res2", "res3", "res4", "res5"]
  FPN:
    IN_FEATURES: ["res2", "res3", "res4", "res5"]
DATASETS:
  TRAIN: ("coco_2017_train",)
  TEST: ("coco_2017_val",)
SOLVER:
  IMS_PER_BATCH: 16
  BASE_LR: 0.01
  WARMUP_FACTOR: 0.01
  WARMUP_ITERS: 1000
  STEPS: (60000, 80000)
  MAX_ITER: 90000
INPUT:
  MIN_SIZE_TRAIN: (640, 672, 704, 736, 768, 800)
  MASK_FORMAT: "bitmask"
VERSION: 2
"""


def _adelaidet_head_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of AdelaiDet's SOLOv2 heads with its default config
    (adet/modeling/solov2/solov2.py: GN towers of 512, 80 classes, E = 256, 128-channel mask
    branch, CoordConv on the kernel tower's and P5's first conv)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for tower, first in (("cate_tower", 256), ("kernel_tower", 258)):
        for i in range(4):
            shapes[f"ins_head.{tower}.{3 * i}.weight"] = (512, first if i == 0 else 512, 3, 3)
            shapes[f"ins_head.{tower}.{3 * i + 1}.weight"] = (512,)
            shapes[f"ins_head.{tower}.{3 * i + 1}.bias"] = (512,)
    shapes.update({
        "ins_head.cate_pred.weight": (80, 512, 3, 3), "ins_head.cate_pred.bias": (80,),
        "ins_head.kernel_pred.weight": (256, 512, 3, 3), "ins_head.kernel_pred.bias": (256,),
        "mask_head.conv_pred.0.weight": (256, 128, 1, 1),
        "mask_head.conv_pred.1.weight": (256,), "mask_head.conv_pred.1.bias": (256,),
    })  # fmt: skip
    for level in range(4):
        for j in range(max(level, 1)):
            first = 258 if level == 3 else 256
            prefix = f"mask_head.convs_all_levels.{level}.conv{j}"
            shapes[f"{prefix}.0.weight"] = (128, first if j == 0 else 128, 3, 3)
            shapes[f"{prefix}.1.weight"] = (128,)
            shapes[f"{prefix}.1.bias"] = (128,)
    return shapes


def test_adelaidet_config_and_checkpoint_names(tmp_path: Path) -> None:
    (tmp_path / "Base-SOLOv2.yaml").write_text(ADELAIDET_BASE)
    (tmp_path / "R50_3x.yaml").write_text(
        '_BASE_: "Base-SOLOv2.yaml"\nMODEL:\n  WEIGHTS: '
        '"detectron2://ImageNetPretrained/MSRA/R-50.pkl"\n  RESNETS:\n    DEPTH: 50\n'
        "SOLVER:\n  STEPS: (210000, 250000)\n  MAX_ITER: 270000\n"
    )
    cfg = get_config(str(tmp_path / "R50_3x.yaml"), CPU)
    model = build_model(cfg)
    state = model.state_dict()
    heads = {k: tuple(v.shape) for k, v in state.items() if not k.startswith("backbone.")}
    assert heads == _adelaidet_head_shapes()
    # An AdelaiDet-format checkpoint (head names above, Detectron2 backbone names) loads
    # strictly: no missing or unexpected keys.
    checkpoint = {k: torch.randn(s) for k, s in _adelaidet_head_shapes().items()}
    checkpoint.update({k: v.clone() for k, v in state.items() if k.startswith("backbone.")})
    model.load_state_dict(checkpoint, strict=True)
    assert torch.equal(model.ins_head.kernel_pred.bias, checkpoint["ins_head.kernel_pred.bias"])
    assert (
        "backbone.fpn_lateral2.weight" in state
        and "backbone.bottom_up.res5.2.conv3.weight" in state
    )


def test_bad_configs_are_named() -> None:
    with pytest.raises(ValueError, match="NUM_GRIDS"):
        build_model(get_config(SYNTHETIC, ["MODEL.SOLOV2.NUM_GRIDS", "[20, 16]"]))
    with pytest.raises(ValueError, match="INSTANCE_IN_CHANNELS"):
        build_model(get_config(SYNTHETIC, ["MODEL.SOLOV2.INSTANCE_IN_CHANNELS", "256"]))
    with pytest.raises(ValueError, match="NORM"):
        build_model(get_config(SYNTHETIC, ["MODEL.SOLOV2.NORM", "BN"]))


# --- training and inference ---------------------------------------------------------------


@pytest.mark.parametrize("arch", ["SOLOv2", "SOLO"])
def test_train_and_infer_with_0_1_200_objects(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(arch))
    model.train()
    batch = [
        {"image": _image(96, 128, n), "instances": _instances(n, 96, 128, seed=n)}
        for n in (0, 1, 200)
    ]
    losses = model(batch)
    assert set(losses) == {"loss_ins", "loss_cate"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.ins_head.cate_pred.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    # A batch without any object: the mask loss is a connected zero.
    empty = model([{"image": _image(64, 80, 1), "instances": _instances(0, 64, 80)}])
    assert empty["loss_ins"] == 0 and empty["loss_cate"] > 0
    empty["loss_ins"].backward()

    _lively(model)
    with torch.no_grad():
        outputs = model([{"image": x["image"], "height": 64, "width": 80} for x in batch])
    for out in outputs:
        inst = out["instances"]
        assert inst.image_size == (64, 80)
        assert inst.pred_masks.shape[1:] == (64, 80) and inst.pred_masks.dtype == torch.bool
        assert 0 < len(inst) <= model.inference_params.max_per_img
        assert (inst.scores[:-1] >= inst.scores[1:]).all()
        assert inst.scores.min() >= model.inference_params.update_thr
        assert torch.equal(inst.pred_boxes.tensor, masks_to_boxes(inst.pred_masks))


def test_no_detection_gives_empty_instances() -> None:
    model = build_model(_tiny_cfg()).eval()
    model.inference_params = InferenceParams(score_thr=1.0)
    with torch.no_grad():
        (out,) = model([{"image": _image(64, 80, 0)}])
    inst = out["instances"]
    assert len(inst) == 0 and inst.pred_masks.shape == (0, 64, 80)
    assert inst.pred_boxes.tensor.shape == (0, 4) and inst.pred_classes.dtype == torch.int64


def test_training_needs_instances_with_masks() -> None:
    model = build_model(_tiny_cfg()).train()
    with pytest.raises(ValueError, match="instances"):
        model([{"image": _image(64, 80, 0)}])
    inst = _instances(1, 64, 80)
    inst.remove("gt_masks")
    with pytest.raises(ValueError, match="MODEL.MASK_ON"):
        model([{"image": _image(64, 80, 0), "instances": inst}])


def test_boxes_from_masks() -> None:
    masks = torch.rand(6, 20, 30, generator=torch.Generator().manual_seed(0)) > 0.97
    masks[0] = False
    masks[1, 3:7, 10:12] = True
    boxes = masks_to_boxes(masks)
    assert torch.equal(boxes, BitMasks(masks).get_bounding_boxes().tensor)
    assert boxes[0].tolist() == [0, 0, 0, 0]
    ys, xs = masks[2].nonzero(as_tuple=True)
    assert boxes[2].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


# --- export -------------------------------------------------------------------------------


@pytest.mark.slow
def test_torchscript_export_round_trip(tmp_path: Path) -> None:
    model = _lively(build_model(_tiny_cfg()))
    path = tmp_path / "solov2.ts"
    export_torchscript(model, 64, 96, path)
    loaded = torch.jit.load(str(path))
    counts = []
    for seed in (1, 2):
        image = _image(64, 96, seed)
        with torch.no_grad():
            masks, scores, classes, boxes = loaded(image)
            (eager,) = model([{"image": image}])
        inst = eager["instances"]
        assert torch.equal(masks, inst.pred_masks) and torch.equal(classes, inst.pred_classes)
        assert torch.allclose(scores, inst.scores) and torch.equal(boxes, inst.pred_boxes.tensor)
        counts.append(len(scores))
    assert min(counts) > 0
    # A trace holds no constant number of detections: zero works too.
    model.inference_params = InferenceParams(score_thr=1.0)
    masks, scores, classes, boxes = export_torchscript(model, 64, 96)(_image(64, 96, 3))
    assert masks.shape == (0, 64, 96) and boxes.shape == (0, 4) and scores.shape == (0,)
    model.inference_params = InferenceParams(nms_type="mask")
    with pytest.raises(ValueError, match="NMS_TYPE"):
        export_torchscript(model, 64, 96)
