"""Aligned samples: the values the file and its references share, scaled per tensor.

Comparisons are within one component and on the sample positions both fingerprints
share (same canonical key and shape). Values are scaled per tensor, so every tensor
counts alike whatever its magnitude.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .. import dtypes, layout
from . import quant
from ..fingerprint import Fingerprint


@dataclass
class Moments:
    """Second moments of ``[R | x]`` over some sampled values: every least-squares quantity of
    the merge fits (residuals, NNLS) follows from them in O(k^2), whatever the sample size."""
    G: np.ndarray              # (k+1, k+1): [R | x]^T [R | x]
    n: int                     # values
    noise_x: float             # mean rounding variance of x
    noise_R: np.ndarray        # (k,) mean rounding variance per reference

    def cols(self, cols: list[int]) -> "Moments":
        k = self.G.shape[0] - 1
        idx = list(cols) + [k]
        return Moments(self.G[np.ix_(idx, idx)], self.n, self.noise_x, self.noise_R[list(cols)])

    def excess(self, w: np.ndarray) -> float:
        """Mean squared residual of x - R w beyond the expected rounding noise."""
        if self.n == 0:
            return 0.0
        v = np.append(w, -1.0)
        mse = float(v @ self.G @ v) / self.n
        return max(mse - (self.noise_x + float(self.noise_R @ (w * w))), 0.0)


#: key lists whose block groups are kept (a folder or a library holds a few layouts)
BLOCK_GROUP_CACHE = 16


@functools.lru_cache(maxsize=BLOCK_GROUP_CACHE)
def block_groups(keys: tuple) -> dict[str, list[int]]:
    """Block group (layout.block_of) -> positions of its tensors in ``keys`` (the same for every
    file of a layout)."""
    groups: dict[str, list[int]] = {}
    for t, k in enumerate(keys):
        g = layout.block_of(k)
        if g:
            groups.setdefault(g, []).append(t)
    return groups


class Aligned:
    """The file's and the references' aligned samples, kept as rows (one per reference, the
    file last): ``MT`` the values scaled per tensor (float64). Per tensor, ``S`` their sums and
    ``NS`` the sums of their rounding variances: centred statistics and expected rounding noise
    follow from these without more passes over the values (the alignment is memory-bound)."""

    def __init__(self, keys: list[str], tensor_of: np.ndarray, MT: np.ndarray | None, S: np.ndarray,
                 NS: np.ndarray, moments: Moments | None = None, parent: "Aligned | None" = None,
                 rows: list[int] | None = None, cnt: np.ndarray | None = None):
        self.keys, self.tensor_of = keys, tensor_of
        self._MT, self.S, self.NS = MT, S, NS
        # values per tensor (a cols() view shares its parent's)
        self.cnt = np.bincount(tensor_of, minlength=S.shape[1]).astype(np.float64) if cnt is None else cnt
        self._moments = moments
        self._block_moments: dict = {}
        self._centred: np.ndarray | None = None
        self._parent, self._rows = parent, rows     # a cols() view: these rows of the parent's

    @property
    def MT(self) -> np.ndarray:
        if self._MT is None:                        # a cols() view, copied when first needed
            self._MT = self._parent.MT[self._rows]
        return self._MT

    @property
    def n(self) -> int:
        return len(self.tensor_of)

    x = property(lambda self: self.MT[-1])            # file values, scaled per tensor (float64)
    RT = property(lambda self: self.MT[:-1])          # (k, n): one row per reference
    R = property(lambda self: self.MT[:-1].T)         # (n, k)

    def ref_row(self, c: int) -> np.ndarray:
        """Reference ``c``'s values, without copying the others."""
        return self._parent.MT[self._rows[c]] if self._MT is None else self._MT[c]

    def file_row(self) -> np.ndarray:
        return self._parent.MT[self._rows[-1]] if self._MT is None else self._MT[-1]

    @property
    def xc(self) -> np.ndarray:
        """The file's values centred per tensor."""
        return self.x - (self.S[-1] / np.maximum(self.cnt, 1))[self.tensor_of]

    @property
    def k(self) -> int:
        return self.S.shape[0] - 1

    def _noise(self, NS: np.ndarray, n: int) -> tuple[float, np.ndarray]:
        nm = NS.sum(axis=1) / n if n else np.zeros(NS.shape[0])
        return float(nm[-1]), nm[:-1]

    @property
    def moments(self) -> Moments:
        """Moments over every aligned value (computed once, shared with cols())."""
        if self._moments is None:
            self._moments = self._moments_by_block()
        return self._moments

    def _moments_by_block(self) -> Moments:
        """The moments over every value, summed over ranges of tensors: each block group whose
        tensors are in a row, and the gaps between them. The block groups' own moments
        (tensor_moments) come out of the same pass: the products are memory-bound, and the
        values are read once instead of twice."""
        MT = self.MT
        ranges = []
        for ts in block_groups(tuple(self.keys)).values():
            if ts == list(range(ts[0], ts[-1] + 1)):
                a, b = np.searchsorted(self.tensor_of, [ts[0], ts[-1] + 1])
                ranges.append((int(a), int(b), ts))
        ranges.sort(key=lambda r: r[0])
        G = np.zeros((MT.shape[0], MT.shape[0]))
        self._block_moments = {}
        pos = 0
        for a, b, ts in ranges + [(self.n, self.n, None)]:
            if a > pos:                                 # a gap: tensors in no block group
                G += MT[:, pos:a] @ MT[:, pos:a].T
            if ts is not None and b > a:
                Gb = MT[:, a:b] @ MT[:, a:b].T
                G += Gb
                self._block_moments[tuple(ts)] = Moments(Gb, b - a, *self._noise(self.NS[:, ts], b - a))
            pos = max(pos, b)
        return Moments(G, self.n, *self._noise(self.NS, self.n))

    @property
    def centred_gram(self) -> np.ndarray:
        """[Rc | xc]^T [Rc | xc], the values centred per tensor: the cosines between the file and
        the references. sum (a - mean a)(b - mean b) = sum ab - sum a * sum b / count, per tensor."""
        if self._centred is None:
            live = self.cnt > 0
            S = self.S[:, live]
            self._centred = self.moments.G - (S / self.cnt[live]) @ S.T
        return self._centred

    def cols(self, cols: list[int]) -> "Aligned":
        """The same alignment restricted to some references: a view (the values are not copied;
        its moments are the parent's, restricted)."""
        root, idx = self, list(cols) + [self.k]
        if self._MT is None:                        # a view of a view: rows of the first parent
            root, idx = self._parent, [self._rows[i] for i in idx]
        return Aligned(self.keys, self.tensor_of, None, root.S[idx], root.NS[idx],
                       self.moments.cols(list(cols)), parent=root, rows=idx, cnt=self.cnt)

    def tensor_moments(self, tensors: list[int]) -> Moments:
        """Moments over the values of some tensors only (a block group). Those of a block group
        whose tensors are in a row come from the moments pass (_moments_by_block)."""
        if self._MT is None:                        # a cols() view: the parent's, restricted
            full = self._parent.tensor_moments(tensors)
            return Moments(full.G[np.ix_(self._rows, self._rows)], full.n, full.noise_x,
                           np.concatenate([full.noise_R, [full.noise_x]])[self._rows[:-1]])
        self.moments                                # its pass fills _block_moments
        hit = self._block_moments.get(tuple(tensors))
        if hit is not None:
            return hit
        M = self.MT[:, np.isin(self.tensor_of, tensors)]
        n = M.shape[1]
        return Moments(M @ M.T, n, *self._noise(self.NS[:, tensors], n))


