"""The fully connected CRF of DeepLab v1/v2, as mean-field inference in PyTorch: `DenseCRF`.

The model is Krähenbühl and Koltun's ("Efficient Inference in Fully Connected CRFs with
Gaussian Edge Potentials", NIPS 2011): for labels x and an image with pixel positions p and
RGB colours I,

    E(x) = sum_i U_i(x_i) + sum_{i<j} mu(x_i, x_j) [w1 exp(-|p_i-p_j|^2 / 2 θα^2
                                                         - |I_i-I_j|^2 / 2 θβ^2)
                                                   + w2 exp(-|p_i-p_j|^2 / 2 θγ^2)],

with the unary U = -log softmax(scores) of the network and the Potts compatibility
mu(l, l') = [l != l']. Mean-field inference repeats
``Q <- softmax(-U + w1 K̃_bilateral Q + w2 K̃_gaussian Q)`` (the Potts term reduces to this up
to a per-pixel constant), starting from ``Q = softmax(-U)``. As in the authors' released code
(version 2.2, used by DeepLab), each kernel is normalized symmetrically,
``K̃ = D^-1/2 K D^-1/2`` with ``D = diag(K 1)``, and the filtering includes j = i; the weights
are therefore in units of log-probability, independent of the image size.

Message passing, the costly step, has two implementations (``method``):

- ``"exact"``: the dense N×N kernels, computed in row chunks of bounded memory (and cached
  when small). O(N^2) per iteration: for images up to a few thousand pixels, and as ground
  truth in tests.
- ``"permutohedral"``: the bilateral kernel with the permutohedral lattice
  (:class:`~.permutohedral.PermutohedralLattice`, the approximation the reference code uses),
  the purely spatial Gaussian kernel exactly, by a separable convolution truncated at 4 θγ.
  O(N) per iteration; the lattice's kernel is close to, not equal to, the Gaussian (mean
  absolute difference of the normalized messages around 0.01 on natural-looking images; the
  refined labels rarely differ). Chosen over running the exact CRF on a downsampled grid,
  which would lose the pixel-accurate boundaries the CRF is meant to recover.
- ``"auto"`` (default): exact up to ``exact_max_pixels`` pixels, permutohedral above.

Default parameters are DeepLab v1's (Chen et al., ICLR 2015) for DeepLab-CRF-LargeFOV on
PASCAL VOC: w1 = 4, θα = 121, θβ = 5, w2 = 3, θγ = 3, 10 iterations (its released CRF script:
bi_w 4, bi_xy_std 121, bi_rgb_std 5, pos_w 3, pos_xy_std 3). DeepLab v2's ResNet-101 model
(TPAMI 2017) uses w1 = 4, θα = 67, θβ = 3, w2 = 3, θγ = 1 (its released settings, as reproduced
in kazuto1011/deeplab-pytorch configs/voc12.yaml); DeepLab v2's VGG-16 model 4 / 65 / 3 / 2 / 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from segtron.config import configurable

from .permutohedral import PermutohedralLattice

__all__ = ["CRF_METHODS", "DenseCRF"]

CRF_METHODS = ("auto", "exact", "permutohedral")

# Elements of one chunk of the exact kernel (and the largest kernel that is cached): 16 MiB.
_EXACT_CHUNK_ELEMENTS = 2**22


class _ExactGaussian:
    """``v -> K v`` with ``K_ij = exp(-|f_i - f_j|^2 / 2)``, computed densely in row chunks."""

    def __init__(self, features: torch.Tensor) -> None:
        self.features = features
        self.sq_norms = (features * features).sum(dim=1)
        n = features.shape[0]
        self.rows_per_chunk = max(1, _EXACT_CHUNK_ELEMENTS // n)
        self.cached = self._rows(0, n) if n * n <= _EXACT_CHUNK_ELEMENTS else None

    def _rows(self, start: int, end: int) -> torch.Tensor:
        f = self.features[start:end]
        sq_dist = self.sq_norms[start:end, None] + self.sq_norms[None, :] - 2 * f @ self.features.T
        return torch.exp(-0.5 * sq_dist.clamp_(min=0))

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        if self.cached is not None:
            return self.cached @ values
        n = values.shape[0]
        return torch.cat(
            [
                self._rows(start, min(start + self.rows_per_chunk, n)) @ values
                for start in range(0, n, self.rows_per_chunk)
            ]
        )


class _SpatialGaussian:
    """``v -> K v`` for the purely spatial kernel of an H×W grid: a separable convolution.

    Exact up to the truncation of the Gaussian at 4 standard deviations (zero outside the
    image, as the dense sum).
    """

    def __init__(self, height: int, width: int, std: float, like: torch.Tensor) -> None:
        self.size = (height, width)
        # Beyond the image's extent the kernel only meets zero padding.
        radius = max(1, min(math.ceil(4 * std), max(height, width)))
        t = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
        self.kernel = torch.exp(-0.5 * (t / std) ** 2)
        self.radius = radius

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        c = values.shape[1]
        x = values.T.reshape(c, 1, *self.size)
        r = self.radius
        x = F.conv2d(x, self.kernel.view(1, 1, 1, -1), padding=(0, r))
        x = F.conv2d(x, self.kernel.view(1, 1, -1, 1), padding=(r, 0))
        return x.reshape(c, -1).T


def _normalized(
    filter_fn: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> D^-1/2 K D^-1/2 v`` for ``filter_fn(v) = K v`` and ``D = diag(K 1)``."""
    norm = torch.rsqrt(filter_fn(like.new_ones(like.shape[0], 1)) + 1e-20)
    return lambda v: norm * filter_fn(norm * v)


