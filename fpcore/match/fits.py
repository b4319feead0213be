"""Merge fits: weighted averages of whole references (global and per UNet block group),
and merges seen through the references' own trainings (TIES, DARE, merged then trained).

Non-negative least squares with weights summing to one recovers a linear merge when
every member is a reference; a TIES/DARE merge fits whole weights badly but its change
from the common root regresses cleanly on the references' edge deltas (child - parent).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import layout
from .align import Aligned, Moments, block_groups
from .decisions import (BLOCK_GAIN, BLOCK_MIN_GROUPS, BLOCK_MIN_VALUES, COPY_MAX_NOISE_RATIO, DELTA_MERGE_MAX_PART,
                        DELTA_MERGE_MAX_TOTAL, DELTA_MERGE_MIN, MERGE_MAX_RATIO, MERGE_MIN_MEMBERS, MERGE_MIN_WEIGHT,
                        MERGE_REFITS, PARENT_SHARE, RHO_MAX)
from ..nnls import affine_nnls, affine_nnls_gram  # noqa: F401  (affine_nnls re-exported: match.affine_nnls)


#: affine_floor() scales the least-squares residual by this before using it as a bound, so
#: that the solver's rounding can never make the bound exceed the true minimum
FLOOR_SLACK = 0.999


def excess(al: Aligned, w: np.ndarray) -> float:
    """Mean squared residual of x - R w beyond the expected rounding noise, over every aligned
    value (block groups use Aligned.tensor_moments)."""
    return al.moments.excess(w)


def single_excess(al: Aligned, col: int) -> float:
    """excess() of one reference alone."""
    return excess(al, np.eye(al.k)[col])


def fit_merge(al: Aligned | Moments, cols: list[int]) -> tuple[np.ndarray, float]:
    """Affine NNLS over the given reference columns; drop tiny weights and refit.
    Works on the alignment's moments: each refit costs O(k^3), not a pass over the values."""
    m = al.moments if isinstance(al, Aligned) else al
    k = m.G.shape[0] - 1
    w = np.zeros(k)
    sub = list(cols)
    for _ in range(MERGE_REFITS):
        ws = affine_nnls_gram(m.cols(sub).G, m.n)
        keep = [c for c, wi in zip(sub, ws) if wi >= MERGE_MIN_WEIGHT]
        if len(keep) == len(sub) or not keep:
            break
        sub = keep
    ws = affine_nnls_gram(m.cols(sub).G, m.n)
    w[:] = 0
    w[sub] = ws
    return w, m.excess(w)


def block_moments(al: Aligned) -> dict[str, Moments]:
    """Per UNet block group with at least BLOCK_MIN_VALUES sampled values: its moments."""
    out = {}
    for g, ts in block_groups(tuple(al.keys)).items():
        m = al.tensor_moments(ts)
        if m.n >= BLOCK_MIN_VALUES:
            out[g] = m
    return out


def block_fits(al: Aligned, cols: list[int], moments: dict[str, Moments] | None = None
               ) -> dict[str, tuple[float, int, np.ndarray]]:
    """Per UNet block group with enough samples: (residual, values, weights)."""
    out = {}
    for g, m in (block_moments(al) if moments is None else moments).items():
        w, e = fit_merge(m, cols)
        out[g] = (e, m.n, w)
    return out


def distinct_columns(m: Moments) -> list[int]:
    """The reference columns left when copies of the same weights (COPY_MAX_NOISE_RATIO) are
    kept once: of each set of copies the least noisy (the higher precision), then the first."""
    k = len(m.noise_R)
    if m.n == 0:
        return list(range(k))
    d = np.diag(m.G)[:k]
    kept: list[int] = []
    for c in sorted(range(k), key=lambda c: (m.noise_R[c], c)):
        if all((d[c] + d[j] - 2 * m.G[c, j]) / m.n > COPY_MAX_NOISE_RATIO * (m.noise_R[c] + m.noise_R[j])
               for j in kept):
            kept.append(c)
    return sorted(kept)


def affine_floor(m: Moments) -> float:
    """A lower bound on excess() over every affine combination of the references: the
    residual without the non-negativity (least squares under sum(w) = 1, exact from the
    moments), less the largest rounding noise a combination can carry. No merge fit can
    leave less, so when it is already too much for a merge the fits need not run."""
    k = m.G.shape[0] - 1
    if m.n == 0 or k == 0:
        return 0.0
    A, b = m.G[:k, :k], m.G[:k, k]
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k], kkt[:k, k], kkt[k, :k] = 2 * A, 1.0, 1.0
    sol = np.linalg.lstsq(kkt, np.append(2 * b, 1.0), rcond=None)[0]
    w = sol[:k]
    mse = float(np.append(w, -1.0) @ m.G @ np.append(w, -1.0)) / m.n
    noise = m.noise_x + (float(m.noise_R.max()) if len(m.noise_R) else 0.0)
    return max(mse * FLOOR_SLACK - noise, 0.0)


def parent_residual(w: np.ndarray, singles: list[float]) -> float:
    """What a weighted average of the references leaves of a file that is their common parent
    (each reference the file plus its own independent training): sum w_i^2 e_i, e_i each
    reference's own residual. A parent of many fine-tunes is close to their average (the
    trainings cancel), which a merge fit alone would take for a merge of them all."""
    return float(sum(wi * wi * e for wi, e in zip(w, singles)))


