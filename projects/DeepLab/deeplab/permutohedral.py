"""Gaussian filtering in a feature space with the permutohedral lattice, in pure PyTorch.

The permutohedral lattice (Adams, Baek and Davis, "Fast High-Dimensional Filtering Using the
Permutohedral Lattice", Eurographics 2010) approximates ``out_i = sum_j exp(-|f_i - f_j|^2 / 2)
v_j`` for N points with d-dimensional features ``f`` in O(N d^2) time instead of O(N^2 d):
each point is *splatted* onto the d + 1 vertices of the lattice simplex enclosing it (with
barycentric weights), the lattice values are *blurred* with a [1/4, 1/2, 1/4] kernel along each
of the d + 1 lattice directions, and every point *slices* (interpolates) the result back from
the same vertices. The fully connected CRF of Krähenbühl and Koltun (NIPS 2011) computes its
bilateral messages this way.

Here the occupied vertices are found with ``torch.unique`` on integer keys and the blur
neighbours with ``torch.searchsorted``; splat, the d + 1 blurs and slice are stored as sparse
CSR matrices, so the lattice is built once per image (vectorized, CPU or CUDA) and every
:meth:`PermutohedralLattice.filter` call is d + 3 sparse-dense products. The result equals
the Gaussian filter only up to a smooth, roughly constant factor and a slightly different
kernel shape; callers that normalize the output by the filtered ones (as the dense CRF does)
cancel most of the factor.
"""

from __future__ import annotations

import math
import warnings

import torch

__all__ = ["PermutohedralLattice"]

# Integer keys are packed into one int64; keep well clear of overflow.
_MAX_KEY_SPACE = 2**62


