"""The relation of each file to the other files of the folder (its ``folder`` entry).

Files are grouped by family and denoiser (``family_groups``); each distinct content is compared
in full (fpcore.match) with a few peers, chosen by sketch and re-ranked by the exact similarity
of the samples (``_pick_peers``). Cached in the store per content and set of peers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import layout, sketch

#: peers compared in full with each file: its nearest by sketch (fpcore.sketch). Eight leave room
#: for the two or three members of a merge besides copies of the file in other precisions.
PEER_CANDIDATES = 8
#: files the sketch shortlists per file, re-ranked by the exact similarity of the samples: the sketch
#: keeps distances to a few per cent, which cannot tell apart the siblings that a merge of two
#: distant models sits between (their distances differ by less than that). Calibrated with
#: bench/first_scan.py (its 120-file check, families of 60): with 32, 3 merges of fine-tunes were
#: missed (a member not shortlisted); with 64 every relation equals the exhaustive comparison's
PEER_SHORTLIST = 64
#: of those, the nearest by sketch re-ranked by the exact similarity before the nearer half of
#: the peers is taken from them (the rest are chosen by the pursuit, on sketches). Calibrated
#: with the same check: 16 gives the exhaustive comparison's relations, as 64 does
EXACT_RERANK = 16


@dataclass
class _Peer:
    name: str
    fp: object


def _quick_vectors(paths: list[str], fps: dict, comp: str) -> np.ndarray | None:
    """Per-file vectors over the denoiser tensors all files share, scaled per tensor."""
    common = None
    for p in paths:
        fp = fps[p]
        keys = {k for k, s in zip(fp.keys, fp.shapes) if k.startswith(comp + ":") and len(s) >= 2}
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


def family_groups(reports: dict, fps: dict) -> dict[tuple[str, str], list[str]]:
    """(family, denoiser component) -> files with that architecture."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p, rep in reports.items():
        if p not in fps or not rep.get("architecture"):
            continue
        den = denoiser_of(rep)
        if den:
            groups.setdefault((rep["architecture"]["family"], den), []).append(p)
    return groups


def denoiser_of(rep: dict) -> str | None:
    """The component a file's folder relation compares (as family_groups chooses it)."""
    comps = (rep.get("architecture") or {}).get("components") or []
    return next((c for c in comps if c in layout.DENOISERS), comps[0] if comps else None)


def denoiser_sketch(fp, rep: dict) -> tuple[str | None, np.ndarray | None]:
    """(component, its sketch) of a file just identified: computed in the fingerprinting phase,
    per file, so that the comparing phase only searches."""
    comp = denoiser_of(rep)
    return comp, (sketch.sketch(fp, comp) if comp and not rep.get("error") else None)


def _peer_relations(reports: dict, fps, store=None, phase=None, keys: dict | None = None,
                    candidates: int = PEER_CANDIDATES, sketched: dict | None = None) -> None:
    """Add a ``folder`` entry to each report: its relation to the other files.

    Each distinct content is compared in full with its ``candidates`` nearest peers by sketch
    (fpcore.sketch: a fixed-length vector per component and a nearest-neighbour search), not
    with every file. Cached in the store per file content (its SHA-256, else its store key) and
    set of peer contents, so a rescan of an unchanged folder does no matching."""
    import hashlib

    from .. import match
    keys = keys or {}
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
        sketches: list = []
        exact: dict = {}

        def peers_of(u: str) -> list[str]:
            others = [q for q in reps_ if q != u]
            if len(others) <= candidates:
                return others
            if not sketches:   # on the first miss only: a rescan served from the store needs none
                known = sketched or {}
                sketches.append(np.stack([known[q][1] if q in known and known[q][0] == comp and known[q][1] is not None
                                          else sketch.sketch(fps[q], comp) for q in reps_]))
            S = sketches[0]
            i = index[u]
            short = [reps_[j] for j in sketch.nearest(S, S[i], max(candidates, PEER_SHORTLIST), exclude=i)]
            if not short:
                return others[:candidates]
            return _pick_peers(u, short, candidates, fps, comp, exact, lambda q: S[index[q]])

        def relation_of(u: str) -> dict:
            """The folder relation of one distinct content (``u`` represents it)."""
            hit = store.get_report(cid[u], peers_key) if store is not None and cid[u] else None
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
                store.put_report(cid[u], peers_key, {
                    "relation": entry["relation"], "confidence": entry["confidence"],
                    "peer_sha": cid.get(entry["peer"]) if entry["peer"] else None,
                    "merge": [{"sha": cid[m["ref"]], "weight": m["weight"]} for m in entry["merge"]]})
            return entry

        # one thread: each comparison is many small numpy steps that hold the GIL, and two threads
        # measured slower than one (bench/first_scan.py, 1,000 files: 7.2-7.6 s against 5.8 s)
        found = {}
        for u in reps_:
            found[u] = relation_of(u)
            compared += 1
            if phase:
                phase("comparing", compared, total)
        for p in paths:
            dup = [q for q in paths if q != p and shas[q] and shas[q] == shas[p]]
            reports[p]["folder"] = {"duplicates": dup, **found[uniq[shas[p] or p]]}


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


def _pick_peers(u: str, short: list[str], k: int, fps, comp: str, cache: dict, sketch_of) -> list[str]:
    """``k`` peers for ``u`` from a shortlist: the nearer half by exact similarity (the nearest
    relative, copies in other precisions), the rest by what those leave unexplained (greedy
    orthogonal matching pursuit, on the sketches: they keep inner products to a few per cent),
    so that both members of a merge of two distant models are among them even when one
    member's siblings are all nearer than the other member."""
    # ``short`` comes nearest first by sketch: the exact similarity re-ranks its head only
    head = short[:EXACT_RERANK]
    score = {q: _sample_similarity(u, q, fps, comp, cache) for q in head}
    ranked = sorted(head, key=lambda q: -score[q]) + short[EXACT_RERANK:]
    chosen, rest = ranked[:(k + 1) // 2], ranked[(k + 1) // 2:]
    X = np.stack([sketch_of(q) for q in ranked]).astype(np.float64)
    row = {q: i for i, q in enumerate(ranked)}
    r = sketch_of(u).astype(np.float64)
    basis: list[np.ndarray] = []

    def add(q):
        b = X[row[q]].copy()
        for e in basis:
            b -= (e @ b) * e
        n = np.linalg.norm(b)
        if n > 1e-6:
            basis.append(b / n)
    for q in chosen:
        add(q)
    for e in basis:
        r = r - (e @ r) * e
    while len(chosen) < k and rest:
        best = rest[int(np.argmax(np.abs(X[[row[q] for q in rest]] @ r)))]
        chosen.append(best)
        rest.remove(best)
        n_before = len(basis)
        add(best)
        if len(basis) > n_before:
            r = r - (basis[-1] @ r) * basis[-1]
    return chosen