@dataclass
class MergeFit:
    weights: np.ndarray                      # per reference column, summing to one
    ratio: float                             # residual / best single reference's residual
    best_single: int                         # column of the best single reference
    blocks: dict[str, np.ndarray] = field(default_factory=dict)   # block-weighted: group -> weights


def whole_merge(al: Aligned) -> MergeFit | None:
    """A weighted average of whole references (globally, or per block group) that explains
    the file far better than the best single reference; None if there is none."""
    k = al.k
    if al.n == 0 or k < MERGE_MIN_MEMBERS:
        return None
    singles = [single_excess(al, c) for c in range(k)]
    e1 = min(singles)
    if e1 <= 0:
        return None
    bm = block_moments(al)
    # no merge can pass when even the unconstrained fits leave too much (a fine-tune among its
    # siblings: nothing to mix): skip the NNLS fits, which are most of the cost
    n_bm = sum(m.n for m in bm.values())
    block_floor = sum(affine_floor(m) * m.n for m in bm.values()) / n_bm if n_bm else float("inf")
    if affine_floor(al.moments) > MERGE_MAX_RATIO * e1 and (len(bm) < BLOCK_MIN_GROUPS
                                                            or block_floor > MERGE_MAX_RATIO * e1):
        return None
    cols = distinct_columns(al.moments)
    w, em = fit_merge(al, cols)
    used = [c for c in range(k) if w[c] >= MERGE_MIN_WEIGHT]
    blocks = block_fits(al, cols, bm)
    n_blk = sum(n for _, n, _ in blocks.values())
    eb = sum(e * n for e, n, _ in blocks.values()) / max(1, n_blk) if blocks else em
    block_used = {c for _, _, wb in blocks.values() for c in range(k) if wb[c] >= MERGE_MIN_WEIGHT}
    is_global = (len(used) >= MERGE_MIN_MEMBERS and em <= MERGE_MAX_RATIO * e1
                 and em <= PARENT_SHARE * parent_residual(w, singles))
    wblk = sum(wb * n for _, n, wb in blocks.values()) / n_blk if blocks else w
    is_block = (len(block_used) >= MERGE_MIN_MEMBERS and len(blocks) >= BLOCK_MIN_GROUPS
                and eb <= MERGE_MAX_RATIO * e1 and eb <= BLOCK_GAIN * em
                and eb <= PARENT_SHARE * parent_residual(wblk, singles))
    best = int(np.argmin(singles))
    if is_block:
        return MergeFit(wblk, eb / e1, best, {g: wb for g, (_, _, wb) in blocks.items()})
    if is_global:
        return MergeFit(w, em / e1, best)
    return None


def root_of(name: str, rel: set, tree) -> str:
    while tree.parent(name) in rel:
        name = tree.parent(name)
    return name


def delta_merge(al: Aligned, names: list[str], col_of: dict, tree):
    """Regress the file's change from the root of the related tree on the references' own
    trainings (the edge deltas child - parent, nearly orthogonal to each other). Least
    squares is unbiased under the elementwise noise of TIES and DARE merges, where a
    weighted average of whole weights fits badly. A reference's weight is the share of its
    edge that is not continued into its registered children.

    Returns (recipe [(name, weight)], root, reason) or None."""
    rel = set(names)
    root = root_of(names[0], rel, tree)
    members = [n for n in names if n != root and root_of(n, rel, tree) == root]
    if len(members) < MERGE_MIN_MEMBERS:
        return None
    v = al.x - al.RT[col_of[root]]
    E = np.stack([al.RT[col_of[n]] - al.RT[col_of[tree.parent(n)]] for n in members], axis=1)
    b, *_ = np.linalg.lstsq(E, v, rcond=None)
    nv = float(np.linalg.norm(v))
    bounds = np.array([RHO_MAX * nv / (float(np.linalg.norm(E[:, i])) or 1.0) for i in range(len(members))])
    if np.any(b < -(bounds + DELTA_MERGE_MIN)):
        return None        # a subtracted training: add-difference, a derivative
    b = np.where(b > bounds + DELTA_MERGE_MIN, b, 0.0)
    coef = dict(zip(members, b))
    weights = {}
    for n in [root] + members:
        kids = [m for m in members if tree.parent(m) == n]
        own = 1.0 if n == root else coef[n]
        weights[n] = own - sum(coef[k] for k in kids)
    if any(w < -DELTA_MERGE_MIN for n, w in weights.items() if n != root):
        return None        # (the root may go below zero: TIES adds the trimmed trainings up)
    parts = {n: w for n, w in weights.items() if w >= DELTA_MERGE_MIN}
    if (len([n for n in parts if n != root]) < MERGE_MIN_MEMBERS or max(parts.values()) >= DELTA_MERGE_MAX_PART
            or sum(b) > DELTA_MERGE_MAX_TOTAL):
        return None        # one model (plus noise), or one whole model plus part of another
    tot = sum(parts.values())
    recipe = sorted(((n, round(float(w / tot), 3)) for n, w in parts.items()), key=lambda t: -t[1])
    shares = ", ".join(f"{n} {coef[n]:.2f}" for n in members if coef[n] > 0)
    reason = (f"the file carries large shares of several references' own training on top of {root} ({shares}), "
              f"but no weighted average of whole models matches it elementwise: a TIES/DARE-style merge, "
              f"or a merge trained further")
    return recipe, root, reason
