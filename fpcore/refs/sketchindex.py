"""The candidate index: which few references of a large library can be related to a file.

Each reference keeps, per component, a *sketch*: a fixed-length vector made from its
fingerprint's sample (fpcore.refs.sketch: a seeded projection of the per-tensor centred and
scaled values, linear in them). Sketches of models that share a layout keep their
geometry: the distance between two sketches follows the distance between the sampled
weights, and so does the difference of two sketches, whatever the base they share.

For a file, the index returns (``select``):

* the ``K_NEAREST`` references whose sketches are closest to the file's;
* the members of the best sparse merge of sketches, chosen by forward selection with a
  stopping rule (``SELECT_MIN_GAIN``): each step adds the reference that explains the
  largest part of what is still unexplained, and stops when none explains more than
  chance alignment among thousands of unrelated siblings does;
* the registered ancestors of all of those (the descent through the tree starts at a root).

The full analysis (fpcore.match: same weights, descent, merge fit) then runs on those only.
Search is exact brute force in numpy over sketches folded to INDEX_DIM (256) floats: at 1,000
references one query takes 0.04 ms (bench/refs_scale.py, against faiss flat 0.04 ms, faiss
HNSW 0.06 ms at recall 0.93, usearch HNSW 0.12 ms at recall 0.83). An approximate index would
add a compiled dependency and a build step, save nothing measurable out of a second, and
could miss a merge member the exact search finds.

Every number that decides here is named below, with its reason and calibration.
"""
from __future__ import annotations

import io
import logging
import os

import numpy as np

from .. import layout

log = logging.getLogger(__name__)

# -- decisions ----------------------------------------------------------------------------------
#: pools up to this size are analysed whole, as before the index: the full analysis of a
#: few references costs less than any doubt about a shortlist, and small libraries give
#: exactly the verdicts they always gave (bench/zoo.py). FPCORE_REFINDEX=always uses the
#: index for every pool, =never for none (bench comparisons).
INDEX_MIN_POOL = 16
#: references returned by nearest sketch distance. A light fine-tune or a copy of a reference
#: has it first by far, a descendant of a registered child has the child before the parent;
#: the rest are spares for the sketch's error (a few per cent of a distance). Each one costs a
#: fingerprint read and a column of the analysis (~30 ms for a reduced-width SDXL).
#: Calibrated: bench/refs_scale.py (the true base ranks first at 1,000 and 10,000 references).
K_NEAREST = 4
#: ... for the other components (text encoders, VAE): shared by many references unchanged or
#: fine-tuned along one line, so the nearest two and their ancestors are what the analysis
#: uses (same weights as the oldest carrier, or a descent); merges are told by the denoiser.
K_NEAREST_OTHER = 2
#: sketches within this of the best count as a tie (several references carrying the same
#: weights: SDXL's VAE in hundreds of fine-tunes); among ties the oldest come first (the
#: verdict names the oldest registered carrier).
TIE = 1e-3
#: most references the forward selection adds as merge members (merges of more than six
#: whole models are not told apart at our sample sizes: each member below ~5 % is noise).
SELECT_MAX_MEMBERS = 6
#: a reference joins the sketch merge only if it removes at least this share of the
#: residual still unexplained. Among N unrelated siblings the best chance gain is about
#: 2 ln(N) / INDEX_DIM (0.054 at 1,000, 0.072 at 10,000), plus the direction sibling
#: fine-tunes share (cosine ~0.06, RESEARCH); a real member removes most of what is left.
#: Measured at 100 and 1,000 references: largest rejected 0.060, smallest true member 0.525.
#: Calibrated: bench/refs_scale.py prints both.
SELECT_MIN_GAIN = 0.15
#: most references handed to the full analysis (nearest, members and their ancestors):
#: the joint alignment holds one float64 column per reference per sampled value, ~1 MB per
#: reference for a full SDXL UNet, times five arrays.
MAX_CANDIDATES = 24


def mode() -> str:
    m = os.environ.get("FPCORE_REFINDEX", "auto").strip().lower()
    return m if m in ("auto", "always", "never") else "auto"


# -- sketches -------------------------------------------------------------------------------------
from .sketch import SKETCH_DIM, sketch  # noqa: E402  (issue 15: one sketch for scan peers and references)
from .sketch import SKETCH_VERSION as _SK_VERSION  # noqa: E402

#: stored with every sketch; sketches of another version are recomputed from the fingerprint
SKETCH_VERSION = f"sketch:{_SK_VERSION}:{SKETCH_DIM}"