def common(vf, vrs) -> tuple[np.ndarray, list[np.ndarray]]:
    """Tensor indices (in the file's view, and in each reference's) shared by all."""
    if all(vr.layout == vf.layout for vr in vrs):
        t = np.arange(len(vf.keys))
        return t, [t] * len(vrs)
    keep, per = [], [[] for _ in vrs]
    for t, k in enumerate(vf.keys):
        js = []
        for vr in vrs:
            j = vr.key_index.get(k)
            if j is None or vr.shapes[j] != vf.shapes[t] or vr.counts[j] != vf.counts[t]:
                break
            js.append(j)
        else:
            keep.append(t)
            for lst, j in zip(per, js):
                lst.append(j)
    return np.array(keep, np.int64), [np.array(p, np.int64) for p in per]


def align(fp: Fingerprint, refs: list[Fingerprint], comp: str, min_ndim: int = 2) -> Aligned | None:
    """Stack the samples of the tensors the file and every reference share."""
    vf = fp.view(comp, min_ndim)
    vrs = [r.view(comp, min_ndim) for r in refs]
    tf, trs = common(vf, vrs)
    if len(tf) == 0:
        return None
    k = len(refs)
    n = int(vf.counts[tf].sum())
    views, tensors = vrs + [vf], trs + [tf]
    # every tensor shared and every value finite (the common case): whole arrays, and the
    # rounding noise from each view's per-tensor sums
    whole = all(len(t) == len(v.keys) and v.finite for v, t in zip(views, tensors))
    MT = np.empty((k + 1, n))                # rows [R^T; x], then scaled per tensor
    NT = None if whole else np.empty((k + 1, n))
    for c, (v, t) in enumerate(zip(views, tensors)):
        e = slice(None) if len(t) == len(v.keys) else v.elements(t)
        MT[c] = v.vals[e]
        if NT is not None:
            NT[c] = v.rvar[e]
    tid = vf.tid if len(tf) == len(vf.keys) else np.repeat(np.arange(len(tf)), vf.counts[tf])
    if not whole:
        ok = np.isfinite(MT).all(axis=0)
        if not ok.all():
            MT, NT, tid = MT[:, ok], NT[:, ok], tid[ok]
    if MT.shape[1] == 0:
        return None
    nt = len(tf)
    cnt = np.bincount(tid, minlength=nt).astype(np.float64)
    present = np.nonzero(cnt)[0]
    starts = np.concatenate([[0], np.cumsum(cnt[present])[:-1]]).astype(np.int64)   # tid is sorted

    def per_tensor(A: np.ndarray) -> np.ndarray:
        out = np.zeros((A.shape[0], nt))
        out[:, present] = np.add.reduceat(A, starts, axis=1)
        return out
    if whole:   # per-tensor sums kept by each view: no pass over the stacked values for them
        ss = np.sum([v.tensor_sums[1] for v in views], axis=0)
        sums = np.stack([v.tensor_sums[0] for v in views])
    else:
        ss = per_tensor(MT * MT).sum(axis=0)
    scale = np.sqrt(ss / np.maximum(cnt * (k + 1), 1))
    scale[scale == 0] = 1.0
    inv = 1.0 / scale
    MT *= inv[tid]
    NS = (np.stack([v.rvar_sums for v in views]) if NT is None else per_tensor(NT)) * (inv * inv)
    return Aligned(vf.keys if len(tf) == len(vf.keys) else [vf.keys[t] for t in tf], tid, MT,
                   sums * inv if whole else per_tensor(MT), NS, cnt=cnt)


