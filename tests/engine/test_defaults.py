"""Tests of segtron.engine.defaults: argument parser, setup, predictor, config scaling, step
trainer choice, DDP wrapping, DefaultTrainer.test, and evaluator selection."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, os.path.dirname(__file__))
import tiny_model  # noqa: E402

from segtron.config import get_cfg  # noqa: E402
from segtron.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from segtron.engine import (  # noqa: E402
    AMPTrainer,
    DefaultPredictor,
    DefaultTrainer,
    SimpleTrainer,
    build_step_trainer,
    create_ddp_model,
    default_argument_parser,
    default_setup,
)
from segtron.evaluation import (  # noqa: E402
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
    build_evaluator,
    format_results_table,
)
from segtron.modeling import META_ARCH_REGISTRY, build_model  # noqa: E402
from segtron.projects import get_config  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SEMANTIC_CONFIG = str(REPO / "configs" / "Synthetic" / "semantic_R_18_FPN.yaml")
PREFIX = tiny_model.PREFIX


if "DefaultsEchoModel" not in META_ARCH_REGISTRY:

    @META_ARCH_REGISTRY.register()
    class DefaultsEchoModel(torch.nn.Module):
        """Returns the input image it was given, and a constant sem_seg at height × width."""

        def __init__(self, cfg) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, batched_inputs):
            out = []
            for x in batched_inputs:
                logits = torch.zeros(1, 2, *x["image"].shape[1:])
                size = (x["height"], x["width"])
                sem_seg = F.interpolate(logits, size=size, mode="bilinear")[0]
                out.append({"image": x["image"].clone(), "sem_seg": sem_seg})
            return out


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("defaults_data"))
    tiny_model.register_data(root)
    return root


# --- argument parser and setup ------------------------------------------------------------


def test_default_argument_parser_parses_detectron2_flags_and_opts() -> None:
    parser = default_argument_parser()
    args = parser.parse_args(
        ["--config-file", "cfg.yaml", "--resume", "--eval-only", "--num-gpus", "2"]
        + ["--num-machines", "3", "--machine-rank", "1", "--dist-url", "auto"]
        + ["SOLVER.BASE_LR", "0.1", "MODEL.DEVICE", "cpu"]
    )
    assert args.config_file == "cfg.yaml"
    assert args.resume and args.eval_only
    assert (args.num_gpus, args.num_machines, args.machine_rank) == (2, 3, 1)
    assert args.dist_url == "auto"
    assert args.opts == ["SOLVER.BASE_LR", "0.1", "MODEL.DEVICE", "cpu"]

    defaults = parser.parse_args([])
    assert defaults.config_file == ""
    assert not defaults.resume and not defaults.eval_only
    assert (defaults.num_gpus, defaults.num_machines, defaults.machine_rank) == (1, 1, 0)
    assert defaults.dist_url.startswith("tcp://127.0.0.1:")
    assert 2**15 <= int(defaults.dist_url.rsplit(":", 1)[1]) < 2**16
    assert not defaults.opts
    # Options that look like flags after the first KEY still belong to the opts.
    args = parser.parse_args(["--config-file", "c.yaml", "OUTPUT_DIR", "--odd-dir"])
    assert args.opts == ["OUTPUT_DIR", "--odd-dir"]
    assert "--eval-only MODEL.WEIGHTS" in parser.epilog


def test_default_setup_writes_config_and_log_and_seeds(tmp_path) -> None:
    out = tmp_path / "setup"
    config_file = tmp_path / "c.yaml"
    config_file.write_text("SOLVER:\n  BASE_LR: 0.123\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(["OUTPUT_DIR", str(out), "SEED", "42"])
    args = default_argument_parser().parse_args(["--config-file", str(config_file)])
    default_setup(cfg, args)
    drawn = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(42)
    np.random.seed(42)
    torch.manual_seed(42)
    assert drawn == (random.random(), float(np.random.rand()), float(torch.rand(())))

    saved = get_cfg()
    saved.merge_from_file(str(out / "config.yaml"))
    assert saved.SOLVER.BASE_LR == 0.123 and saved.SEED == 42
    assert yaml.safe_load(saved.dump()) == yaml.safe_load(cfg.dump())
    for handler in __import__("logging").getLogger("segtron").handlers:
        handler.flush()
    log = (out / "log.txt").read_text()
    assert "Rank of current process: 0. World size: 1" in log
    assert "BASE_LR: 0.123" in log  # the config file's contents are logged
    assert "Random seed of this process: 42" in log


# --- DefaultPredictor ---------------------------------------------------------------------


def _bgr_image(height: int, width: int) -> np.ndarray:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = 200  # blue, in BGR order
    image[..., 2] = 10  # red
    return image


@pytest.mark.parametrize("fmt", ["BGR", "RGB"])
def test_default_predictor_respects_input_format_and_size(fmt) -> None:
    cfg = get_cfg()
    cfg.merge_from_list(
        ["MODEL.META_ARCHITECTURE", "DefaultsEchoModel", "MODEL.DEVICE", "cpu"]
        + ["INPUT.MIN_SIZE_TEST", "32", "INPUT.MAX_SIZE_TEST", "64", "INPUT.FORMAT", fmt]
    )
    predictor = DefaultPredictor(cfg)
    assert not predictor.model.training
    output = predictor(_bgr_image(40, 50))
    image = output["image"]
    assert image.shape == (3, 32, 40)  # resized as at test time
    assert image.dtype == torch.float32
    blue_first = fmt == "BGR"
    assert float(image[0].mean()) == (200 if blue_first else 10)
    assert float(image[2].mean()) == (10 if blue_first else 200)
    assert output["sem_seg"].shape == (2, 40, 50)  # at the original size


def test_default_predictor_rejects_bad_inputs() -> None:
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "DefaultsEchoModel", "MODEL.DEVICE", "cpu"])
    with pytest.raises(ValueError, match="H×W×3 BGR image"):
        DefaultPredictor(cfg)(np.zeros((8, 8), dtype=np.uint8))
    cfg.INPUT.FORMAT = "L"
    with pytest.raises(ValueError, match="INPUT.FORMAT must be RGB or BGR"):
        DefaultPredictor(cfg)


def test_default_predictor_on_the_synthetic_semantic_config(tmp_path) -> None:
    cfg = get_config(
        SEMANTIC_CONFIG,
        ["INPUT.MIN_SIZE_TEST", "32", "INPUT.MAX_SIZE_TEST", "64", "MODEL.DEVICE", "cpu"],
    )
    # Weights saved from one model must be loaded by the predictor's.
    torch.manual_seed(3)
    model = build_model(cfg)
    weights = tmp_path / "w.pth"
    torch.save({"model": model.state_dict()}, weights)
    cfg.MODEL.WEIGHTS = str(weights)
    predictor = DefaultPredictor(cfg)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(predictor.model.state_dict()[k], v, rtol=0, atol=0)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (45, 70, 3), dtype=np.uint8)
    output = predictor(image)
    assert output["sem_seg"].shape == (5, 45, 70)
    assert torch.isfinite(output["sem_seg"]).all()
    # The same image through the model by hand, in BGR at the test size, gives the same result.
    model.eval()
    resized = predictor.aug.get_transform(image).apply_image(image)
    tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()
    with torch.no_grad():
        expected = model([{"image": tensor, "height": 45, "width": 70}])[0]["sem_seg"]
    torch.testing.assert_close(output["sem_seg"], expected)


# --- config scaling, step trainer, DDP ----------------------------------------------------


def test_auto_scale_workers_scales_batch_lr_and_schedule() -> None:
    cfg = get_cfg()
    cfg.merge_from_list(
        ["SOLVER.REFERENCE_WORLD_SIZE", "2", "SOLVER.IMS_PER_BATCH", "16"]
        + ["SOLVER.BASE_LR", "0.02", "SOLVER.MAX_ITER", "1000", "SOLVER.WARMUP_ITERS", "100"]
        + ["SOLVER.STEPS", "(600, 800)", "TEST.EVAL_PERIOD", "200"]
        + ["SOLVER.CHECKPOINT_PERIOD", "500"]
    )
    cfg.freeze()
    scaled = DefaultTrainer.auto_scale_workers(cfg, 4)
    assert scaled.SOLVER.IMS_PER_BATCH == 32
    assert scaled.SOLVER.BASE_LR == pytest.approx(0.04)
    assert scaled.SOLVER.MAX_ITER == 500
    assert scaled.SOLVER.WARMUP_ITERS == 50
    assert tuple(scaled.SOLVER.STEPS) == (300, 400)
    assert scaled.TEST.EVAL_PERIOD == 100
    assert scaled.SOLVER.CHECKPOINT_PERIOD == 250
    assert scaled.SOLVER.REFERENCE_WORLD_SIZE == 4
    assert scaled.is_frozen()
    assert cfg.SOLVER.IMS_PER_BATCH == 16 and cfg.SOLVER.MAX_ITER == 1000  # original untouched
    assert DefaultTrainer.auto_scale_workers(cfg, 2) is cfg
    cfg.defrost()
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 0
    assert DefaultTrainer.auto_scale_workers(cfg, 8) is cfg
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 3
    with pytest.raises(ValueError, match="IMS_PER_BATCH"):
        DefaultTrainer.auto_scale_workers(cfg, 6)


def _amp_cfg(enabled: bool, precision: str = "float16"):
    cfg = get_cfg()
    cfg.SOLVER.AMP.ENABLED = enabled
    cfg.SOLVER.AMP.PRECISION = precision
    return cfg


def test_build_step_trainer_picks_the_trainer_and_precision() -> None:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    plain = build_step_trainer(_amp_cfg(False, "bfloat16"), model, [], optimizer)
    assert type(plain) is SimpleTrainer
    amp = build_step_trainer(_amp_cfg(True, "bfloat16"), model, [], optimizer)
    assert isinstance(amp, AMPTrainer) and amp.precision == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 autocast is not supported"):
        build_step_trainer(_amp_cfg(True, "float16"), model, [], optimizer)
    with pytest.raises(ValueError, match="SOLVER.AMP.PRECISION must be .* got 'float32'"):
        build_step_trainer(_amp_cfg(True, "float32"), model, [], optimizer)


def test_create_ddp_model_is_a_no_op_in_one_process() -> None:
    model = torch.nn.Linear(2, 1)
    assert create_ddp_model(model, broadcast_buffers=False, fp16_compression=True) is model


# --- DefaultTrainer.test and build_evaluator ----------------------------------------------


def test_default_trainer_test_with_several_datasets(data_root, tmp_path) -> None:
    cfg = tiny_model.make_cfg(data_root, str(tmp_path / "test"))
    torch.manual_seed(0)
    model = build_model(cfg)
    model.eval()
    single = DefaultTrainer.test(cfg, model)
    assert set(single) == {"sem_seg"}
    cfg.DATASETS.TEST = (f"{PREFIX}_val_sem_seg", f"{PREFIX}_train_sem_seg")
    results = DefaultTrainer.test(cfg, model)
    assert list(results) == [f"{PREFIX}_val_sem_seg", f"{PREFIX}_train_sem_seg"]
    assert results[f"{PREFIX}_val_sem_seg"] == single
    assert results[f"{PREFIX}_train_sem_seg"]["sem_seg"]["mIoU"] != single["sem_seg"]["mIoU"]
    assert os.path.isdir(tmp_path / "test" / "inference" / f"{PREFIX}_train_sem_seg")
    with pytest.raises(ValueError, match="1 evaluators for 2 test datasets"):
        DefaultTrainer.test(cfg, model, [SemSegEvaluator(f"{PREFIX}_val_sem_seg")])


def test_default_trainer_test_skips_datasets_without_an_evaluator(data_root, tmp_path) -> None:
    name = f"{PREFIX}_val_sem_seg_noeval"
    if name not in DatasetCatalog:
        DatasetCatalog.register(name, lambda: DatasetCatalog.get(f"{PREFIX}_val_sem_seg"))
    cfg = tiny_model.make_cfg(data_root, str(tmp_path / "skip"))
    cfg.DATASETS.TEST = (f"{PREFIX}_val_sem_seg", name)
    model = build_model(cfg)
    model.eval()
    results = DefaultTrainer.test(cfg, model)
    assert results[name] == {}
    assert "sem_seg" in results[f"{PREFIX}_val_sem_seg"]


def _types(evaluator) -> list[type]:
    if isinstance(evaluator, DatasetEvaluators):
        return [type(e) for e in evaluator._evaluators]
    return [type(evaluator)]


def test_build_evaluator_follows_the_evaluator_type(data_root, tmp_path) -> None:
    cfg = tiny_model.make_cfg(data_root, str(tmp_path))
    for suffix in ("", "_panoptic"):
        DatasetCatalog.get(f"{PREFIX}_val{suffix}")  # generates the files on first use
    expected = {
        "_sem_seg": [SemSegEvaluator],
        "": [COCOEvaluator],
        "_panoptic": [SemSegEvaluator, COCOEvaluator, COCOPanopticEvaluator],
        "_panoptic_separated": [SemSegEvaluator, COCOEvaluator, COCOPanopticEvaluator],
    }
    for suffix, types in expected.items():
        name = f"{PREFIX}_val{suffix}"
        assert _types(build_evaluator(cfg, name, str(tmp_path / name))) == types, name
        assert _types(DefaultTrainer.build_evaluator(cfg, name)) == types, name


def test_build_evaluator_unknown_type_names_the_dataset() -> None:
    MetadataCatalog.get("defaults_test_unknown_eval").set(evaluator_type="lvis_like")
    with pytest.raises(NotImplementedError, match="'defaults_test_unknown_eval'.*'lvis_like'"):
        build_evaluator(get_cfg(), "defaults_test_unknown_eval")
    with pytest.raises(NotImplementedError, match="'defaults_test_no_eval_type'.*None"):
        build_evaluator(get_cfg(), "defaults_test_no_eval_type")


def test_format_results_table() -> None:
    results = {
        "sem_seg": {"mIoU": 50.12345, "fwIoU": 60.0, "IoU-circle": 1.0},
        "bbox": {"AP": 30.5, "AP50": 55.25},
    }
    table = format_results_table(results)
    lines = table.splitlines()
    assert lines[0].replace(" ", "") == "|task|mIoU|fwIoU|"
    assert lines[2].replace(" ", "") == "|sem_seg|50.123|60.000|"
    assert "IoU-circle" not in table
    assert "| bbox " in table and "55.250" in table
    nested = format_results_table({"ds_a": results, "ds_b": {"sem_seg": {"mIoU": 1.0}}})
    assert nested.startswith("ds_a:\n")
    assert "\n\nds_b:\n" in nested and "1.000" in nested
    assert format_results_table({"task": 3}) == "task: 3"
