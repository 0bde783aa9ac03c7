"""Post-processing that maps a model's raw outputs back to the size the caller asked for.

:func:`detector_postprocess` rescales per-instance predictions (boxes, masks, keypoints) from
the resized network input to the original image; :func:`sem_seg_postprocess` crops the padding
off a semantic score map and resizes it. Both mirror ``detectron2.modeling.postprocessing``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from segtron.layers import paste_masks_in_image
from segtron.structures import BitMasks, Instances

__all__ = ["detector_postprocess", "sem_seg_postprocess"]


def detector_postprocess(
    results: Instances, output_height: int, output_width: int, mask_threshold: float = 0.5
) -> Instances:
    """Rescale instance predictions from the network's input size to an output size.

    Boxes (``pred_boxes``, or ``proposal_boxes`` for proposals) are scaled, clipped to the
    output size, and instances whose box becomes empty are dropped. ``pred_masks`` is turned
    into (N, output_height, output_width) masks:

    - (N, 1, M, M) mask probabilities (what ROI mask heads predict) are pasted into the image,
      each stretched over its box, with :func:`segtron.layers.paste_masks_in_image`;
    - full-image masks, an (N, H, W) tensor (bool or 0/1 uint8 masks, or float probabilities)
      or :class:`BitMasks` at ``results.image_size``, are resized bilinearly. Detectron2
      supports only the first form; predictions without boxes are accepted in this form only
      (e.g. from box-free instance segmenters).

    ``pred_keypoints`` (N, K, 3) get their x and y scaled.

    Args:
        results: the predictions of one image, with ``image_size`` the size the network saw.
        output_height: the height to rescale to (usually the original image's).
        output_width: the width to rescale to.
        mask_threshold: masks are binarized with ``mask >= mask_threshold``; a negative value
            keeps soft masks (uint8, 0-255) instead.

    Returns:
        A new :class:`Instances` of image size (output_height, output_width); the input's boxes
        are scaled in place.

    Raises:
        ValueError: when there are neither boxes nor full-image masks, when (N, 1, M, M) masks
            come without boxes, or when the masks have an unexpected shape.
    """
    input_height, input_width = results.image_size
    scale_x, scale_y = output_width / input_width, output_height / input_height
    results = Instances((output_height, output_width), **results.get_fields())

    if results.has("pred_boxes"):
        output_boxes = results.pred_boxes
    elif results.has("proposal_boxes"):
        output_boxes = results.proposal_boxes
    else:
        output_boxes = None
    if output_boxes is not None:
        output_boxes.scale(scale_x, scale_y)
        output_boxes.clip(results.image_size)
        results = results[output_boxes.nonempty()]
    elif not results.has("pred_masks"):
        raise ValueError("Predictions must contain boxes (pred_boxes or proposal_boxes) or masks.")

    if results.has("pred_masks"):
        results.pred_masks = _rescale_masks(
            results, (input_height, input_width), output_height, output_width, mask_threshold
        )
    if results.has("pred_keypoints"):
        results.pred_keypoints[:, :, 0] *= scale_x
        results.pred_keypoints[:, :, 1] *= scale_y
    return results


def _rescale_masks(
    results: Instances,
    input_size: tuple[int, int],
    output_height: int,
    output_width: int,
    mask_threshold: float,
) -> torch.Tensor:
    """Turn ``results.pred_masks`` into (N, output_height, output_width) image masks.

    Args:
        results: predictions at the output size, with boxes already rescaled.
        input_size: (height, width) the predictions were made at.
        output_height: height of the returned masks.
        output_width: width of the returned masks.
        mask_threshold: as in :func:`detector_postprocess`.

    Returns:
        bool masks when ``mask_threshold >= 0``, else uint8 soft masks in 0-255.
    """
    masks = results.pred_masks
    if isinstance(masks, BitMasks):
        masks = masks.tensor
    if masks.dim() == 4 and masks.shape[1] == 1 and masks.shape[2] == masks.shape[3]:
        if results.has("pred_boxes"):
            boxes = results.pred_boxes
        elif results.has("proposal_boxes"):
            boxes = results.proposal_boxes
        else:
            raise ValueError("(N, 1, M, M) pred_masks need boxes to be pasted into the image.")
        return paste_masks_in_image(
            masks[:, 0], boxes, (output_height, output_width), threshold=mask_threshold
        )
    if masks.dim() != 3 or tuple(masks.shape[1:]) != tuple(input_size):
        raise ValueError(
            "pred_masks must be (N, 1, M, M) mask probabilities or (N, H, W) masks at the "
            f"predictions' image size {tuple(input_size)}; got shape {tuple(masks.shape)}."
        )
    soft = masks.float() if masks.dtype in (torch.bool, torch.uint8) else masks
    soft = F.interpolate(
        soft[:, None], size=(output_height, output_width), mode="bilinear", align_corners=False
    )[:, 0]
    if mask_threshold >= 0:
        return soft >= mask_threshold
    return (soft.clamp(0, 1) * 255).to(torch.uint8)


def sem_seg_postprocess(
    result: torch.Tensor, img_size: tuple[int, int], output_height: int, output_width: int
) -> torch.Tensor:
    """Crop the padding off a semantic segmentation prediction and resize it.

    Args:
        result: (C, H, W) scores (logits or probabilities) for the padded batch image.
        img_size: (height, width) of the image within the padded ``result``, i.e. the size
            the network was given before padding.
        output_height: the height to resize to (usually the original image's).
        output_width: the width to resize to.

    Returns:
        (C, output_height, output_width) scores, bilinearly resized.
    """
    cropped = result[:, : img_size[0], : img_size[1]].expand(1, -1, -1, -1)
    return F.interpolate(
        cropped, size=(output_height, output_width), mode="bilinear", align_corners=False
    )[0]