#: length of the vectors the index searches: a sketch folded to this many buckets (bucket b of
#: the count sketch goes to b mod INDEX_DIM, itself a count sketch of the same values, then
#: scaled to unit length). 256 floats keep distances to ~9 % (sqrt(2/256)): the true base of a
#: light fine-tune is still first by far, and a merge member's gain (> 0.5) stays far above the
#: chance gains (< 0.08 at 10,000 references); a float32 matrix of 10,000 rows is 10 MB and one
#: product ~1 ms, where full-length float16 rows cost 160 MB and ~25 ms per product.
#: Calibrated: bench/refs_scale.py.
INDEX_DIM = 256
#: stored in the catalog; vectors of another version are recomputed
INDEX_VERSION = f"{SKETCH_VERSION}:fold{INDEX_DIM}"


def fold(v: np.ndarray) -> np.ndarray | None:
    """A full sketch folded to INDEX_DIM (unit length, float32); None for an empty one."""
    v = np.asarray(v, np.float64)
    if v.size % INDEX_DIM:
        return None
    f = v.reshape(-1, INDEX_DIM).sum(axis=0)
    n = float(np.linalg.norm(f))
    return (f / n).astype(np.float32) if n > 0 and np.isfinite(n) else None


def index_vectors(sk: dict) -> dict[str, np.ndarray]:
    """component -> folded vector, from full sketches (``_version`` and empty ones dropped)."""
    out = {}
    for c, v in strip_version(sk).items():
        f = fold(v)
        if f is not None:
            out[c] = f
    return out


def sketches_of(fp) -> dict[str, np.ndarray]:
    """component -> sketch, for every component of ``fp`` that has one."""
    out = {}
    for comp in fp.components():
        try:
            s = sketch(fp, comp)
        except Exception as e:   # a sketch is an optimisation: never a reason to fail
            log.debug("no sketch for %s: %s", comp, e)
            s = None
        if s is not None and np.all(np.isfinite(s)) and np.any(s != 0):
            out[comp] = np.asarray(s, np.float32)
    return out


def encode_sketches(sk: dict) -> bytes:
    buf = io.BytesIO()
    arrays = {f"c_{c}": np.asarray(v, np.float32) for c, v in sk.items() if not c.startswith("_")}
    np.savez(buf, _version=np.frombuffer(SKETCH_VERSION.encode(), np.uint8), **arrays)
    return buf.getvalue()


def decode_sketches(blob: bytes) -> dict:
    """Sketches of a .fpref file (``_version`` included); {} when unreadable (then rebuilt)."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            out = {"_version": bytes(z["_version"]).decode()}
            for name in z.files:
                if name.startswith("c_"):
                    v = z[name]
                    if v.ndim == 1 and v.dtype.kind == "f" and v.size <= 1 << 16:
                        out[name[2:]] = v.astype(np.float32)
            return out
    except Exception:
        return {}


def sketch_version(sk: dict) -> str | None:
    return sk.get("_version") if sk else None


def strip_version(sk: dict) -> dict:
    return {c: v for c, v in (sk or {}).items() if not c.startswith("_")}


# -- the index --------------------------------------------------------------------------------------
#: rows converted to float32 at a time when a float16 sketch matrix is multiplied (bounds the
#: temporary to 16 MB whatever the library's size)
CHUNK_ROWS = 4096


def matvec(M: np.ndarray, v: np.ndarray) -> np.ndarray:
    """M @ v in float32 for a float16 or float32 M, converting at most CHUNK_ROWS rows at a time."""
    v = np.asarray(v, np.float32)
    if M.dtype == np.float32:
        return M @ v
    out = np.empty(len(M), np.float32)
    for s in range(0, len(M), CHUNK_ROWS):
        out[s:s + CHUNK_ROWS] = M[s:s + CHUNK_ROWS].astype(np.float32) @ v
    return out


def top_k(sims: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first (ties in row order)."""
    k = min(k, len(sims))
    if k <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
    return part[np.argsort(-sims[part], kind="stable")]


