"""Detectron2 model-zoo checkpoints of Mask R-CNN and Panoptic FPN load exactly.

The COCO R-50-FPN models are built from the shipped configs with random weights, saved in the
model zoo's ``.pkl`` format (a pickle of ``{"model": {name: ndarray}, "__author__": ...}``) and
loaded into freshly built models: no key may be missing, unused or reshaped, every tensor must
come back equal, and both models must give identical predictions.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from segtron.checkpoint import DetectionCheckpointer
from segtron.config import get_cfg
from segtron.layers import FrozenBatchNorm2d
from segtron.modeling import build_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Names and shapes of Detectron2's COCO Mask R-CNN R-50-FPN (80 classes, 3 anchors per place).
MASK_RCNN_KEYS = {
    "backbone.bottom_up.stem.conv1.weight": (64, 3, 7, 7),
    "backbone.bottom_up.stem.conv1.norm.running_var": (64,),
    "backbone.bottom_up.res2.0.shortcut.weight": (256, 64, 1, 1),
    "backbone.bottom_up.res2.0.conv1.weight": (64, 64, 1, 1),
    "backbone.bottom_up.res2.0.conv1.norm.weight": (64,),
    "backbone.bottom_up.res5.2.conv3.weight": (2048, 512, 1, 1),
    "backbone.fpn_lateral2.weight": (256, 256, 1, 1),
    "backbone.fpn_output2.weight": (256, 256, 3, 3),
    "backbone.fpn_lateral5.bias": (256,),
    "proposal_generator.rpn_head.conv.weight": (256, 256, 3, 3),
    "proposal_generator.rpn_head.objectness_logits.weight": (3, 256, 1, 1),
    "proposal_generator.rpn_head.anchor_deltas.weight": (12, 256, 1, 1),
    "roi_heads.box_head.fc1.weight": (1024, 256 * 7 * 7),
    "roi_heads.box_head.fc2.weight": (1024, 1024),
    "roi_heads.box_predictor.cls_score.weight": (81, 1024),
    "roi_heads.box_predictor.bbox_pred.weight": (320, 1024),
    "roi_heads.mask_head.mask_fcn1.weight": (256, 256, 3, 3),
    "roi_heads.mask_head.mask_fcn4.weight": (256, 256, 3, 3),
    "roi_heads.mask_head.deconv.weight": (256, 256, 2, 2),
    "roi_heads.mask_head.predictor.weight": (80, 256, 1, 1),
}
# Panoptic FPN adds the semantic head (54 classes: "things" + 53 COCO stuff classes).
PANOPTIC_KEYS = MASK_RCNN_KEYS | {
    "sem_seg_head.p2.0.weight": (128, 256, 3, 3),
    "sem_seg_head.p2.0.norm.weight": (128,),
    "sem_seg_head.p5.4.weight": (128, 128, 3, 3),
    "sem_seg_head.predictor.weight": (54, 128, 1, 1),
}


class RecordingCheckpointer(DetectionCheckpointer):
    """Keeps what fvcore reports about the keys of the last loaded model."""

    incompatible: Any = None

    def _load_model(self, checkpoint: dict[str, Any]) -> Any:
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def build(config: str, seed: int) -> nn.Module:
    """The model of a shipped config on the CPU, randomly initialized, in eval mode."""
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / config))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    # Random weights score every class about equally: keep every detection and segment.
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = 0.0
    cfg.MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT = 0
    cfg.TEST.DETECTIONS_PER_IMAGE = 10  # fewer RoIs through the mask head: faster
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    # Frozen BN starts as the identity: give its buffers values, so that loading them counts.
    # Scales well under 1 keep the features of the random ResNet from growing to ~1e4, which
    # would leave no proposal.
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.weight.uniform_(0.1, 0.3, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
            module.bias.normal_(0.0, 0.1, generator=generator)
            module.running_mean.normal_(0.0, 0.1, generator=generator)
    return model


def save_model_zoo_pkl(model: nn.Module, path: Path) -> None:
    """Write ``model``'s weights as Detectron2's model zoo publishes them."""
    weights = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo"}, f)


def check_round_trip(
    config: str, expected_keys: dict[str, tuple[int, ...]], tmp_path: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Save a random model, load it into another; return both models' predictions."""
    source = build(config, seed=0)
    state = source.state_dict()
    for key, shape in expected_keys.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    path = tmp_path / "model_final.pkl"
    save_model_zoo_pkl(source, path)

    target = build(config, seed=1)
    assert any(not torch.equal(v, target.state_dict()[k]) for k, v in state.items())
    checkpointer = RecordingCheckpointer(target)
    checkpointer.load(str(path))
    incompatible = checkpointer.incompatible
    assert incompatible.missing_keys == []
    assert incompatible.unexpected_keys == []
    assert incompatible.incorrect_shapes == []
    loaded = target.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key

    image = torch.randint(0, 256, (3, 64, 96), generator=torch.Generator().manual_seed(2))
    inputs = [{"image": image.float(), "height": 128, "width": 192}]
    with torch.no_grad():
        return source(inputs), target(inputs)


def assert_same_instances(expected: Any, actual: Any) -> None:
    assert len(expected) > 0
    assert expected.image_size == actual.image_size == (128, 192)
    assert torch.equal(expected.pred_boxes.tensor, actual.pred_boxes.tensor)
    assert torch.equal(expected.scores, actual.scores)
    assert torch.equal(expected.pred_classes, actual.pred_classes)
    assert expected.pred_masks.shape == (len(expected), 128, 192)
    assert torch.equal(expected.pred_masks, actual.pred_masks)


@pytest.mark.parametrize(
    "config",
    [
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
        "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml",
    ],
)
def test_model_zoo_pkl_round_trip(config, tmp_path):
    panoptic = "Panoptic" in config
    (expected,), (actual,) = check_round_trip(
        config, PANOPTIC_KEYS if panoptic else MASK_RCNN_KEYS, tmp_path
    )
    assert_same_instances(expected["instances"], actual["instances"])
    if panoptic:
        assert torch.equal(expected["sem_seg"], actual["sem_seg"])
        expected_seg, expected_info = expected["panoptic_seg"]
        actual_seg, actual_info = actual["panoptic_seg"]
        assert torch.equal(expected_seg, actual_seg)
        assert expected_info == actual_info
        assert any(info["isthing"] for info in expected_info)