def finite_share(fp: Fingerprint, comp: str) -> float:
    """Fraction of the sampled values of ``comp`` (2-D and up, as aligned) that are finite."""
    view = fp.view(comp, 2)
    if not len(view.vals):
        return 0.0
    return 1.0 if view.finite else float(np.isfinite(view.vals).mean())


def cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else 0.0


#: values checked first when only "at most ``limit`` differ?" matters: differing values in any
#: subset bound the total from below, and unrelated or trained weights differ almost everywhere,
#: so a thousand values settle most pairs
MISMATCH_PREFIX = 1024


def mismatch_fraction(fp: Fingerprint, ref: Fingerprint, comp: str,
                      limit: float | None = None) -> tuple[float | None, float]:
    """(fraction of shared sampled elements that differ beyond precision rounding, coverage).
    With ``limit``, a fraction above it may be a lower bound (the count stops early)."""
    vf, vr = fp.view(comp, 0), ref.view(comp, 0)
    total = int(vf.counts.sum())
    if total == 0:
        return None, 0.0
    tf, (tr,) = common(vf, [vr])
    if len(tf) == 0:
        return None, 0.0
    compared = int(vf.counts[tf].sum())
    fast = _mismatch_same_layout(fp, ref, vf, vr, tf, None if limit is None else limit * compared)
    if fast is not None:
        return fast / compared, compared / total
    df = np.array(vf.dtypes, object)[tf]
    dr = np.array(vr.dtypes, object)[tr]
    exact = (df == dr) & (vf.h_raw[tf] == vr.h_raw[tr])
    todo = ~exact
    differ = _differ_quantised(fp, ref, vf, vr, tf, tr, todo) if todo.any() else 0
    if todo.any():
        pairs = {(a, b) for a, b in zip(df[todo], dr[todo])}
        for da, db in pairs:
            sel = todo & (df == da) & (dr == db)
            ea, eb = vf.elements(tf[sel]), vr.elements(tr[sel])
            if vf.scaled or vr.scaled:
                # ComfyUI "fp8 scaled": fp8(w / s) next to s; one master value must explain both sides
                sa = vf.scale[ea] if vf.scaled else 1.0
                sb = vr.scale[eb] if vr.scaled else 1.0
                same = dtypes.could_be_same(vf.raw_vals[ea], da, sa, vr.raw_vals[eb], db, sb)
            else:
                same = dtypes.same_after_rounding(vf.vals[ea], da, vr.vals[eb], db)
            differ += int(len(ea) - np.count_nonzero(same))
    return differ / compared, compared / total


