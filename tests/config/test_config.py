"""Tests of get_cfg, YAML merging with _BASE_ chains, strict key checks and @configurable."""

from pathlib import Path

import pytest

from segtron.config import CfgNode, ConfigKeyError, add_missing_keys, configurable, get_cfg

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# A sample of Detectron2's documented defaults (detectron2/config/defaults.py).
DETECTRON2_DEFAULTS = {
    "VERSION": 2,
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.PIXEL_MEAN": [103.530, 116.280, 123.675],
    "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],
    "MODEL.BACKBONE.FREEZE_AT": 2,
    "MODEL.RESNETS.NORM": "FrozenBN",
    "MODEL.RESNETS.STRIDE_IN_1X1": True,
    "MODEL.ANCHOR_GENERATOR.SIZES": [[32, 64, 128, 256, 512]],
    "MODEL.RPN.IOU_THRESHOLDS": [0.3, 0.7],
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 6000,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 512,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": (10.0, 10.0, 5.0, 5.0),
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 54,
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 255,
    "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT": 4096,
    "INPUT.MIN_SIZE_TRAIN": (800,),
    "INPUT.MAX_SIZE_TEST": 1333,
    "INPUT.FORMAT": "BGR",
    "DATALOADER.NUM_WORKERS": 4,
    "SOLVER.BASE_LR": 0.001,
    "SOLVER.WARMUP_FACTOR": 0.001,
    "SOLVER.CLIP_GRADIENTS.ENABLED": False,
    "SOLVER.AMP.ENABLED": False,
    "TEST.AUG.MIN_SIZES": (400, 500, 600, 700, 800, 900, 1000, 1100, 1200),
    "TEST.DETECTIONS_PER_IMAGE": 100,
    "OUTPUT_DIR": "./output",
    "SEED": -1,
    "CUDNN_BENCHMARK": False,
}


def lookup(cfg: CfgNode, full_key: str):
    node = cfg
    for part in full_key.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("key,value", sorted(DETECTRON2_DEFAULTS.items()))
def test_defaults_match_detectron2(key, value):
    assert lookup(get_cfg(), key) == value


def test_get_cfg_returns_independent_copies():
    a, b = get_cfg(), get_cfg()
    a.MODEL.RESNETS.DEPTH = 101
    assert b.MODEL.RESNETS.DEPTH == 50


# Expected values after merging each model-zoo file (from Detectron2's model zoo YAMLs).
MODEL_ZOO_EXPECTATIONS = {
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml": {
        "MODEL.MASK_ON": True,
        "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone",
        "MODEL.ANCHOR_GENERATOR.SIZES": [[32], [64], [128], [256], [512]],
        "MODEL.RPN.POST_NMS_TOPK_TRAIN": 1000,
        "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
        "SOLVER.STEPS": (60000, 80000),
        "SOLVER.MAX_ITER": 90000,
        "INPUT.MIN_SIZE_TRAIN": (640, 672, 704, 736, 768, 800),
    },
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml": {
        "SOLVER.STEPS": (210000, 250000),
        "SOLVER.MAX_ITER": 270000,
        "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
    },
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml": {
        "MODEL.META_ARCHITECTURE": "PanopticFPN",
        "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT": 0.5,
        "DATASETS.TRAIN": ("coco_2017_train_panoptic_separated",),
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS": False,
    },
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml": {
        "MODEL.MASK_ON": True,
        "SOLVER.MAX_ITER": 270000,
    },
    "Misc/semantic_R_50_FPN_1x.yaml": {
        "MODEL.META_ARCHITECTURE": "SemanticSegmentor",
        "DATASETS.TEST": ("coco_2017_val_panoptic_stuffonly",),
    },
    "Cityscapes/mask_rcnn_R_50_FPN.yaml": {
        "MODEL.ROI_HEADS.NUM_CLASSES": 8,
        "INPUT.MIN_SIZE_TEST": 1024,
        "SOLVER.IMS_PER_BATCH": 8,
        "TEST.EVAL_PERIOD": 8000,
    },
    "Base-RCNN-DilatedC5.yaml": {
        "MODEL.RESNETS.RES5_DILATION": 2,
        "MODEL.RPN.IN_FEATURES": ["res5"],
    },
}


@pytest.mark.parametrize("name", sorted(MODEL_ZOO_EXPECTATIONS))
def test_model_zoo_yaml_merges_unchanged(name):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / name))
    for key, value in MODEL_ZOO_EXPECTATIONS[name].items():
        assert lookup(cfg, key) == value, key


