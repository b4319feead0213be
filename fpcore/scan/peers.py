"""The relation of each file to the other files of the folder (its ``folder`` entry).

Files are grouped by family and denoiser (``family_groups``); each distinct content is compared
in full (fpcore.match) with a few peers, chosen by orthogonal matching pursuit on the exact
cosines of the family's samples (``_family_gram``, ``_omp_all``; beyond GRAM_MAX_WORK, from
a shortlist by sketch: ``_pick_peers``). Cached in the store per content and set of peers.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from .. import layout
from ..refs import sketch
from .families import denoiser_of, family_groups

#: peers compared in full with each file (chosen by the pursuit). Eight leave room for the two or
#: three members of a merge besides copies of the file in other precisions; measured on the
#: 1,000-file folder of bench/first_scan.py: both members of 76 of 78 merges among 8, 78 among 16.
PEER_CANDIDATES = 8
#: (families too large for the exact cosines) files the sketch shortlists per file, re-ranked by
#: the exact similarity of the samples: the sketch keeps distances to a few per cent, which
#: cannot tell apart the siblings that a merge of two distant models sits between (their
#: distances differ by less than that). Calibrated with
#: bench/first_scan.py (its 120-file check, families of 60): with 32, 3 merges of fine-tunes were
#: missed (a member not shortlisted); with 64 every relation equals the exhaustive comparison's
PEER_SHORTLIST = 64
#: of those, the nearest by sketch re-ranked by the exact similarity before the nearer half of
#: the peers is taken from them (the rest are chosen by the pursuit, on sketches). Calibrated
#: with the same check: 16 gives the exhaustive comparison's relations, as 64 does
EXACT_RERANK = 16


#: the exact cosines of a family's files (_family_gram: files x files x values multiply-adds)
#: are computed while that is at most this much work: 1,000 SD1.5 UNet samples (36,096 values)
#: took 0.2-0.3 s, so this is about 8 s (5,000 SD1.5 files, 3,000 SDXL ones); beyond it on
#: every other value, or every fourth (GRAM_MAX_STRIDE)
GRAM_MAX_WORK = 1e12
#: beyond every fourth value the family's files shortlist their peers by sketch (PEER_SHORTLIST).
#: On the 1,000-file folder, the pursuit found both members of 76 of 78 merges on every value,
#: 74 on every fourth, 66 on every eighth; the sketch shortlist 42-48
GRAM_MAX_STRIDE = 4
#: added to the diagonal of the cosines a pursuit step solves (unit diagonal): far below any
#: difference between two models, it only keeps exact copies from making the system singular
OMP_RIDGE = 1e-9
#: bytes per block of unit samples (UnitRows): a few tens of blocks for a family at the limit
UNIT_BLOCK_BYTES = 32 << 20
#: files of the pursuit compared with a file whatever they explain: the nearest relative and the
#: file that best explains the rest (the second member of a two-way merge explained as little as
#: 0.6 % of what was left when the first file was a near copy: 1,000-file folder of
#: bench/first_scan.py)
OMP_ALWAYS = 2
#: later files of the pursuit are compared only if they explained at least this share of what the
#: files before them left unexplained: on that folder every merge member beyond the first two
#: explained more, and the files compared per file fell from 8 to 3.05 on average (a sibling's
#: own training explains about 1/values of a fine-tune's: nothing)
OMP_MIN_GAIN = 0.02
#: files whose pursuits run together (_omp_all: temporaries of OMP_BATCH x files x k floats)
OMP_BATCH = 256
#: folder relations written to the store per transaction (one per file measured 0.3 s per
#: 1,000 files); an interrupted scan loses none (written on the way out)
PEER_WRITES = 128


@dataclass
class _Peer:
    name: str
    fp: object


def _quick_vectors(paths: list[str], fps: dict, comp: str) -> np.ndarray | None:
    """Per-file vectors over the denoiser tensors all files share, scaled per tensor."""
    common = None
    for p in paths:
        fp = fps[p]
        keys = {k for k, s in zip(fp.keys, fp.shapes) if layout.in_component(k, comp) and len(s) >= 2}
        common = keys if common is None else common & keys
    if not common:
        return None
    keys = sorted(common)[:400]
    rows = []
    for p in paths:
        fp = fps[p]
        rows.append(np.concatenate([fp.values(fp.index[k]) for k in keys]).astype(np.float64))
    lens = {len(r) for r in rows}
    if len(lens) != 1:
        return None
    X = np.stack(rows)
    X[~np.isfinite(X)] = 0
    # scale per tensor column block by its overall RMS
    pos = 0
    for k in keys:
        n = int(fps[paths[0]].counts[fps[paths[0]].index[k]])
        blk = X[:, pos:pos + n]
        s = np.sqrt(np.mean(blk * blk)) or 1.0
        X[:, pos:pos + n] = blk / s
        pos += n
    return X


@dataclass
class Prepared:
    """What the comparing phase needs of one file (see prepare)."""
    comp: str | None             # the denoiser component (denoiser_of)
    unit: tuple | None           # its unit sample (_unit_sample): the exact cosines


class UnitRows:
    """Unit samples kept as the rows of blocks allocated once per sample length, so that the
    family's cosines are products of those blocks: stacking 1,000 separate samples measured
    0.3 s (fresh pages), as long as the product itself. Shared by the fingerprinting threads."""

    def __init__(self):
        self._blocks: dict[int, list[np.ndarray]] = {}
        self._used: dict[int, int] = {}
        self._lock = threading.Lock()

    def put(self, x: np.ndarray) -> np.ndarray:
        """``x`` copied into a row; returns that row (a view of its block)."""
        n = len(x)
        per = max(1, UNIT_BLOCK_BYTES // max(4 * n, 1))
        with self._lock:
            blocks = self._blocks.setdefault(n, [])
            if not blocks or self._used[n] == per:
                blocks.append(np.empty((per, n), np.float32))
                self._used[n] = 0
            block, row = blocks[-1], self._used[n]
            self._used[n] += 1
        block[row] = x
        return block[row]

    def gram(self, rows: list[np.ndarray], stride: int = 1) -> np.ndarray | None:
        """Inner products of rows returned by put() (all of one length; every ``stride``-th
        value), block by block; None if some row is not one of them."""
        where = []
        for x in rows:
            b = x.base
            if b is None or b.ndim != 2 or not any(b is blk for blk in self._blocks.get(len(x), ())):
                return None
            offset = x.__array_interface__["data"][0] - b.__array_interface__["data"][0]
            where.append((id(b), offset // b.strides[0]))
        blocks = {id(blk): blk if stride == 1 else np.ascontiguousarray(blk[:, ::stride])
                  for blk in self._blocks[len(rows[0])]}
        by_block: dict[int, list[int]] = {}
        for i, (b, _) in enumerate(where):
            by_block.setdefault(b, []).append(i)
        G = np.empty((len(rows), len(rows)))
        for ba, ia in by_block.items():
            ra = [where[i][1] for i in ia]
            for bb, ib in by_block.items():
                rb = [where[i][1] for i in ib]
                P = blocks[ba][:max(ra) + 1] @ blocks[bb][:max(rb) + 1].T
                G[np.ix_(ia, ib)] = P[np.ix_(ra, rb)]
        return G


def prepare(fp, rep: dict, unit_rows: UnitRows) -> Prepared:
    """The per-file part of comparing, done in the fingerprinting phase while the file is at
    hand (linear in the files, unlike the comparisons): the unit sample of the denoiser and the
    per-tensor facts of its views that the alignment reads (sums, rounding noise, finiteness,
    layout digest), so that the comparing phase only searches and fits."""
    comp = denoiser_of(rep)
    if not comp or rep.get("error"):
        return Prepared(comp, None)
    for min_ndim in (0, 2):
        v = fp.view(comp, min_ndim)
        (v.layout, v.single_dtype, v.finite)
    v = fp.view(comp, 2)
    (v.tensor_sums, v.rvar_sums)
    keys, x, v = _unit_sample(fp, comp)
    return Prepared(comp, (keys, unit_rows.put(x), v))


def _peer_relations(reports: dict, fps, store=None, phase=None, keys: dict | None = None,
                    candidates: int = PEER_CANDIDATES, prepared: dict | None = None,
                    unit_rows: UnitRows | None = None) -> None:
    """Add a ``folder`` entry to each report: its relation to the other files.

    Each distinct content is compared in full with ``candidates`` peers chosen by pursuit on the
    exact cosines of the samples (or, in a family too large for those, from a shortlist by
    sketch: fpcore.refs.sketch), not with every file. Cached in the store per file content (its
    SHA-256, else its store key) and set of peer contents, so a rescan of an unchanged folder
    does no matching. ``prepared``: path -> Prepared, for the files read in this scan (the
    others are prepared here when needed); ``unit_rows``: where their unit samples are kept."""
    import hashlib

    from .. import match
    keys = keys or {}
    unit_rows = unit_rows if unit_rows is not None else UnitRows()
    by_family = family_groups(reports, fps)
    total = sum(len({reports[p].get("sha256") or p for p in ps}) for ps in by_family.values())
    compared = 0
    if phase:
        phase("comparing", 0, total)
    for (family, comp), paths in by_family.items():
        shas = {p: reports[p].get("sha256") for p in paths}
        # the content id of a file: its SHA-256; without one, its store key (stable across scans)
        cid = {p: shas[p] or keys.get(p) for p in paths}
        peers_key = "peers:" + hashlib.sha256("|".join(["v3", comp, *sorted({cid[p] or p for p in paths})]).encode()
                                              ).hexdigest()[:32]
        # one representative per distinct content (the same bytes: the same SHA-256)
        uniq: dict[str, str] = {}
        for p in paths:
            uniq.setdefault(shas[p] or p, p)
        reps_ = list(uniq.values())
        index = {p: i for i, p in enumerate(reps_)}
        path_of_cid: dict[str, str] = {}
        for p in paths:     # the first path of a content, as in uniq: a rescan names the same peers
            if cid[p]:
                path_of_cid.setdefault(cid[p], p)
        exact: dict = {q: prepared[q].unit for q in reps_ if prepared and q in prepared
                       and prepared[q].comp == comp and prepared[q].unit is not None}
        sketches: list = []

        gram: list = []      # [(row of each file, file of each row, peers of each row)], on the first miss

        def peers_of(u: str) -> list[str]:
            if len(reps_) - 1 <= candidates:
                return [q for q in reps_ if q != u]
            if not gram:       # on the first miss only: a rescan served from the store needs none
                G, rows = _family_gram(reps_, fps, comp, exact, unit_rows)
                gram.append((rows, list(rows), _omp_all(G, candidates) if G is not None else []))
            rows, names, chosen = gram[0]
            if u in rows:
                return [names[j] for j in chosen[rows[u]]]
            if not sketches:
                S = np.stack([sketch.sketch(fps[q], comp) for q in reps_])
                # every file's shortlist from one matrix product (a product per file measured
                # 4 ms each at 1,000 files: memory-bound)
                sketches.append((S, sketch.nearest_all(S, max(candidates, PEER_SHORTLIST))))
            S, near = sketches[0]
            short = [reps_[j] for j in near[index[u]]]
            if not short:
                return [q for q in reps_ if q != u][:candidates]
            return _pick_peers(u, short, candidates, fps, comp, exact, lambda qs: S[[index[q] for q in qs]])

        cached = store.get_reports([cid[u] for u in reps_ if cid[u]], peers_key) if store is not None else {}
        to_store: list = []

        def relation_of(u: str) -> dict:
            """The folder relation of one distinct content (``u`` represents it)."""
            hit = cached.get(cid[u]) if cid[u] else None
            if hit and (hit.get("peer_sha") is None or hit["peer_sha"] in path_of_cid):
                return {"relation": hit["relation"], "confidence": hit["confidence"],
                        "peer": path_of_cid.get(hit.get("peer_sha")),
                        "merge": [{"ref": path_of_cid[m["sha"]], "weight": m["weight"]} for m in hit["merge"]
                                  if m["sha"] in path_of_cid]}
            if len(reps_) < 2:
                return {"relation": "unknown", "peer": None, "confidence": 0.0, "merge": []}
            others = peers_of(u)
            v = match.analyse(fps[u], comp, [_Peer(q, fps[q]) for q in others], tree=None, exact_mismatch=False)
            # files in a folder form no tree: the nearest related file may be a parent, a child
            # or a sibling, so it is only called "related"
            entry = {"relation": "related" if v.relation == "derivative" else v.relation, "peer": v.ref,
                     "confidence": v.confidence, "merge": [{"ref": n, "weight": w} for n, w in v.merge]}
            if store is not None and cid[u] and all(cid.get(m["ref"]) for m in entry["merge"]):
                to_store.append((cid[u], peers_key, {
                    "relation": entry["relation"], "confidence": entry["confidence"],
                    "peer_sha": cid.get(entry["peer"]) if entry["peer"] else None,
                    "merge": [{"sha": cid[m["ref"]], "weight": m["weight"]} for m in entry["merge"]]}))
            return entry

        # one thread: each comparison is many small numpy steps that hold the GIL, and two threads
        # measured slower than one (bench/first_scan.py, 1,000 files: 7.2-7.6 s against 5.8 s)
        found = {}
        try:
            for u in reps_:
                found[u] = relation_of(u)
                compared += 1
                if phase:
                    phase("comparing", compared, total)
                if len(to_store) >= PEER_WRITES:
                    store.put_reports(to_store)
                    to_store.clear()
        finally:     # an interrupted scan keeps what it compared
            if to_store:
                store.put_reports(to_store)
        for p in paths:
            dup = [q for q in paths if q != p and shas[q] and shas[q] == shas[p]]
            reports[p]["folder"] = {"duplicates": dup, **found[uniq[shas[p] or p]]}


def _family_gram(reps_: list[str], fps, comp: str, units: dict, unit_rows: UnitRows
                 ) -> tuple[np.ndarray | None, dict]:
    """(G, rows): the cosines between the unit samples of the files that share the family's most
    common layout (one matrix product, on every value or on every few: GRAM_MAX_WORK), and each
    such file's row; (None, {}) when even every GRAM_MAX_STRIDE-th value would be too much work
    (the files then shortlist by sketch)."""
    for q in reps_:
        if q not in units:
            keys, x, v = _unit_sample(fps[q], comp)
            units[q] = (keys, unit_rows.put(x), v)
    by_layout: dict[bytes, list[str]] = {}
    for q in reps_:
        by_layout.setdefault(units[q][2].layout, []).append(q)
    members = max(by_layout.values(), key=len)
    if len(members) < 2:
        return None, {}
    # every other value (or every fourth) when the product would be too much work
    stride = math.ceil(len(members) ** 2 * len(units[members[0]][1]) / GRAM_MAX_WORK)
    if stride > GRAM_MAX_STRIDE:
        return None, {}
    G = unit_rows.gram([units[q][1] for q in members], stride)
    if G is None:           # samples kept elsewhere (prepared with other UnitRows): copied in first
        for q in members:
            units[q] = (units[q][0], unit_rows.put(units[q][1]), units[q][2])
        G = unit_rows.gram([units[q][1] for q in members], stride)
    if stride > 1:                                          # cosines of the values taken
        d = np.sqrt(np.maximum(np.diag(G), 1e-30))
        G /= np.outer(d, d)
    return G, {q: i for i, q in enumerate(members)}


def _omp_peers(G: np.ndarray, i: int, k: int) -> list[int]:
    """_omp_all() for one row."""
    return _omp_all(G, k, [i])[0]


def _omp_all(G: np.ndarray, k: int, rows: list[int] | None = None) -> list[list[int]]:
    """Up to ``k`` peers for each row by orthogonal matching pursuit on the Gram matrix: each step
    takes the file most correlated with what the files already taken leave unexplained of the
    row's file, so the members of a merge are found even when many relatives of one member are
    nearer than the other member (measured on a 1,000-file folder: both members of 76 of 78
    merges among 8 peers, against 42 among the 64 nearest by sketch). Of the ``k`` steps, the
    first OMP_ALWAYS files are kept, and each later one that explained at least OMP_MIN_GAIN of
    what was left (a sibling's own training explains almost nothing of a fine-tune's). Rows go
    OMP_BATCH at a time, every step of a batch in a few array operations."""
    rows = list(range(len(G))) if rows is None else list(rows)
    k = min(k, len(G) - 1)
    out: list[list[int]] = []
    for a in range(0, len(rows), OMP_BATCH):
        F = np.array(rows[a:a + OMP_BATCH], np.int64)
        b, at = len(F), np.arange(len(F))
        R = G[F].copy()                          # each file's inner product with each residual
        diag = G[F, F]
        left = diag.copy()                       # each residual's energy
        chosen = np.zeros((b, max(k, 0)), np.int64)
        keep = np.zeros((b, max(k, 0)), bool)
        for step in range(k):
            sc = np.abs(R)
            sc[at, F] = -1.0
            if step:
                sc[at[:, None], chosen[:, :step]] = -1.0
            chosen[:, step] = np.argmax(sc, axis=1)
            C = chosen[:, :step + 1]
            A = G[C[:, :, None], C[:, None, :]]  # (b, s, s)
            rhs = G[C, F[:, None]]               # (b, s)
            # a tiny ridge keeps copies of one model in other precisions (cosine ~1) solvable
            coef = np.linalg.solve(A + OMP_RIDGE * np.eye(step + 1), rhs[..., None])[..., 0]
            now = diag - np.einsum("bs,bs->b", coef, rhs)
            keep[:, step] = (step < OMP_ALWAYS) | (left - now >= OMP_MIN_GAIN * left)
            left = now
            R = G[F] - np.einsum("bs,bsn->bn", coef, G[C])
        out.extend([int(j) for j, kp in zip(chosen[r], keep[r]) if kp] for r in range(b))
    return out


def _unit_sample(fp, comp: str):
    """(keys, vector): the sampled weights of ``comp``, each tensor centred and scaled to unit RMS,
    the whole of unit length (what the sketch approximates, exactly)."""
    v = fp.view(comp, min_ndim=2)
    x = np.where(np.isfinite(v.vals), v.vals, 0).astype(np.float32)
    n = np.maximum(v.counts, 1)
    x -= (np.bincount(v.tid, weights=x, minlength=len(v.keys)) / n)[v.tid].astype(np.float32)
    rms = np.sqrt(np.bincount(v.tid, weights=x * x, minlength=len(v.keys)) / n)
    x /= np.where(rms > 0, rms, 1.0)[v.tid].astype(np.float32)
    norm = float(np.linalg.norm(x))
    return tuple(v.keys), (x / norm if norm > 0 else x), v


def _sample_similarity(u: str, q: str, fps, comp: str, cache: dict) -> float:
    """Cosine of the centred, per-tensor scaled samples of two files over the tensors they share."""
    for p in (u, q):
        if p not in cache:
            cache[p] = _unit_sample(fps[p], comp)
    (ku, xu, vu), (kq, xq, vq) = cache[u], cache[q]
    if vu.layout == vq.layout:      # the same tensors, sampled alike (a digest: no key-by-key compare)
        return float(xu @ xq)
    common = [(vu.key_index[k], vq.key_index[k]) for k in set(ku) & set(kq)
              if vu.counts[vu.key_index[k]] == vq.counts[vq.key_index[k]]]
    if not common:
        return -1.0
    iu = vu.elements(np.array([a for a, _ in common], np.int64))
    iq = vq.elements(np.array([b for _, b in common], np.int64))
    return float(xu[iu] @ xq[iq])


def _pick_peers(u: str, short: list[str], k: int, fps, comp: str, cache: dict, sketch_rows) -> list[str]:
    """``k`` peers for ``u`` from a shortlist: the nearer half by exact similarity (the nearest
    relative, copies in other precisions), the rest by what those leave unexplained (greedy
    orthogonal matching pursuit, on the sketches: they keep inner products to a few per cent),
    so that both members of a merge of two distant models are among them even when one
    member's siblings are all nearer than the other member."""
    # ``short`` comes nearest first by sketch: the exact similarity re-ranks its head only
    head = short[:EXACT_RERANK]
    score = {q: _sample_similarity(u, q, fps, comp, cache) for q in head}
    ranked = sorted(head, key=lambda q: -score[q]) + short[EXACT_RERANK:]
    half = (k + 1) // 2
    X = sketch_rows(ranked).astype(np.float64)
    r = sketch_rows([u])[0].astype(np.float64)
    basis = np.zeros((0, X.shape[1]))

    def add(b: np.ndarray) -> np.ndarray:
        """The basis with ``b`` added (Gram-Schmidt; nothing added if ``b`` is in its span)."""
        b = b - basis.T @ (basis @ b)
        n = np.linalg.norm(b)
        return np.vstack([basis, b / n]) if n > 1e-6 else basis
    for i in range(min(half, len(ranked))):
        basis = add(X[i])
    r = r - basis.T @ (basis @ r)
    chosen, rest = list(range(min(half, len(ranked)))), list(range(half, len(ranked)))
    while len(chosen) < k and rest:
        best = rest[int(np.argmax(np.abs(X[rest] @ r)))]
        chosen.append(best)
        rest.remove(best)
        n_before = len(basis)
        basis = add(X[best])
        if len(basis) > n_before:
            r = r - (basis[-1] @ r) * basis[-1]
    return [ranked[i] for i in chosen]
