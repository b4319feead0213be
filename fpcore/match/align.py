"""Aligned samples: the values the file and its references share, scaled per tensor.

Comparisons are within one component and on the sample positions both fingerprints
share (same canonical key and shape). Values are scaled per tensor, so every tensor
counts alike whatever its magnitude.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import dtypes, layout
from . import quant
from ..fingerprint import Fingerprint


@dataclass
class Aligned:
    keys: list[str]
    tensor_of: np.ndarray      # element -> index into keys
    x: np.ndarray              # file values, scaled per tensor (float64)
    R: np.ndarray              # (n, k) reference values, scaled
    noise_x: np.ndarray        # per-element rounding variance of x (scaled)
    noise_R: np.ndarray        # (n, k)
    xc: np.ndarray             # centred per tensor (for cosines)
    Rc: np.ndarray

    def __post_init__(self):
        self.RT = np.ascontiguousarray(self.R.T)     # one contiguous row per reference
        self.RcT = np.ascontiguousarray(self.Rc.T)

    def cols(self, cols: list[int]) -> "Aligned":
        """The same alignment restricted to some references."""
        return Aligned(self.keys, self.tensor_of, self.x, self.R[:, cols], self.noise_x, self.noise_R[:, cols],
                       self.xc, self.Rc[:, cols])

    def rows(self, rows: np.ndarray) -> "Aligned":
        """The same alignment restricted to some sampled values (a block group)."""
        return Aligned(self.keys, self.tensor_of[rows], self.x[rows], self.R[rows], self.noise_x[rows],
                       self.noise_R[rows], self.xc[rows], self.Rc[rows])


def comp_indices(fp: Fingerprint, comp: str, min_ndim: int = 0) -> list[int]:
    """Sampled float tensors of component ``comp``."""
    return [i for i, k in enumerate(fp.keys)
            if fp.counts[i] > 0 and layout.in_component(k, comp) and len(fp.shapes[i]) >= min_ndim
            and dtypes.DTYPES[fp.dtypes[i]].is_float]


def common(vf, vrs) -> tuple[np.ndarray, list[np.ndarray]]:
    """Tensor indices (in the file's view, and in each reference's) shared by all."""
    if all(vr.keys == vf.keys and vr.shapes == vf.shapes and np.array_equal(vr.counts, vf.counts) for vr in vrs):
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
    ef = vf.elements(tf)
    ers = [vr.elements(t) for vr, t in zip(vrs, trs)]
    x = vf.vals[ef].astype(np.float64)
    R = np.stack([vr.vals[e] for vr, e in zip(vrs, ers)], axis=1).astype(np.float64) if refs else np.zeros((len(x), 0))
    nx = vf.rvar[ef]
    nR = np.stack([vr.rvar[e] for vr, e in zip(vrs, ers)], axis=1) if refs else np.zeros((len(x), 0))
    tid = np.repeat(np.arange(len(tf)), vf.counts[tf])
    ok = np.isfinite(x) & np.all(np.isfinite(R), axis=1)
    if not ok.all():
        x, R, nx, nR, tid = x[ok], R[ok], nx[ok], nR[ok], tid[ok]
    if len(x) == 0:
        return None
    nt = len(tf)
    cnt = np.bincount(tid, minlength=nt).astype(np.float64)
    ss = np.bincount(tid, weights=x * x, minlength=nt) + sum(
        np.bincount(tid, weights=R[:, c] * R[:, c], minlength=nt) for c in range(R.shape[1]))
    s = np.sqrt(ss / np.maximum(cnt * (1 + R.shape[1]), 1))
    s[s == 0] = 1.0
    se = s[tid]
    x, R = x / se, R / se[:, None]
    nx, nR = nx / (se * se), nR / (se * se)[:, None]

    def centred(v):
        m = np.bincount(tid, weights=v, minlength=nt) / np.maximum(cnt, 1)
        return v - m[tid]
    xc = centred(x)
    Rc = np.stack([centred(R[:, c]) for c in range(R.shape[1])], axis=1) if R.shape[1] else R
    return Aligned([vf.keys[t] for t in tf], tid, x, R, nx, nR, xc, Rc)


def finite_share(fp: Fingerprint, comp: str) -> float:
    """Fraction of the sampled values of ``comp`` (2-D and up, as aligned) that are finite."""
    v = fp.view(comp, 2).vals
    return float(np.isfinite(v).mean()) if len(v) else 0.0


def cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else 0.0


def mismatch_fraction(fp: Fingerprint, ref: Fingerprint, comp: str) -> tuple[float | None, float]:
    """(fraction of shared sampled elements that differ beyond precision rounding, coverage)."""
    vf, vr = fp.view(comp, 0), ref.view(comp, 0)
    total = int(vf.counts.sum())
    if total == 0:
        return None, 0.0
    tf, (tr,) = common(vf, [vr])
    if len(tf) == 0:
        return None, 0.0
    compared = int(vf.counts[tf].sum())
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
