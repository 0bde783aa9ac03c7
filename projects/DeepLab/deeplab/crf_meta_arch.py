"""`DeepLabCRFSegmentor`: a `SemanticSegmentor` whose inference ends with the dense CRF.

Registered in ``META_ARCH_REGISTRY``; works with any semantic segmentation head. With
``MODEL.CRF.ENABLED`` (keys added by :func:`add_dense_crf_config`), each image's scores, once
at the requested output ``height`` × ``width``, are refined by :class:`~.crf.DenseCRF` with
the input image resized to that size and converted to RGB from ``INPUT.FORMAT``; the output
``sem_seg`` is then the log of the CRF's marginals (so its softmax is the refined
probabilities). Training is unchanged: the CRF is a post-processing step, as in DeepLab v1/v2.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from segtron.config import CfgNode, add_missing_keys, configurable
from segtron.modeling import META_ARCH_REGISTRY, SemanticSegmentor

from .crf import DenseCRF

__all__ = ["DeepLabCRFSegmentor", "add_dense_crf_config"]

# MODEL.CRF keys; defaults are DeepLab v1's CRF for DeepLab-CRF-LargeFOV (see crf.py).
_CRF_DEFAULTS: dict[str, Any] = {
    "ENABLED": False,
    "ITER_MAX": 10,
    "POS_W": 3.0,
    "POS_XY_STD": 3.0,
    "BI_W": 4.0,
    "BI_XY_STD": 121.0,
    "BI_RGB_STD": 5.0,
    # "auto" (exact up to EXACT_MAX_PIXELS pixels, else permutohedral), "exact" or
    # "permutohedral".
    "METHOD": "auto",
    "EXACT_MAX_PIXELS": 4096,
}

# INPUT.FORMAT -> channel order that gives RGB (None: replicate the single channel).
_TO_RGB: dict[str, list[int] | None] = {"RGB": [0, 1, 2], "BGR": [2, 1, 0], "L": None}


def add_dense_crf_config(cfg: CfgNode) -> None:
    """Add the ``MODEL.CRF`` keys of the dense CRF to `cfg` (in place); present keys are kept.

    ``ENABLED`` (False), ``ITER_MAX`` (10 mean-field iterations), ``POS_W`` / ``POS_XY_STD``
    (w2 = 3, θγ = 3: the smoothness kernel), ``BI_W`` / ``BI_XY_STD`` / ``BI_RGB_STD`` (w1 = 4,
    θα = 121, θβ = 5: the appearance kernel), ``METHOD`` ("auto") and ``EXACT_MAX_PIXELS``
    (4096); see :class:`~.crf.DenseCRF`.

    Args:
        cfg: a config from `segtron.config.get_cfg`, not frozen.
    """
    add_missing_keys(cfg, {"MODEL.CRF": _CRF_DEFAULTS})


@META_ARCH_REGISTRY.register()
class DeepLabCRFSegmentor(SemanticSegmentor):
    """A :class:`SemanticSegmentor` that refines its inference outputs with a dense CRF."""

    @configurable
    def __init__(
        self, *, crf: DenseCRF | None = None, input_format: str = "BGR", **kwargs: Any
    ) -> None:
        """Create the model.

        Args:
            crf: the CRF applied at inference; None gives :class:`SemanticSegmentor`'s output.
            input_format: channel order of the input images: "BGR", "RGB" or "L".
            **kwargs: the arguments of :class:`SemanticSegmentor`.

        Raises:
            ValueError: when ``crf`` is given and ``input_format`` is not one of these.
        """
        super().__init__(**kwargs)
        if crf is not None and input_format not in _TO_RGB:
            raise ValueError(
                f"DeepLabCRFSegmentor: the CRF needs colour images; cfg.INPUT.FORMAT "
                f"{input_format!r} is not supported (use one of {sorted(_TO_RGB)}) or set "
                "MODEL.CRF.ENABLED False."
            )
        self.crf = crf
        self.input_format = input_format

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, Any]:
        """:class:`SemanticSegmentor`'s arguments, the CRF (MODEL.CRF.*) and INPUT.FORMAT."""
        ret = super().from_config(cfg)
        ret["crf"] = DenseCRF(cfg) if cfg.MODEL.CRF.ENABLED else None
        ret["input_format"] = cfg.INPUT.FORMAT
        return ret

    def forward(self, batched_inputs: list[dict[str, Any]]) -> Any:
        """:meth:`SemanticSegmentor.forward`, then, in inference, the CRF on every image.

        Returns:
            In training, a dict of scalar losses. In inference, one dict per image with
            "sem_seg": (num_classes, height, width) scores; with the CRF, the log of its
            marginal probabilities.
        """
        results = super().forward(batched_inputs)
        if self.training or self.crf is None:
            return results
        for result, inputs in zip(results, batched_inputs):
            scores = result["sem_seg"]
            image = self._rgb(inputs["image"], scores.shape[-2:])
            q = self.crf(scores, image)
            result["sem_seg"] = torch.log(q.clamp(min=1e-12))
        return results

    def _rgb(self, image: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """`image` (C, H, W) in ``input_format`` as a float RGB image of the given size."""
        image = self._move_to_current_device(image).float()
        order = _TO_RGB[self.input_format]
        image = image.expand(3, -1, -1) if order is None else image[order]
        if tuple(image.shape[-2:]) != tuple(size):
            image = F.interpolate(image[None], size=tuple(size), mode="bilinear")[0]
        return image
