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
    from scipy.optimize import nnls  # imported here: scipy costs 0.3 s of start-up on a cache hit

    n, k = R.shape
    lam = AFFINE_ROW_WEIGHT * math.sqrt(max(n, 1))
    M = np.vstack([np.column_stack([R, x]), np.append(np.full(k, lam), lam)])
    # |A w - b| equals |T[:, :k] w - T[:, k]| up to a constant, T from the QR of [A | b]:
    # the same NNLS on a (k+1) x k system instead of n x k
    T = np.linalg.qr(M, mode="r")
    w, _ = nnls(T[:, :k], T[:, k], maxiter=50 * k + 100)
    s = w.sum()
    return w / s if s > 0 else w
