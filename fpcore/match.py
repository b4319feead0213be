"""Matching a fingerprint against references: same weights, derivative, merge, unknown.

All comparisons are within one component (the denoiser for the verdict) and on the
sample positions both fingerprints share (same canonical key and shape). Values are
scaled per tensor, so every tensor counts alike whatever its magnitude.

* same weights: quantize both samples to the coarser of the two dtypes and count the
  elements that differ. A precision change leaves none; a fine-tune, even a light one,
  leaves many.
* related or not: cosine of the per-tensor centred samples, with its z-score against
  independent weights (z = cos * sqrt(n)). Independent models sit at |z| of a few.
* derivative: walk the reference tree. For parent p and registered child c, the share
  a = <x - p, c - p> / |c - p|^2 is about 1 when the file contains c's training and
  about 0 for a sibling. Sibling fine-tunes share part of their direction (weight decay,
  common data), bounded by RHO_MAX, so a share is only taken as descent when it exceeds
  what that shared part can explain for the file's own distance from p.
* merge: non-negative least squares with weights summing to one over the related
  references, globally and per UNet block group; accepted only when it explains the
  weights far better than the best single reference.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from . import dtypes, layout
from .fingerprint import Fingerprint

log = logging.getLogger(__name__)

# -- decision constants (see bench/zoo.py for how they were checked) --------------------
SAME_MAX_MISMATCH = 0.001   # fraction of sampled elements allowed to differ after requantizing
SAME_MIN_COVERAGE = 0.95    # share of the file's sampled values the reference must cover
RELATED_MIN_Z = 8.0         # independence z-score above which two models are related
RELATED_MIN_COS = 0.2       # ... and a floor on the cosine itself: no weak matches
MERGE_MAX_RATIO = 0.25      # merge residual must be at most this share of the best single one
MERGE_MIN_WEIGHT = 0.05     # weights below this are dropped from a merge recipe
BLOCK_GAIN = 0.5            # per-block fit must halve the global residual to count as block-weighted
RHO_MAX = 0.1               # largest delta cosine expected between sibling fine-tunes
SHARE_MIN = 0.5             # share of a child's training needed to call the file its descendant
FAR_REL = 0.2               # relative distance beyond which a parentless match is not trusted


@dataclass
class Candidate:
    ref: str
    score: float
    cos: float
    z: float
    distance: float           # relative RMS difference after removing rounding noise
    mismatch: float | None    # fraction of elements differing after requantizing (None: not comparable)
    coverage: float
    share: float | None = None
    related: bool = False

    def to_json(self) -> dict:
        d = {"ref": self.ref, "score": round(self.score, 4), "cos": round(self.cos, 4), "z": round(self.z, 1),
             "distance": round(self.distance, 4), "coverage": round(self.coverage, 3), "related": self.related}
        if self.mismatch is not None:
            d["mismatch"] = round(self.mismatch, 5)
        if self.share is not None:
            d["share"] = round(self.share, 3)
        return d


@dataclass
class CompVerdict:
    component: str
    relation: str                          # same_weights | derivative | merge | unknown
    ref: str | None = None
    confidence: float = 0.0
    merge: list[tuple[str, float]] = field(default_factory=list)
    merge_blocks: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    reason: str = ""
    n_values: int = 0


# -- aligned sample matrices ---------------------------------------------------------------
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


def _comp_indices(fp: Fingerprint, comp: str, min_ndim: int = 0) -> list[int]:
    return [i for i, k in enumerate(fp.keys)
            if fp.counts[i] > 0 and k.startswith(comp + ":") and len(fp.shapes[i]) >= min_ndim
            and dtypes.DTYPES[fp.dtypes[i]].is_float]


def _common(vf, vrs) -> tuple[np.ndarray, list[np.ndarray]]:
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
    tf, trs = _common(vf, vrs)
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


def _finite_share(fp: Fingerprint, comp: str) -> float:
    """Fraction of the sampled values of ``comp`` (2-D and up, as aligned) that are finite."""
    v = fp.view(comp, 2).vals
    return float(np.isfinite(v).mean()) if len(v) else 0.0


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else 0.0


def mismatch_fraction(fp: Fingerprint, ref: Fingerprint, comp: str) -> tuple[float | None, float]:
    """(fraction of shared sampled elements that differ beyond precision rounding, coverage)."""
    vf, vr = fp.view(comp, 0), ref.view(comp, 0)
    total = int(vf.counts.sum())
    if total == 0:
        return None, 0.0
    tf, (tr,) = _common(vf, [vr])
    if len(tf) == 0:
        return None, 0.0
    compared = int(vf.counts[tf].sum())
    df = np.array(vf.dtypes, object)[tf]
    dr = np.array(vr.dtypes, object)[tr]
    exact = (df == dr) & (vf.h_raw[tf] == vr.h_raw[tr])
    differ = 0
    todo = ~exact
    if todo.any():
        pairs = {(a, b) for a, b in zip(df[todo], dr[todo])}
        for da, db in pairs:
            sel = todo & (df == da) & (dr == db)
            ea, eb = vf.elements(tf[sel]), vr.elements(tr[sel])
            a, b = vf.vals[ea], vr.vals[eb]
            # fp8 "scaled": compare in the stored domain, the other side divided by the scale
            if vf.scaled and not vr.scaled:
                a, b = vf.raw_vals[ea], b / vf.scale[ea]
            elif vr.scaled and not vf.scaled:
                a, b = a / vr.scale[eb], vr.raw_vals[eb]
            elif vf.scaled and vr.scaled and np.array_equal(vf.scale[ea], vr.scale[eb]):
                a, b = vf.raw_vals[ea], vr.raw_vals[eb]
            same = dtypes.same_after_rounding(a, da, b, db)
            differ += int(a.size - np.count_nonzero(same))
    return differ / compared, compared / total


# -- fits --------------------------------------------------------------------------------
def affine_nnls(R: np.ndarray, x: np.ndarray) -> np.ndarray:
    """min |x - R w| with w >= 0 and sum(w) = 1 (the sum enforced by a heavy extra row)."""
    from scipy.optimize import nnls  # imported here: scipy costs 0.3 s of start-up on a cache hit

    n, k = R.shape
    lam = 1e3 * math.sqrt(max(n, 1))
    M = np.vstack([np.column_stack([R, x]), np.append(np.full(k, lam), lam)])
    # |A w - b| equals |T[:, :k] w - T[:, k]| up to a constant, T from the QR of [A | b]:
    # the same NNLS on a (k+1) x k system instead of n x k
    T = np.linalg.qr(M, mode="r")
    w, _ = nnls(T[:, :k], T[:, k], maxiter=50 * k + 100)
    s = w.sum()
    return w / s if s > 0 else w


def _excess(al: Aligned, rows: np.ndarray | slice, w: np.ndarray) -> float:
    """Mean squared residual of x - R w beyond the expected rounding noise."""
    res = al.x[rows] - (w @ al.RT[:, rows] if isinstance(rows, slice) else al.R[rows] @ w)
    noise = al.noise_x[rows] + al.noise_R[rows] @ (w * w)
    return max(float(np.mean(res * res) - np.mean(noise)), 0.0)


def fit_merge(al: Aligned, cols: list[int]) -> tuple[np.ndarray, float]:
    """Affine NNLS over the given reference columns; drop tiny weights and refit."""
    w = np.zeros(al.R.shape[1])
    sub = list(cols)
    for _ in range(3):
        ws = affine_nnls(al.R[:, sub], al.x)
        keep = [c for c, wi in zip(sub, ws) if wi >= MERGE_MIN_WEIGHT]
        if len(keep) == len(sub) or not keep:
            break
        sub = keep
    ws = affine_nnls(al.R[:, sub], al.x)
    w[:] = 0
    w[sub] = ws
    return w, _excess(al, slice(None), w)


# -- the decision ------------------------------------------------------------------------
def analyse(fp: Fingerprint, comp: str, refs: list, tree=None, allow_merge: bool = True) -> CompVerdict:
    """Classify component ``comp`` of ``fp`` against references (objects with ``.name``, ``.fp``).

    ``tree`` (optional) maps a reference name to its registered parent name (or None)
    and to whether it declares an unregistered parent: ``tree.parent(name)``,
    ``tree.orphan(name)``.
    """
    pool = [r for r in refs if any(k.startswith(comp + ":") for k in r.fp.keys)]
    n_file = sum(int(fp.counts[i]) for i in _comp_indices(fp, comp))
    if not pool:
        return CompVerdict(comp, "unknown", reason="no reference has this component", n_values=n_file)
    # 1. per-reference statistics, on one alignment over every reference that covers the file
    cands: list[Candidate] = []
    covered = []
    for r in pool:
        mm, cov = mismatch_fraction(fp, r.fp, comp)
        covered.append((r, mm, cov))
    # the joint alignment keeps only rows finite in every reference: one reference of NaN/Inf
    # weights would leave no rows and make the file unrelated to all of them
    ok = [r for r, _, cov in covered if cov >= 0.5 and _finite_share(r.fp, comp) >= 0.5]
    al_all = align(fp, [r.fp for r in ok], comp) if ok else None
    col_of = {r.name: i for i, r in enumerate(ok)}
    for r, mm, cov in covered:
        if al_all is None or r.name not in col_of:
            cands.append(Candidate(r.name, 0.0, 0.0, 0.0, float("inf"), mm, cov))
            continue
        ci = col_of[r.name]
        c = _cos(al_all.xc, al_all.RcT[ci])
        z = c * math.sqrt(len(al_all.x))
        unit = np.zeros(len(ok))
        unit[ci] = 1.0
        dist = math.sqrt(_excess(al_all, slice(None), unit))
        cands.append(Candidate(r.name, max(0.0, 1.0 - dist), c, z, dist, mm, cov,
                               related=(z >= RELATED_MIN_Z and c >= RELATED_MIN_COS)))
    by_name = {c.ref: c for c in cands}
    refs_by_name = {r.name: r for r in pool}
    cands.sort(key=lambda c: (-c.related, c.distance))
    related = [c for c in cands if c.related]
    out = CompVerdict(comp, "unknown", candidates=cands, n_values=n_file)
    if not related:
        best = cands[0]
        if al_all is None:       # nothing comparable (no shared tensors, or NaN/Inf weights): no claim either way
            out.confidence = 0.0
            out.reason = "no weights that can be compared with any reference (none shared, or not finite)"
            return out
        out.confidence = round(min(1.0, 1.0 - max(0.0, best.cos)), 3)
        out.reason = (f"not related to any reference (best {best.ref}: cos {best.cos:.3f}, z {best.z:.1f}, "
                      f"independent weights give |z| < {RELATED_MIN_Z:g})")
        return out
    # 2. same weights
    same = [c for c in related if c.mismatch is not None and c.mismatch <= SAME_MAX_MISMATCH
            and c.coverage >= SAME_MIN_COVERAGE]
    if same:
        s = min(same, key=lambda c: c.mismatch)
        out.relation, out.ref = "same_weights", s.ref
        out.confidence = round(1.0 - s.mismatch / SAME_MAX_MISMATCH * 0.5, 3)
        out.reason = (f"{(1 - s.mismatch) * 100:.2f}% of {n_file} sampled values equal {s.ref}'s "
                      f"after rounding to the coarser precision")
        return out
    # 3. merge of several related references
    if allow_merge and len(related) >= 2:
        names = [c.ref for c in related]
        al = al_all.cols([col_of[n] for n in names])
        if len(al.x) > 0:
            singles = [_excess(al, slice(None), np.eye(len(names))[c]) for c in range(len(names))]
            e1 = min(singles)
            w, em = fit_merge(al, list(range(len(names))))
            used = [c for c in range(len(names)) if w[c] >= MERGE_MIN_WEIGHT]
            blocks = _block_fits(al, names, list(range(len(names))))
            eb = sum(e * n for e, n, _ in blocks.values()) / max(1, sum(n for _, n, _ in blocks.values())) if blocks else em
            block_used = {c for _, _, wb in blocks.values() for c in range(len(names)) if wb[c] >= MERGE_MIN_WEIGHT}
            is_global = len(used) >= 2 and em <= MERGE_MAX_RATIO * e1 and e1 > 0
            is_block = (len(block_used) >= 2 and blocks and e1 > 0 and eb <= MERGE_MAX_RATIO * e1
                        and eb <= BLOCK_GAIN * em and len(blocks) >= 2)
            if is_global or is_block:
                if is_block:
                    tot = sum(n for _, n, _ in blocks.values())
                    w = sum(wb * n for _, n, wb in blocks.values()) / tot
                    out.merge_blocks = {g: [(names[c], round(float(wb[c]), 3)) for c in range(len(names))
                                            if wb[c] >= MERGE_MIN_WEIGHT] for g, (_, _, wb) in blocks.items()}
                    em = eb
                recipe = sorted(((names[c], float(w[c])) for c in range(len(names)) if w[c] >= MERGE_MIN_WEIGHT),
                                key=lambda t: -t[1])
                tot = sum(v for _, v in recipe)
                out.merge = [(n, round(v / tot, 3)) for n, v in recipe]
                out.relation, out.ref = "merge", out.merge[0][0]
                out.confidence = round(float(min(0.99, 1.0 - em / e1)) if e1 > 0 else 0.9, 3)
                out.reason = (f"a {'block-weighted ' if is_block else ''}merge leaves {em / max(e1, 1e-30) * 100:.1f}% of the "
                              f"difference the best single reference ({names[int(np.argmin(singles))]}) leaves")
                return out
    # 3b. merges that do not mix whole weights (TIES, DARE, merged then trained): several
    # references' own training is present, each far beyond what shared directions explain
    if allow_merge and tree is not None and len(related) >= 2:
        dm = _delta_merge(al_all, [c.ref for c in related], col_of, tree)
        if dm is not None:
            recipe, root, reason = dm
            out.merge = recipe
            out.relation, out.ref = "merge", recipe[0][0]
            out.confidence = 0.7
            out.reason = reason
            return out
    # 4. derivative: descend the reference tree
    base, conf, reason = _descend(fp, comp, related, refs_by_name, by_name, tree,
                                  al_all.cols([col_of[c.ref] for c in related]))
    if base is None:
        out.confidence = 0.5
        out.reason = reason
        return out
    out.relation, out.ref, out.confidence, out.reason = "derivative", base, conf, reason
    return out


def _block_fits(al: Aligned, names: list[str], cols: list[int]) -> dict:
    groups: dict[str, list[int]] = {}
    for t, k in enumerate(al.keys):
        g = layout.block_of(k)
        if g:
            groups.setdefault(g, []).append(t)
    out = {}
    for g, ts in groups.items():
        rows = np.isin(al.tensor_of, ts)
        if rows.sum() < 256:
            continue
        sub = Aligned(al.keys, al.tensor_of[rows], al.x[rows], al.R[rows], al.noise_x[rows], al.noise_R[rows],
                      al.xc[rows], al.Rc[rows])
        w, e = fit_merge(sub, cols)
        out[g] = (e, int(rows.sum()), w)
    return out


def _descend(fp, comp, related, refs_by_name, by_name, tree, al_rel=None):
    """Find the deepest registered reference the file descends from."""
    names = [c.ref for c in related]
    rel_names = set(names)
    parent = (lambda n: tree.parent(n)) if tree else (lambda n: None)
    orphan = (lambda n: tree.orphan(n)) if tree else (lambda n: False)
    children: dict[str, list[str]] = {}
    for n in names:
        p = parent(n)
        if p in rel_names:
            children.setdefault(p, []).append(n)
    # roots of the related forest: related refs whose registered parent is not related
    roots = [n for n in names if parent(n) not in rel_names]
    al = (al_rel if al_rel is not None else align(fp, [refs_by_name[n].fp for n in names], comp)) if children else None
    col = {n: i for i, n in enumerate(names)}
    edges = [(parent(n), n) for n in names if parent(n) in rel_names]

    def subtree(n):
        out, todo = set(), [n]
        while todo:
            m = todo.pop()
            out.add(m)
            todo.extend(children.get(m, []))
        return out

    best = None
    for root in roots:
        node, conf, notes, path = root, 0.9, [], [root]
        while al is not None:
            v = al.x - al.RT[col[node]]
            nv = float(np.linalg.norm(v))
            step = None
            for c in children.get(node, []):
                d = al.RT[col[c]] - al.RT[col[node]]
                nd = float(np.linalg.norm(d))
                if nd == 0 or nv == 0:
                    continue
                share = float(v @ d) / (nd * nd)
                # the part of the share that directions shared by every fine-tune explain:
                # measured on reference deltas unrelated to this step, else the RHO_MAX bound
                skip = set(path) | subtree(c)
                others = [(q, r) for q, r in edges if r not in skip]
                if others:
                    # the least of them (others may be merged in for real), never above the bound
                    rho = max(0.0, float(min(_cos(v, al.RT[col[r]] - al.RT[col[q]]) for q, r in others)))
                    rho = min(rho + 3.0 / math.sqrt(len(v)), RHO_MAX)
                else:
                    rho = RHO_MAX
                shared = rho * nv / nd
                excess = share - shared
                by_name[c].share = share
                if excess >= SHARE_MIN:
                    if step is None or excess > step[1]:
                        step = (c, excess)
                elif share >= SHARE_MIN:
                    notes.append(f"it may descend from {c} (share {share:.2f}), but its own changes are too large "
                                 f"to tell that from a sibling of {c}")
                    conf = min(conf, 0.6)
            if step is None:
                break
            node = step[0]
            path.append(node)
            conf = min(conf, 0.5 + 0.5 * min(1.0, (step[1] - SHARE_MIN) / 0.4))
        cand = by_name[node]
        if best is None or cand.distance < best[1].distance:
            best = (node, cand, conf, notes)
    node, cand, conf, notes = best
    if orphan(node) and cand.distance > FAR_REL:
        return None, 0.5, (f"related to {node} (cos {cand.cos:.3f}) but far from it (distance {cand.distance:.2f}); "
                           f"{node}'s parent is not registered, so a sibling cannot be told from a descendant")
    if parent(node) is None and not orphan(node) and cand.distance > FAR_REL:
        notes.append(f"far from {node} (distance {cand.distance:.2f}): it may descend from an unregistered "
                     f"model of the same family")
        conf = min(conf, 0.7)
    reason = f"descends from {node} (distance {cand.distance:.3f}, cos {cand.cos:.3f})"
    if notes:
        reason += "; " + "; ".join(notes)
    return node, round(conf, 3), reason


DELTA_MERGE_MIN = 0.1       # a reference's share must exceed the shared-direction bound by this much


def _delta_merge(al: Aligned, names: list[str], col_of: dict, tree):
    """Regress the file's change from the root of the related tree on the references' own
    trainings (the edge deltas child - parent, nearly orthogonal to each other). Least
    squares is unbiased under the elementwise noise of TIES and DARE merges, where a
    weighted average of whole weights fits badly. A reference's weight is the share of its
    edge that is not continued into its registered children."""
    rel = set(names)
    root = _root_of(names[0], rel, tree)
    members = [n for n in names if n != root and _root_of(n, rel, tree) == root]
    if len(members) < 2:
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
    if len([n for n in parts if n != root]) < 2 or max(parts.values()) >= 0.9 or sum(b) > 1.5:
        return None        # one model (plus noise), or one whole model plus part of another
    tot = sum(parts.values())
    recipe = sorted(((n, round(float(w / tot), 3)) for n, w in parts.items()), key=lambda t: -t[1])
    shares = ", ".join(f"{n} {coef[n]:.2f}" for n in members if coef[n] > 0)
    reason = (f"the file carries large shares of several references' own training on top of {root} ({shares}), "
              f"but no weighted average of whole models matches it elementwise: a TIES/DARE-style merge, "
              f"or a merge trained further")
    return recipe, root, reason


def _root_of(name: str, rel: set, tree) -> str:
    while tree.parent(name) in rel:
        name = tree.parent(name)
    return name
