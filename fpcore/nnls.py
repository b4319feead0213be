"""Non-negative least squares with weights summing to one: the fit behind every merge recipe
(match) and the forward selection of merge members among many references (refindex).

The NNLS solver is Lawson and Hanson's active-set algorithm (Solving Least Squares Problems,
1974, ch. 23), the one scipy.optimize.nnls implements, written here in numpy: the systems are
tiny ((k+1) x k, k the candidate members), and ``from scipy.optimize import nnls`` cost 0.4-1.1 s
of start-up (scipy 1.17.1) in every process that met a merge. tests/test_match.py checks it
against scipy's on thousands of random and degenerate problems."""
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
    k = G.shape[0] - 1
    lam = AFFINE_ROW_WEIGHT * math.sqrt(max(n, 1))
    vals, vecs = np.linalg.eigh((G + G.T) / 2)
    U = np.sqrt(np.clip(vals, 0, None))[:, None] * vecs.T
    M = np.vstack([U, np.full(k + 1, lam)])
    T = np.linalg.qr(M, mode="r")
    w, _ = nnls(T[:, :k], T[:, k], maxiter=50 * k + 100)
    s = w.sum()
    return w / s if s > 0 else w


def nnls(A: np.ndarray, b: np.ndarray, maxiter: int | None = None) -> tuple[np.ndarray, float]:
    """argmin |A x - b| subject to x >= 0, and the residual norm (Lawson-Hanson active set).
    ``maxiter`` bounds the inner iterations (default 3 n, as scipy); past it the current
    feasible solution is returned."""
    A = np.asarray(A, np.float64)
    b = np.asarray(b, np.float64)
    m, n = A.shape
    maxiter = 3 * n if maxiter is None else maxiter
    x = np.zeros(n)
    passive = np.zeros(n, bool)
    # a dual value below this is rounding, not a direction that lowers the residual
    tol = 10 * np.finfo(np.float64).eps * max(m, n) * max(np.abs(A).sum(axis=0).max(initial=0.0), 1e-300)
    w = A.T @ b
    it = 0
    while not passive.all() and (w[~passive] > tol).any():
        passive[np.argmax(np.where(passive, -np.inf, w))] = True
        while True:
            s = np.zeros(n)
            s[passive] = np.linalg.lstsq(A[:, passive], b, rcond=None)[0]
            if (s[passive] > tol).all() or it >= maxiter:
                break
            it += 1
            neg = passive & (s <= tol)
            alpha = np.min(x[neg] / (x[neg] - s[neg]))     # step back to the feasible boundary
            x = x + alpha * (s - x)
            passive &= x > tol
            x[~passive] = 0.0
        x = s
        w = A.T @ (b - A @ x)
        if it >= maxiter:
            break
    return x, float(np.linalg.norm(A @ x - b))