def test_dump_and_reload_round_trip(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml"))
    dumped = tmp_path / "config.yaml"
    dumped.write_text(cfg.dump())
    again = get_cfg()
    again.merge_from_file(str(dumped))
    assert again == cfg


def test_unknown_key_in_file_names_key_file_and_close_match(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        '_BASE_: "%s"\nMODEL:\n  RESNET:\n    DEPTH: 101\n' % (CONFIGS / "Base-RCNN-FPN.yaml")
    )
    with pytest.raises(ConfigKeyError) as info:
        get_cfg().merge_from_file(str(bad))
    message = str(info.value)
    assert "MODEL.RESNET" in message
    assert str(bad) in message
    assert "MODEL.RESNETS" in message


def test_unknown_leaf_key_suggests_sibling(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("SOLVER:\n  BASE_LRR: 0.1\n")
    with pytest.raises(ConfigKeyError, match=r"SOLVER\.BASE_LRR.*Did you mean SOLVER\.BASE_LR"):
        get_cfg().merge_from_file(str(bad))


def test_failed_merge_leaves_config_untouched(tmp_path):
    bad = tmp_path / "partial.yaml"
    bad.write_text("SOLVER:\n  BASE_LR: 0.5\n  NOT_A_KEY: 1\n")
    cfg = get_cfg()
    with pytest.raises(ConfigKeyError):
        cfg.merge_from_file(str(bad))
    assert cfg.SOLVER.BASE_LR == 0.001


def test_yaml_with_python_tag_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'MODEL:\n  WEIGHTS: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ValueError, match=r"evil\.yaml.*line 2.*remove the tag"):
        get_cfg().merge_from_file(str(evil))
    assert not marker.exists()


def test_allow_unsafe_is_refused(tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("SEED: 3\n")
    with pytest.raises(ValueError, match="safe YAML loader"):
        get_cfg().merge_from_file(str(plain), allow_unsafe=True)


def test_merge_from_list_overrides_and_checks():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.RESNETS.DEPTH", "101", "SOLVER.STEPS", "(10, 20)"])
    assert cfg.MODEL.RESNETS.DEPTH == 101
    assert cfg.SOLVER.STEPS == (10, 20)
    with pytest.raises(ConfigKeyError, match="MODEL.RESNETS.DEPTHH.*command-line"):
        cfg.merge_from_list(["MODEL.RESNETS.DEPTHH", "1"])
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        cfg.merge_from_list(["MODEL.RESNETS.DEPTH"])
    with pytest.raises(ValueError, match="Type mismatch"):
        cfg.merge_from_list(["MODEL.RESNETS.DEPTH", "'fifty'"])


def test_merge_from_list_rejects_key_below_a_leaf():
    with pytest.raises(ConfigKeyError, match="SEED.VALUE"):
        get_cfg().merge_from_list(["SEED.VALUE", "1"])


class Widget:
    @configurable
    def __init__(self, width: int, height: int = 2, *, label: str = "w"):
        self.width, self.height, self.label = width, height, label

    @classmethod
    def from_config(cls, cfg, height: int = 7):
        return {"width": cfg.MODEL.RESNETS.DEPTH, "height": height}


def test_configurable_class_from_cfg_and_explicit():
    cfg = get_cfg()
    built = Widget(cfg)
    assert (built.width, built.height, built.label) == (50, 7, "w")
    built = Widget(cfg=cfg, height=3, label="x")  # label is not a from_config argument
    assert (built.width, built.height, built.label) == (50, 3, "x")
    explicit = Widget(4, 5)
    assert (explicit.width, explicit.height) == (4, 5)


def test_configurable_class_without_from_config_errors():
    class NoFromConfig:
        @configurable
        def __init__(self, a=1):
            self.a = a

    with pytest.raises(AttributeError, match="from_config"):
        NoFromConfig(get_cfg())


def _depth_from_cfg(cfg, scale: int = 1):
    return {"depth": cfg.MODEL.RESNETS.DEPTH * scale}


@configurable(from_config=_depth_from_cfg)
def describe(depth: int, suffix: str = "") -> str:
    return f"R{depth}{suffix}"


def test_configurable_function():
    cfg = get_cfg()
    assert describe(cfg) == "R50"
    assert describe(cfg, scale=2, suffix="!") == "R100!"
    assert describe(18) == "R18"
    assert describe.from_config is _depth_from_cfg


def test_configurable_on_plain_function_needs_from_config():
    with pytest.raises(TypeError, match="from_config"):

        @configurable
        def bare(x):
            return x


def test_add_missing_keys_adds_nodes_and_keys_but_never_changes_one() -> None:
    cfg = get_cfg()
    cfg.MODEL.PIXEL_STD = [2.0, 2.0, 2.0]
    defaults = {"MODEL.NEW_HEAD": {"DIMS": [1, 2], "SUB": {"ON": True}}, "MODEL.PIXEL_STD": [9.0]}
    add_missing_keys(cfg, defaults)
    assert cfg.MODEL.NEW_HEAD.DIMS == [1, 2] and cfg.MODEL.NEW_HEAD.SUB.ON is True
    assert cfg.MODEL.PIXEL_STD == [2.0, 2.0, 2.0]
    cfg.MODEL.NEW_HEAD.DIMS.append(3)
    add_missing_keys(cfg, defaults)  # a second call keeps the values and shares no state
    assert cfg.MODEL.NEW_HEAD.DIMS == [1, 2, 3] and defaults["MODEL.NEW_HEAD"]["DIMS"] == [1, 2]
