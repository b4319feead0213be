"""fpcore.nnls.nnls (Lawson-Hanson in numpy) against scipy.optimize.nnls, the other implementation."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import nnls as scipy_nnls

from fpcore.nnls import affine_nnls_gram, nnls


def _problems(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for t in range(count):
        m, n = int(rng.integers(1, 14)), int(rng.integers(1, 14))
        A = rng.standard_normal((m, n))
        if t % 5 == 0 and n > 1:
            A[:, 1] = A[:, 0]                       # two equal references
        if t % 7 == 0:
            A *= 1e-6                               # tiny scale
        if t % 11 == 0:
            A[:, -1] = 0.0                          # an all-zero column
        yield A, rng.standard_normal(m)


def test_same_residual_as_scipy_on_thousands_of_problems():
    for A, b in _problems(0, 3000):
        n = A.shape[1]
        x_ref, r_ref = scipy_nnls(A, b, maxiter=50 * n + 100)
        x, r = nnls(A, b, maxiter=50 * n + 100)
        assert np.all(x >= 0)
        assert r == pytest.approx(float(np.linalg.norm(A @ x - b)), abs=1e-12)
        assert r <= r_ref + 1e-9 * (1 + np.linalg.norm(b)), (A, b, x, x_ref)


def test_same_solution_where_it_is_unique():
    rng = np.random.default_rng(1)
    for _ in range(500):
        n = int(rng.integers(1, 9))
        A = rng.standard_normal((n + 6, n))          # full column rank: one minimiser
        b = rng.standard_normal(n + 6)
        assert nnls(A, b)[0] == pytest.approx(scipy_nnls(A, b)[0], abs=1e-8)


def test_affine_weights_as_with_scipy():
    """The merge fit itself: the same weights whichever solver, on Gram matrices of merges."""
    rng = np.random.default_rng(2)
    for k in (2, 3, 5, 8):
        R = rng.standard_normal((3000, k))
        w_true = rng.dirichlet(np.ones(k))
        x = R @ w_true + 0.01 * rng.standard_normal(3000)
        M = np.column_stack([R, x])
        w = affine_nnls_gram(M.T @ M, 3000)
        assert w == pytest.approx(w_true, abs=0.01) and w.sum() == pytest.approx(1.0)