class DenseCRF:
    """Mean-field inference in the fully connected CRF (see the module docstring).

    Called as ``crf(scores, image)`` with (C, H, W) or (N, C, H, W) scores (logits) and the
    matching (3, H, W) or (N, 3, H, W) RGB images in 0-255; returns the refined probabilities
    Q with the shape of ``scores``. Runs on the device of ``scores``, one image at a time.
    """

    @configurable
    def __init__(
        self,
        *,
        num_iterations: int = 10,
        bi_w: float = 4.0,
        bi_xy_std: float = 121.0,
        bi_rgb_std: float = 5.0,
        pos_w: float = 3.0,
        pos_xy_std: float = 3.0,
        method: str = "auto",
        exact_max_pixels: int = 4096,
    ) -> None:
        """Create the CRF.

        Args:
            num_iterations: mean-field iterations; 0 returns ``softmax(scores)``.
            bi_w: w1, weight of the appearance (bilateral) kernel.
            bi_xy_std: θα, its positional standard deviation, in pixels.
            bi_rgb_std: θβ, its colour standard deviation, in 0-255 intensity units.
            pos_w: w2, weight of the smoothness (spatial Gaussian) kernel.
            pos_xy_std: θγ, its standard deviation, in pixels.
            method: "exact", "permutohedral" or "auto" (see the module docstring).
            exact_max_pixels: with "auto", the largest H*W solved exactly.

        Raises:
            ValueError: for an unknown method, a negative iteration count or weight, or a
                standard deviation that is not positive.
        """
        if method not in CRF_METHODS:
            raise ValueError(f"DenseCRF: method {method!r} is unknown; use one of {CRF_METHODS}.")
        if num_iterations < 0 or bi_w < 0 or pos_w < 0:
            raise ValueError(
                "DenseCRF: num_iterations, bi_w and pos_w must be >= 0; got "
                f"{num_iterations}, {bi_w}, {pos_w}."
            )
        if min(bi_xy_std, bi_rgb_std, pos_xy_std) <= 0:
            raise ValueError(
                "DenseCRF: the standard deviations must be > 0; got bi_xy_std="
                f"{bi_xy_std}, bi_rgb_std={bi_rgb_std}, pos_xy_std={pos_xy_std}."
            )
        self.num_iterations = num_iterations
        self.bi_w, self.bi_xy_std, self.bi_rgb_std = bi_w, bi_xy_std, bi_rgb_std
        self.pos_w, self.pos_xy_std = pos_w, pos_xy_std
        self.method = method
        self.exact_max_pixels = exact_max_pixels

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        """Arguments from ``MODEL.CRF.*`` (see :func:`add_dense_crf_config`)."""
        crf = cfg.MODEL.CRF
        return {
            "num_iterations": crf.ITER_MAX,
            "bi_w": crf.BI_W,
            "bi_xy_std": crf.BI_XY_STD,
            "bi_rgb_std": crf.BI_RGB_STD,
            "pos_w": crf.POS_W,
            "pos_xy_std": crf.POS_XY_STD,
            "method": crf.METHOD,
            "exact_max_pixels": crf.EXACT_MAX_PIXELS,
        }

    def __repr__(self) -> str:
        return (
            f"DenseCRF(num_iterations={self.num_iterations}, bi_w={self.bi_w}, "
            f"bi_xy_std={self.bi_xy_std}, bi_rgb_std={self.bi_rgb_std}, pos_w={self.pos_w}, "
            f"pos_xy_std={self.pos_xy_std}, method={self.method!r})"
        )

    def __call__(self, scores: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Refine per-pixel class scores with the image.

        Args:
            scores: (C, H, W) or (N, C, H, W) logits; the unary is ``-log_softmax(scores)``.
            image: (3, H, W) or (N, 3, H, W) RGB image(s), 0-255, at the size of ``scores``.

        Returns:
            The refined probabilities, float, with the shape of ``scores``.

        Raises:
            ValueError: when the shapes of ``scores`` and ``image`` do not match.
        """
        if scores.dim() == 4:
            if image.dim() != 4 or image.shape[0] != scores.shape[0]:
                raise ValueError(
                    f"DenseCRF: (N, C, H, W) scores {tuple(scores.shape)} need (N, 3, H, W) "
                    f"images; got {tuple(image.shape)}."
                )
            return torch.stack([self(s, i) for s, i in zip(scores, image)])
        if scores.dim() != 3 or image.dim() != 3 or image.shape != (3, *scores.shape[1:]):
            raise ValueError(
                f"DenseCRF: scores {tuple(scores.shape)} need an RGB image of shape "
                f"(3, {', '.join(str(s) for s in scores.shape[1:])}); got {tuple(image.shape)}."
            )
        num_classes, height, width = scores.shape
        logp = F.log_softmax(scores.float(), dim=0).reshape(num_classes, -1).T  # (HW, C)
        q = logp.exp()
        if self.num_iterations == 0 or self.bi_w + self.pos_w == 0:
            return q.T.reshape(scores.shape)
        bilateral, spatial = self._kernels(image.to(logp), height, width)
        for _ in range(self.num_iterations):
            q = torch.softmax(logp + self.bi_w * bilateral(q) + self.pos_w * spatial(q), dim=1)
        return q.T.reshape(scores.shape)

    def resolved_method(self, num_pixels: int) -> str:
        """The implementation used for an image of ``num_pixels`` pixels."""
        if self.method != "auto":
            return self.method
        return "exact" if num_pixels <= self.exact_max_pixels else "permutohedral"

    def _kernels(self, image: torch.Tensor, height: int, width: int):
        """The normalized bilateral and spatial message functions of one image."""
        ys, xs = torch.meshgrid(
            torch.arange(height, dtype=image.dtype, device=image.device),
            torch.arange(width, dtype=image.dtype, device=image.device),
            indexing="ij",
        )
        positions = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
        colours = image.reshape(3, -1).T
        bilateral_features = torch.cat(
            [positions / self.bi_xy_std, colours / self.bi_rgb_std], dim=1
        )
        if self.resolved_method(height * width) == "exact":
            bilateral = _ExactGaussian(bilateral_features)
            spatial = _ExactGaussian(positions / self.pos_xy_std)
        else:
            bilateral = PermutohedralLattice(bilateral_features)
            spatial = _SpatialGaussian(height, width, self.pos_xy_std, image)
        return _normalized(bilateral.filter, positions), _normalized(spatial.filter, positions)