class RefIndex:
    """Per component, one float32 matrix of folded sketches (a row per reference that has one)."""

    def __init__(self, names: dict[str, list[str]], mats: dict[str, np.ndarray]):
        self.names = names
        self.mats = mats
        self.row = {c: {n: i for i, n in enumerate(ns)} for c, ns in names.items()}

    @classmethod
    def build(cls, db) -> "RefIndex":
        per: dict[str, list] = {}
        for r in db.refs.values():
            sk = r.sketches if r.sketches is not None else (
                index_vectors(sketches_of(r._fp)) if getattr(r, "_fp", None) is not None else {})
            for c, v in sk.items():
                per.setdefault(c, []).append((r.name, v))
        names = {c: [n for n, _ in rows] for c, rows in per.items()}
        mats = {c: np.stack([v for _, v in rows]).astype(np.float32) for c, rows in per.items()}
        return cls(names, mats)

    def rows(self, comp: str, pool_names: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
        """(sketch matrix of the pool members that have one, their names, names without one)."""
        row = self.row.get(comp, {})
        have = [n for n in pool_names if n in row]
        missing = [n for n in pool_names if n not in row]
        if have == self.names.get(comp):
            return self.mats[comp], have, missing           # the whole index: no copy
        mat = self.mats[comp][[row[n] for n in have]] if have else np.zeros((0, INDEX_DIM), np.float32)
        return mat, have, missing


def forward_select(M: np.ndarray, q: np.ndarray, first: int, max_members: int = SELECT_MAX_MEMBERS,
                   min_gain: float = SELECT_MIN_GAIN, trace: list | None = None) -> tuple[list[int], list[float]]:
    """Sparse affine merge of sketch rows explaining ``q``: start from row ``first``, add the
    row that removes the largest share of the residual while that share is at least
    ``min_gain``; weights (non-negative, summing to one) refitted at each step.
    Returns (rows, their weights); a single row when nothing passes the rule. ``trace``: gets
    (row, share of the residual it removes, accepted) per step (calibration, bench)."""
    from ..nnls import affine_nnls
    M64 = lambda rows: M[rows].astype(np.float64)   # noqa: E731
    sq = np.zeros(len(M))
    for s in range(0, len(M), CHUNK_ROWS):
        c = M[s:s + CHUNK_ROWS].astype(np.float32)
        sq[s:s + CHUNK_ROWS] = np.einsum("ij,ij->i", c, c)
    sel, w = [first], np.ones(1)
    fit = M64([first])[0]
    e = q - fit
    while len(sel) < max_members:
        ee = float(e @ e)
        if ee <= 0:
            break
        # with D_j = M_j - fit, from two matrix-vector products (no N x dim temporaries):
        Mfit = matvec(M, fit)
        dots = matvec(M, e) - float(e @ fit)                       # <e, D_j>
        nn = sq - 2.0 * Mfit + float(fit @ fit)                     # |D_j|^2
        t = np.clip(dots / np.maximum(nn, 1e-30), 0.0, 1.0)
        gain = 2.0 * t * dots - t * t * nn        # |e|^2 - |e - t D_j|^2 at the best t in [0, 1]
        gain[sel] = -np.inf
        j = int(np.argmax(gain))
        if trace is not None:
            trace.append((j, float(gain[j] / ee), bool(gain[j] >= min_gain * ee)))
        if not gain[j] >= min_gain * ee:
            break
        trial = sel + [j]
        wt = affine_nnls(M64(trial).T, q)
        if wt[-1] <= 0:
            break
        sel, w = trial, wt
        fit = w @ M64(sel)
        e = q - fit
    return sel, [float(x) for x in w]


def select(db, fp, comp: str, pool: list) -> list:
    """The references of ``pool`` (a list of Reference) the full analysis of ``comp`` needs."""
    m = mode()
    if m == "never" or (m == "auto" and len(pool) <= INDEX_MIN_POOL) or not pool:
        return pool
    q = fold(sketch(fp, comp))
    by_name = {r.name: r for r in pool}
    mat, have, missing = db.index.rows(comp, list(by_name))
    if q is None or len(have) == 0:
        # nothing to sketch (no 2-D weights) or no sketched reference: the analysis has nothing to
        # compare either, a few references suffice for it to say so
        return pool[:K_NEAREST]
    q = np.asarray(q, np.float64)
    sims = matvec(mat, q)          # unit sketches: the largest dot product is the nearest
    k = K_NEAREST if comp in layout.DENOISERS else K_NEAREST_OTHER
    wide = top_k(sims, k * 8)
    depth = np.array([len(db.lineage(have[i])) for i in wide])
    tied = sims[wide] >= sims[wide[0]] - TIE
    order = np.lexsort((np.arange(len(wide)), np.where(tied, depth, 0), ~tied))   # ties: oldest first
    near = [int(wide[i]) for i in order[:k]]
    members = forward_select(mat, q, near[0])[0]
    chosen: list[str] = []
    for i in members + near:
        if have[i] not in chosen:
            chosen.append(have[i])
    chosen = chosen[:MAX_CANDIDATES]
    for n in list(chosen):                 # registered ancestors: the descent starts at a root
        for a in db.lineage(n)[:-1]:
            if a in db.refs and a not in chosen:
                chosen.append(a)
    chosen += [n for n in missing if n not in chosen]   # no sketch (rare): always analysed
    return [by_name[n] if n in by_name else db.refs[n] for n in chosen]
