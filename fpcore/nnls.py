"""Non-negative least squares with weights summing to one: the fit behind every merge recipe
(match) and the forward selection of merge members among many references (refindex)."""
from __future__ import annotations

import math

import numpy as np

#: weight of the extra row that makes NNLS weights sum to one, times sqrt(n): large
#: enough that the sum is exact to ~1e-3 against residual rows of unit scale, small
#: enough to keep the (k+1) x k system well conditioned.
AFFINE_ROW_WEIGHT = 1e3


def affine_nnls(R: np.ndarray, x: np.ndarray) -> np.ndarray:
    """min |x - R w| with w >= 0 and sum(w) = 1 (the sum enforced by a heavy extra row)."""
    M = np.empty((R.shape[0], R.shape[1] + 1))
    M[:, :-1] = R
    M[:, -1] = x
    return affine_nnls_gram(M.T @ M, R.shape[0])


def affine_nnls_gram(G: np.ndarray, n: int) -> np.ndarray:
    """affine_nnls() from the Gram matrix ``G = [R | x]^T [R | x]`` of ``n`` rows.

    Any U with U^T U = G gives |U [w; -1]| = |x - R w|, so the NNLS runs on (k+1) rows: U
    from the eigendecomposition (defined when G is singular, as with two equal references),
    with the heavy row that makes the weights sum to one, reduced by QR to (k+1) x k."""
    from scipy.optimize import nnls  # imported here: scipy costs 0.3 s of start-up on a cache hit

    k = G.shape[0] - 1
    lam = AFFINE_ROW_WEIGHT * math.sqrt(max(n, 1))
    vals, vecs = np.linalg.eigh((G + G.T) / 2)
    U = np.sqrt(np.clip(vals, 0, None))[:, None] * vecs.T
    M = np.vstack([U, np.full(k + 1, lam)])
    T = np.linalg.qr(M, mode="r")
    w, _ = nnls(T[:, :k], T[:, k], maxiter=50 * k + 100)
    s = w.sum()
    return w / s if s > 0 else w