def _mismatch_same_layout(fp, ref, vf, vr, tf, limit: float | None = None) -> int | None:
    """Values that differ beyond rounding, computed over whole arrays when both views hold the
    same tensors in one dtype each, neither scaled nor block-quantised (the common case: a
    folder of one architecture); None when that does not hold. With ``limit`` (a count), the
    first MISMATCH_PREFIX values are counted first, and their count returned if above it."""
    if (len(tf) != len(vf.keys) or vf.layout != vr.layout or vf.scaled or vr.scaled
            or fp.info.get("quant") or ref.info.get("quant")):
        return None
    da, db = vf.single_dtype, vr.single_dtype
    if da is None or db is None:
        return None
    todo = ~((vf.h_raw == vr.h_raw) if da == db else np.zeros(len(tf), bool))
    if not todo.any():
        return 0
    if todo.all():
        a, b = vf.vals, vr.vals
    else:
        m = todo[vf.tid]
        a, b = vf.vals[m], vr.vals[m]
    if limit is not None and len(a) > MISMATCH_PREFIX:
        head = int(MISMATCH_PREFIX - np.count_nonzero(
            dtypes.same_after_rounding(a[:MISMATCH_PREFIX], da, b[:MISMATCH_PREFIX], db)))
        if head > limit:
            return head
    return int(len(a) - np.count_nonzero(dtypes.same_after_rounding(a, da, b, db)))


def _differ_quantised(fp, ref, vf, vr, tf, tr, todo: np.ndarray) -> int:
    """Values that differ in tensors block-quantised (GGUF) on exactly one side, compared by
    requantising the other side with that scheme; those tensors are taken out of ``todo``."""
    qf, qr = fp.info.get("quant") or {}, ref.info.get("quant") or {}
    if not qf and not qr:
        return 0
    differ = 0
    groups: dict[tuple, list[int]] = {}
    for j in np.nonzero(todo)[0]:
        kf, kr = vf.keys[tf[j]], vr.keys[tr[j]]
        sf, sr = qf.get(kf), qr.get(kr)
        n = int(vf.counts[tf[j]])
        if sf and not sr and quant.comparable(sf, n):
            groups.setdefault((0, sf, vr.dtypes[tr[j]]), []).append(j)
        elif sr and not sf and quant.comparable(sr, n):
            groups.setdefault((1, sr, vf.dtypes[tf[j]]), []).append(j)
    for (side, scheme, other_dt), js in groups.items():
        ea, eb = vf.elements(tf[js]), vr.elements(tr[js])
        a, b = vf.vals[ea], vr.vals[eb]
        same = quant.same_quantised(a, scheme, b, other_dt) if side == 0 else quant.same_quantised(b, scheme, a,
                                                                                                 other_dt)
        differ += int(len(ea) - np.count_nonzero(same))
        todo[js] = False
    return differ
