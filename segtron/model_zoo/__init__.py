"""The model zoo: the config files shipped with segtron and Detectron2's published weights.

``get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")`` finds a shipped
config, ``get_config(..., trained=True)`` loads it with MODEL.WEIGHTS set to the published
checkpoint, and ``get(...)`` builds the model, as ``detectron2.model_zoo`` does.
"""

from .model_zoo import get, get_checkpoint_url, get_config, get_config_file

__all__ = ["get", "get_checkpoint_url", "get_config", "get_config_file"]