class PermutohedralLattice:
    """The lattice of a set of points, ready to filter any values defined on them.

    Args:
        features: (N, d) float tensor: the points' features, already divided by the standard
            deviations of the Gaussian (so that the kernel is ``exp(-|f_i - f_j|^2 / 2)``).

    Raises:
        ValueError: when ``features`` is not a non-empty 2-D tensor, or its value range is too
            large for the integer lattice keys (standard deviations far too small).
    """

    def __init__(self, features: torch.Tensor) -> None:
        if features.dim() != 2 or features.shape[0] == 0 or features.shape[1] == 0:
            raise ValueError(
                f"PermutohedralLattice needs (N, d) features with N, d > 0; got shape "
                f"{tuple(features.shape)}."
            )
        num_points, d = features.shape
        device = features.device
        # Lattice construction in float64: the rounding to the nearest remainder-0 point must
        # not depend on float32 noise.
        f = features.to(torch.float64)
        f = f - f.min(dim=0).values  # the filter is translation-invariant

        # Scale so that the blur approximates a Gaussian of standard deviation 1 (Adams et al.).
        j = torch.arange(d, device=device, dtype=torch.float64)
        inv_std = math.sqrt(2.0 / 3.0) * (d + 1)
        cf = f * (inv_std / torch.sqrt((j + 1) * (j + 2)))

        # Elevate to the hyperplane sum(x) = 0 of R^(d+1):
        # E[0] = S[0], E[k] = S[k] - k * cf[k - 1] with S[k] = sum(cf[k:]).
        suffix = torch.flip(torch.cumsum(torch.flip(cf, [1]), 1), [1])  # S[0..d-1]
        suffix = torch.cat([suffix, suffix.new_zeros(num_points, 1)], dim=1)  # S[d] = 0
        elevated = suffix.clone()
        elevated[:, 1:] -= torch.arange(1, d + 1, device=device, dtype=torch.float64) * cf

        # The closest remainder-0 lattice point, and the ranks of the differences to it.
        scale = d + 1
        down = torch.floor(elevated / scale) * scale
        up = down + scale
        rem0 = torch.where(up - elevated < elevated - down, up, down)
        total = torch.round(rem0.sum(dim=1) / scale).to(torch.int64)
        diff = elevated - rem0
        # rank[i] = number of coordinates with a larger difference (ties: lower index first).
        index = torch.arange(d + 1, device=device)
        greater = diff[:, None, :] > diff[:, :, None]
        tie_before = (diff[:, None, :] == diff[:, :, None]) & (index[None, :] < index[:, None])
        rank = (greater | tie_before).sum(dim=2) + total[:, None]
        below = rank < 0
        above = rank > d
        rank = torch.where(below, rank + scale, torch.where(above, rank - scale, rank))
        rem0 = torch.where(below, rem0 + scale, torch.where(above, rem0 - scale, rem0))

        # Barycentric coordinates of the point in its simplex.
        v = (elevated - rem0) / scale
        bary = torch.zeros(num_points, d + 2, device=device, dtype=torch.float64)
        bary.scatter_add_(1, d - rank, v)
        bary.scatter_add_(1, d + 1 - rank, -v)
        bary[:, 0] += 1.0 + bary[:, d + 1]
        weights = bary[:, : d + 1].to(features.dtype)  # (N, d + 1)

        # Keys (first d coordinates) of the d + 1 vertices of each point's simplex.
        rem0_int = torch.round(rem0[:, :d]).to(torch.int64)
        rank_d = rank[:, :d]
        ks = torch.arange(d + 1, device=device)
        keys = rem0_int[:, None, :] + ks[None, :, None]
        keys = keys - scale * (rank_d[:, None, :] > (d - ks)[None, :, None]).to(torch.int64)
        keys = keys.reshape(-1, d)

        # Pack the keys into one int64, with room for the blur neighbours (+-d per coordinate).
        low = keys.min(dim=0).values - scale
        extent = keys.max(dim=0).values - low + scale + 1
        if math.prod(int(e) for e in extent.tolist()) >= _MAX_KEY_SPACE:
            raise ValueError(
                "PermutohedralLattice: the features span too large a range for the lattice keys; "
                "the Gaussian standard deviations are far too small for these values."
            )
        strides = torch.cumprod(torch.cat([extent.new_ones(1), extent[:-1]]), dim=0)
        codes = ((keys - low) * strides).sum(dim=1)
        unique_codes, inverse = torch.unique(codes, sorted=True, return_inverse=True)
        self.num_vertices = m = int(unique_codes.numel())
        points = torch.arange(num_points, device=device).repeat_interleave(d + 1)
        vertices = inverse.reshape(-1)
        alpha = 1.0 / (1.0 + 2.0 ** (-d))
        self._splat = _sparse_csr(vertices, points, weights.reshape(-1), (m, num_points))
        self._slice = _sparse_csr(points, vertices, alpha * weights.reshape(-1), (num_points, m))

        # Blur along each lattice direction k: the neighbours' keys differ by -1 in every
        # coordinate but k, which differs by +d (for k = d, every coordinate differs by -1).
        rows = torch.arange(m, device=device)
        self._blurs = []
        for k in range(d + 1):
            offset = torch.full((d,), -1, dtype=torch.int64, device=device)
            if k < d:
                offset[k] = d
            step = int((offset * strides).sum())
            blur_rows, blur_cols = [rows], [rows]
            blur_values = [weights.new_full((m,), 0.5)]
            for neighbour_codes in (unique_codes + step, unique_codes - step):
                pos = torch.searchsorted(unique_codes, neighbour_codes).clamp(max=m - 1)
                found = unique_codes[pos] == neighbour_codes
                blur_rows.append(rows[found])
                blur_cols.append(pos[found])
                blur_values.append(weights.new_full((int(found.sum()),), 0.25))
            self._blurs.append(
                _sparse_csr(
                    torch.cat(blur_rows), torch.cat(blur_cols), torch.cat(blur_values), (m, m)
                )
            )

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Approximately Gaussian-filter values defined on the points.

        Args:
            values: (N, C) values, one row per point.

        Returns:
            (N, C) ``sum_j k(f_i, f_j) values_j`` up to the lattice's approximation, where the
            sum includes j = i.
        """
        lattice = self._splat @ values.to(self._splat.dtype)
        for blur in self._blurs:
            lattice = blur @ lattice
        return (self._slice @ lattice).to(values.dtype)


def _sparse_csr(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """A CSR matrix from COO triplets (duplicates summed)."""
    with warnings.catch_warnings():
        # PyTorch warns that sparse CSR support is in beta and that invariant checks are off.
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
        matrix = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, size)
        return matrix.coalesce().to_sparse_csr()
