"""Scan a model folder: identify every file, against the references and against each other.

Finds duplicates (same bytes), the same weights in another precision or format, and
fine-tunes and merges of other files in the same folder; optionally writes the tag
sidecars and an HTML report with the folder's family tree. The store makes a second
run nearly instant (unchanged files are neither hashed nor read).
"""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import identify as ident
from . import layout, tags
from .facts import MODEL_EXTS
from .errors import FpError
from .refs import RefDB

log = logging.getLogger(__name__)

#: peers compared in full with each file: its nearest by sketch (fpcore.sketch). Eight leave room
#: for the two or three members of a merge besides copies of the file in other precisions.
PEER_CANDIDATES = 8
#: files the sketch shortlists per file, re-ranked by the exact similarity of the samples: the sketch
#: keeps distances to a few per cent, which cannot tell apart the siblings that a merge of two
#: distant models sits between (their distances differ by less than that)
PEER_SHORTLIST = 32


def _leaves(path: str, roots: tuple[str, ...]) -> bool:
    """True when ``path``'s real location (symlinks, ``..`` resolved) is inside none of ``roots``."""
    real = os.path.realpath(path)
    return not any(real == r or os.path.commonpath([real, r]) == r for r in roots)


def find_models(root: str | os.PathLike, allowed_roots=None,
                skipped: list | None = None) -> tuple[list[str], list[dict]]:
    """Model files under ``root``, recursively, each real directory visited once (symlink
    loops end there). Unreadable directories are reported, not fatal. With ``allowed_roots``
    (an exposed UI: the model folders), a file or folder whose real path leaves them is neither
    read nor walked; it is appended to ``skipped`` as {"path", "reason"} (the link, not its target)."""
    root = os.fspath(root)
    roots = tuple(os.path.realpath(r) for r in allowed_roots) if allowed_roots is not None else None

    def outside(path: str) -> bool:
        if roots is None or not _leaves(path, roots):
            return False
        if skipped is not None:
            skipped.append({"path": path, "reason": "a link leading outside the model folders"})
        return True
    errors: list[dict] = []
    if not os.path.isdir(root):
        from .errors import BadFileError
        raise BadFileError("is not a directory", root)
    files: list[str] = []
    seen: set[str] = set()

    def onerror(e: OSError):
        errors.append(ident.error_report(e.filename or root, FpError(f"cannot list directory: {e.strerror or e}",
                                                                         e.filename or root)))
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        if "model_index.json" in filenames and dirpath != root:  # a diffusers folder is one model
            files.append(dirpath)
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in sorted(dirnames) if not outside(os.path.join(dirpath, d))]
        for f in sorted(filenames):
            if f.lower().endswith(MODEL_EXTS) and not outside(os.path.join(dirpath, f)):
                files.append(os.path.join(dirpath, f))
    return files, errors


#: files per probe batch when choosing how many files to hash at once
PROBE_FILES = 4
#: two concurrent hashes must beat one by this factor to be kept
PARALLEL_GAIN = 1.15


def _run(files: list[str], one, sizes: dict, reports: dict, workers: int | None, root: str) -> int:
    """Identify every file; returns the number of files read at once in the end.

    Unless ``workers`` is given: on a spinning disk one at a time; otherwise the first
    files are read one at a time, the next ones two at a time, and two are kept only if
    they were faster (the disk gains from it), since /sys often says "rotational" for
    virtual disks and says nothing about network shares. Faster: more files fingerprinted
    per second, a hashed file counting as many as its hash took bytes of fingerprint reads."""
    from time import perf_counter

    def batch(paths: list[str], n: int) -> float:
        t = perf_counter()
        if n > 1 and len(paths) > 1:
            with ThreadPoolExecutor(n) as ex:
                for path, rep in zip(paths, ex.map(one, paths)):
                    reports[path] = rep
        else:
            for path in paths:
                reports[path] = one(path)
        return sum(_work(reports[p], sizes.get(p, 0)) for p in paths) / max(perf_counter() - t, 1e-9)

    if workers:
        batch(files, workers)
        return workers
    if _disk_workers(root) == 1 and not _probe_anyway(root):
        batch(files, 1)
        return 1
    if len(files) < 3 * PROBE_FILES:
        batch(files, 2)
        return 2
    r1 = batch(files[:PROBE_FILES], 1)
    r2 = batch(files[PROBE_FILES:3 * PROBE_FILES], 2)
    n = 2 if r2 > PARALLEL_GAIN * r1 else 1
    log.info("reading one file at a time: %.1f, two: %.1f units/s; using %d", r1, r2, n)
    batch(files[3 * PROBE_FILES:], n)
    return n


#: bytes a file's fingerprint reads, about: one page per sampled tensor run (the unit of _work)
FINGERPRINT_WORK_BYTES = 4 << 20


def _work(rep: dict, size: int) -> float:
    """What reading one file cost the disk, in fingerprints: 0 if answered from the store."""
    st = rep.get("stats") or {}
    if "cached" in st or rep.get("error"):
        return 0.0
    hashed = size if rep.get("hash") == "computed" else 0
    return 1.0 + hashed / FINGERPRINT_WORK_BYTES


def _probe_anyway(path: str) -> bool:
    """Virtual disks (virtio, Xen) report "rotational" whatever backs them: measure instead."""
    try:
        dev = os.stat(path).st_dev
        real = os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
        return any(os.path.basename(real).startswith(p) or f"/{p}" in real for p in ("vd", "xvd"))
    except OSError:
        return False


def _disk_workers(path: str) -> int:
    """Hash files in parallel only where the disk gains from it: 1 on a spinning disk."""
    try:
        dev = os.stat(path).st_dev
        major, minor = os.major(dev), os.minor(dev)
        base = f"/sys/dev/block/{major}:{minor}"
        for cand in (f"{base}/queue/rotational", f"{base}/../queue/rotational"):
            if os.path.exists(cand):
                with open(cand) as f:
                    if f.read().strip() == "1":
                        return 1
                break
    except (OSError, ValueError):
        pass
    return max(1, min(2, os.cpu_count() or 1))


@dataclass
class _Peer:
    name: str
    fp: object


def scan_folder(root: str | os.PathLike, *, db: RefDB | None = None, refs_dir=None, store=None, cache_dir=None,
                use_cache: bool = True, progress=None, byte_progress=None, write_tags: bool = False,
                dry_run: bool = False, workers: int | None = None, phase=None, hash_policy: str = "auto",
                peer_candidates: int = PEER_CANDIDATES, allowed_roots=None) -> dict:
    """Identify every model under ``root``. Returns {"reports", "groups", "tags", "errors"}.

    ``progress(done_files, total_files, path)``; ``byte_progress(done_bytes, total_bytes)``;
    ``phase(name, done, total)`` for the phases after identification: "hashing" (confirming
    the files whose fingerprints say they may be the same bytes), "comparing" (files with each
    other, counted per distinct content), "grouping", "tags".
    ``hash_policy``: "auto" hashes only where a hash decides something (a known release's size,
    same-size files with the same fingerprint, before they are called identical); "always",
    "never". ``peer_candidates``: peers compared in full with each file (nearest by sketch).
    With ``write_tags`` the sidecars are written (``dry_run``: only planned). ``allowed_roots``
    (an exposed UI): files and folders whose real path leaves them are listed in ``skipped``."""
    from .store import Store
    db = db or RefDB(refs_dir)
    own_store = store is None and use_cache
    store = store if store is not None else (Store(cache_dir) if use_cache else None)
    try:
        skipped: list[dict] = []
        files, errors = find_models(root, allowed_roots, skipped)
        sizes = {}
        for f in files:
            try:
                sizes[f] = os.stat(f).st_size if not os.path.isdir(f) else sum(
                    os.path.getsize(os.path.join(dp, n)) for dp, _, ns in os.walk(f) for n in ns)
            except OSError:
                sizes[f] = 0
        total_bytes, done = sum(sizes.values()), {"bytes": 0, "files": 0}
        reports: dict[str, dict] = {}
        read: dict = {}          # path -> Fingerprint read in this scan (compared without loading it again)

        def one(path: str) -> dict:
            base = done["bytes"]

            def cb(n, total):
                if byte_progress:
                    byte_progress(base + n, total_bytes)
            try:
                rep = ident.identify(path, db, store=store, progress=cb, hash_policy=hash_policy, fingerprints=read)
            except FpError as e:
                rep = ident.error_report(path, e)
            except OSError as e:  # a file vanishing mid-scan, EIO ...
                rep = ident.error_report(path, FpError(f"{e.strerror or e}", path))
            done["bytes"] += sizes.get(path, 0)
            done["files"] += 1
            if byte_progress:
                byte_progress(done["bytes"], total_bytes)
            if progress:
                progress(done["files"], len(files), path)
            return rep

        chosen = _run(files, one, sizes, reports, workers, os.fspath(root))
        fps = _fingerprints(reports, store, read)
        if hash_policy == "auto":
            _confirm_same_bytes(reports, sizes, fps, db, store, chosen, phase)
        _peer_relations(reports, fps, store, phase, keys=fps.keys_by_path, candidates=peer_candidates)
        if phase:
            phase("grouping", 0, 1)
        groups = _cached_groups(reports, sizes, fps, store, os.fspath(root))
        tag_results = []
        if write_tags:
            if phase:
                phase("tags", 0, 1)
            tag_results = _write_tags(reports, dry_run)
        out = {"root": os.fspath(root), "reports": [reports[f] for f in files], "groups": groups,
               "tags": tag_results, "errors": errors, "workers": chosen, "_fingerprints": fps}
        if allowed_roots is not None:
            out["skipped"] = skipped
        return out
    finally:
        if own_store and store is not None:
            store.close()


class _Fingerprints(Mapping):
    """path -> Fingerprint of every file that was identified, loaded from the store on first use
    (a rescan of an unchanged folder loads only those it compares), else read from the file."""

    def __init__(self, reports: dict, store):
        from .store import stat_identity
        self._store = store
        self._fps: dict = {}
        self.keys_by_path: dict[str, str | None] = {}
        for path, rep in reports.items():
            if rep.get("error"):
                continue
            key = rep.get("sha256")
            if store is not None and not key and not os.path.isdir(path):
                try:
                    rec = store.file_record(stat_identity(path))
                    key = rec.key if rec is not None else None
                except OSError:
                    key = None
            self.keys_by_path[path] = key

    def __getitem__(self, path: str):
        if path in self._fps:
            return self._fps[path]
        if path not in self.keys_by_path:
            raise KeyError(path)
        key = self.keys_by_path[path]
        got = self._store.get_fingerprint(key) if self._store is not None and key else None
        if got:
            fp = got[0]
        else:
            try:
                fp = ident.fingerprint_path(path)[0]
            except (FpError, OSError) as e:
                log.warning("%s: cannot read the fingerprint again: %s", path, e)
                del self.keys_by_path[path]
                raise KeyError(path) from None
        self._fps[path] = fp
        return fp

    def __contains__(self, path) -> bool:
        return path in self.keys_by_path

    def __iter__(self):
        return iter(list(self.keys_by_path))

    def __len__(self) -> int:
        return len(self.keys_by_path)


def _fingerprints(reports: dict, store, read: dict | None = None) -> _Fingerprints:
    """path -> Fingerprint for every file that was identified: those ``read`` in this scan, the
    others loaded when first used."""
    fps = _Fingerprints(reports, store)
    for p, fp in (read or {}).items():
        if p in fps.keys_by_path:
            fps._fps[p] = fp
    return fps


def _confirm_same_bytes(reports: dict, sizes: dict, fps, db, store, workers: int, phase=None) -> None:
    """Hash the files that may be byte-identical to another file of the folder (same size, same
    sampled bytes of the same tensors) and have no hash yet, so that "identical" and the bytes
    offered as reclaimable rest on compared bytes. A file that changed since its fingerprint is
    reported (its report becomes an error) and nothing is cached for it."""
    groups: dict[tuple, list[str]] = {}
    for p, rep in reports.items():
        if rep.get("error") or p not in fps or os.path.isdir(p):
            continue
        key = fps.keys_by_path.get(p) if hasattr(fps, "keys_by_path") else None
        try:
            digest = (store.sample_digest(key) if store is not None and key else None) or fps[p].sample_digest()
        except KeyError:
            continue
        groups.setdefault((sizes.get(p, 0), digest), []).append(p)
    todo = [p for ps in groups.values() if len(ps) > 1 for p in ps if not reports[p].get("sha256")]
    if not todo:
        return
    total = sum(sizes.get(p, 0) for p in todo)
    done = {"bytes": 0}
    if phase:
        phase("hashing", 0, total)

    def confirm(path: str) -> dict:
        try:
            rep = ident.identify(path, db, store=store, hash_policy="always")
        except FpError as e:
            rep = ident.error_report(path, e)
        except OSError as e:
            rep = ident.error_report(path, FpError(f"{e.strerror or e}", path))
        done["bytes"] += sizes.get(path, 0)
        if phase:
            phase("hashing", done["bytes"], total)
        return rep

    with ThreadPoolExecutor(max(1, workers)) as ex:
        for path, rep in zip(todo, ex.map(confirm, todo)):
            if rep.get("error"):
                fps.keys_by_path.pop(path, None)
            else:
                rep = dict(rep, stats=reports[path].get("stats"))   # what the first pass cost, plus the hash
                fps.keys_by_path[path] = rep["sha256"]
            reports[path] = rep


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
        comps = rep["architecture"].get("components") or []
        den = next((c for c in comps if c in layout.DENOISERS), comps[0] if comps else None)
        if den:
            groups.setdefault((rep["architecture"]["family"], den), []).append(p)
    return groups


def _peer_relations(reports: dict, fps, store=None, phase=None, keys: dict | None = None,
                    candidates: int = PEER_CANDIDATES) -> None:
    """Add a ``folder`` entry to each report: its relation to the other files.

    Each distinct content is compared in full with its ``candidates`` nearest peers by sketch
    (fpcore.sketch: a fixed-length vector per component and a nearest-neighbour search), not
    with every file. Cached in the store per file content (its SHA-256, else its store key) and
    set of peer contents, so a rescan of an unchanged folder does no matching."""
    import hashlib

    from . import match, sketch
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
                sketches.append(sketch.sketch_matrix([fps[q] for q in reps_], comp))
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

        # numpy releases the GIL in the large products, so two threads use both cores
        with ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as ex:
            found = {}
            for u, entry in zip(reps_, ex.map(relation_of, reps_)):
                found[u] = entry
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
    if ku == kq and len(xu) == len(xq):
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
    score = {q: _sample_similarity(u, q, fps, comp, cache) for q in short}
    ranked = sorted(short, key=lambda q: -score[q])
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


def _same_component(fa, fb, comp: str) -> bool:
    """Whether component ``comp`` holds the same weights in both fingerprints (up to precision),
    each covering the other: the rule of a same_weights verdict, applied file to file."""
    from . import match
    for x, y in ((fa, fb), (fb, fa)):
        mm, cov = match.mismatch_fraction(x, y, comp, limit=match.SAME_MAX_MISMATCH)
        if mm is None or mm > match.SAME_MAX_MISMATCH or cov < match.SAME_MIN_COVERAGE:
            return False
    return True


def _weighted_components(rep: dict) -> list[str]:
    return [c for c in (rep.get("architecture") or {}).get("components") or [] if c not in layout.IGNORED]


def _component_diff(reps: list[str], reports: dict, fps: dict) -> tuple[list[str], list[str], list[str]]:
    """(components the same in every file, present in every file but not the same, missing in some)."""
    comp_sets = [_weighted_components(reports[p]) for p in reps]
    order = [c for c in layout.ORDER if any(c in cs for cs in comp_sets)]
    every = [c for c in order if all(c in cs for cs in comp_sets)]
    same = [c for c in every if all(_same_component(fps[reps[0]], fps[q], c) for q in reps[1:])]
    return same, [c for c in every if c not in same], [c for c in order if c not in every]


def group_label(same: list[str], differ: list[str], missing: list[str]) -> str:
    """'same UNet and text encoders, VAE differs'."""
    text = f"same {ident.components_phrase(same)}" if same else "same weights in part"
    if differ:
        text += f"; {ident.components_phrase(differ)} " + ("differs" if len(differ) == 1 else "differ")
    if missing:
        text += f"; {ident.components_phrase(missing)} not in every file"
    return text


def _groups(reports: dict, sizes: dict, fps: dict | None = None) -> list[dict]:
    """Groups of files holding the same model. Bytes are reclaimable only where every component
    with weights is the same: ``identical`` (same SHA-256) and ``same_weights`` (every component
    the same up to precision). Files that share the denoiser but differ elsewhere (a swapped VAE,
    trained text encoders) form a ``same_denoiser`` group that reclaims nothing. The folder
    relations are corrected to match: ``same_weights`` only where every component is the same."""
    fps = fps or {}
    out = []
    size = lambda ps: sum(sizes.get(p, 0) for p in ps) - max(sizes.get(p, 0) for p in ps)  # noqa: E731
    by_sha: dict[str, list[str]] = {}
    for p, rep in reports.items():
        if rep.get("sha256") and not rep.get("error"):
            by_sha.setdefault(rep["sha256"], []).append(p)
    for sha, paths in by_sha.items():
        if len(paths) > 1:
            out.append({"relation": "identical", "paths": sorted(paths), "reclaimable_bytes": size(paths),
                        "label": "the same bytes"})
    # files whose denoiser is the same (the folder relation says so): union of the peer links
    parent: dict[str, str] = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x
    for p, rep in reports.items():
        f = rep.get("folder") or {}
        if f.get("relation") in ("same_weights", "same_denoiser") and f.get("peer") and f["peer"] in reports:
            a, b = find(p), find(f["peer"])
            if a != b:
                parent[a] = b
    classes: dict[str, list[str]] = {}
    for p in set(parent) | set(parent.values()):
        classes.setdefault(find(p), []).append(p)
    # one link per file can split one set of equal denoisers in two: join classes whose denoisers match
    roots = sorted(classes)
    den = {}
    for r in roots:
        comps = (reports[r].get("architecture") or {}).get("components") or []
        den[r] = next((c for c in comps if c in layout.DENOISERS), comps[0] if comps else None)
    for i, r in enumerate(roots):
        for q in roots[i + 1:]:
            if (find(r) != find(q) and den[r] and den[r] == den[q] and r in fps and q in fps
                    and reports[r]["architecture"].get("family") == reports[q]["architecture"].get("family")
                    and _same_component(fps[r], fps[q], den[r])):
                parent[find(r)] = find(q)
    merged: dict[str, set] = {}
    for r, members in classes.items():
        merged.setdefault(find(r), set()).update(members)
    for members in merged.values():
        # exact duplicates of members belong to them; one representative per distinct content
        members |= {q for m in list(members) for q in (reports[m].get("folder") or {}).get("duplicates", [])}
        content = lambda p: reports[p].get("sha256") or p  # noqa: E731
        reps: dict[str, str] = {}
        for m in sorted(members):
            reps.setdefault(content(m), m)
        if len(reps) < 2 or any(r not in fps for r in reps.values()):
            continue
        # classes of contents where every component with weights is the same
        full: list[list[str]] = []
        for r in reps.values():
            for cls in full:
                if (set(_weighted_components(reports[r])) == set(_weighted_components(reports[cls[0]]))
                        and all(_same_component(fps[r], fps[cls[0]], c) for c in _weighted_components(reports[r]))):
                    cls.append(r)
                    break
            else:
                full.append([r])
        paths_of = lambda rs: sorted(m for m in members if reps[content(m)] in rs)  # noqa: E731
        for cls in full:
            if len(cls) > 1:
                ps = paths_of(cls)
                out.append({"relation": "same_weights", "paths": ps, "reclaimable_bytes": size(ps),
                            "label": "every component the same up to precision"})
        if len(full) > 1:
            same, differ, missing = _component_diff([c[0] for c in full], reports, fps)
            out.append({"relation": "same_denoiser", "paths": sorted(members), "reclaimable_bytes": 0,
                        "label": group_label(same, differ, missing), "differs": differ + missing})
        # the folder relation of each file follows the same rule
        for cls in full:
            partners = [r for r in cls]
            others = [c[0] for c in full if c is not cls]
            for r in cls:
                f_paths = paths_of([r])
                twin = next((q for q in partners if q != r), None)
                for p in f_paths:
                    f = reports[p].setdefault("folder", {})
                    if twin is not None:
                        f.update(relation="same_weights", peer=twin, differs=[], merge=[])
                    elif others:
                        s_, d_, m_ = _component_diff([r, others[0]], reports, fps)
                        f.update(relation="same_denoiser", peer=others[0], differs=d_ + m_, merge=[])
    return out


#: bump when _groups changes what it returns or how it rewrites the folder relations
GROUPS_VERSION = 1


def _cached_groups(reports: dict, sizes: dict, fps, store, root: str) -> list[dict]:
    """_groups(), served from the store when its inputs are unchanged: the same files (path,
    content, size, architecture, folder relation), so a rescan of an unchanged folder compares
    nothing. Not cached when a file has no content id (nothing in the store to tie it to)."""
    import hashlib
    keys = getattr(fps, "keys_by_path", {})
    if store is None or any(not (reports[p].get("sha256") or keys.get(p)) for p in reports
                            if not reports[p].get("error")):
        return _groups(reports, sizes, fps)
    inputs = [[p, reports[p].get("sha256") or keys.get(p), sizes.get(p, 0), reports[p].get("architecture"),
               reports[p].get("folder")] for p in sorted(reports) if not reports[p].get("error")]
    token = "peers:groups:" + hashlib.sha256(json.dumps([GROUPS_VERSION, inputs], sort_keys=True,
                                                        default=str).encode()).hexdigest()[:32]
    slot = "folder:" + hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    hit = store.get_report(slot, token)
    if hit and isinstance(hit.get("groups"), list) and isinstance(hit.get("folder"), dict) \
            and set(hit["folder"]) <= set(reports):
        for p, f in hit["folder"].items():
            reports[p]["folder"] = f
        return hit["groups"]
    groups = _groups(reports, sizes, fps)
    store.put_report(slot, token, {"groups": groups, "folder": {p: r["folder"] for p, r in reports.items()
                                                                 if r.get("folder") is not None}})
    return groups


def reclaimable_total(groups: list[dict]) -> int:
    """Bytes freed by keeping one file per group, each file counted once (an ``identical`` group
    inside a ``same_weights`` group is already counted there)."""
    covered: set[str] = set()
    total = 0
    for g in sorted(groups, key=lambda g: g["relation"] != "same_weights"):
        if not g.get("reclaimable_bytes") or set(g["paths"]) <= covered:
            continue
        covered |= set(g["paths"])
        total += g["reclaimable_bytes"]
    return total


def folder_text(f: dict, root: str | None = None) -> str:
    """The "in this folder" relation of one file, for people: names a merge by its recipe."""
    rel = lambda p: os.path.relpath(p, root) if root else p  # noqa: E731
    if not f:
        return ""
    if f.get("relation") == "merge" and f.get("merge"):
        return "merge: " + " + ".join(f"{rel(m['ref'])} {float(m['weight']) * 100:.0f}%" for m in f["merge"])
    if not f.get("peer"):
        return ""
    text = f"{f['relation']} {rel(f['peer'])}"
    if f.get("differs"):
        text += f" ({ident.components_phrase(f['differs'])} " + ("differs)" if len(f["differs"]) == 1 else "differ)")
    return text


def _write_tags(reports: dict, dry_run: bool) -> list[dict]:
    results = []
    for p, rep in reports.items():
        if rep.get("error"):
            continue
        new = tags.tags_for(rep)
        try:
            res = tags.plan(p, new) if dry_run else tags.write(p, new)
            res["model"] = p
            res["written"] = not dry_run and bool(res["changes"])
        except FpError as e:
            res = {"model": p, "path": str(tags.sidecar_path(p)), "error": str(e), "written": False}
        results.append(res)
    return results


def public(result: dict) -> dict:
    """The JSON of ``scan --json`` (docs/json-format.md): drops internal fields."""
    return {k: v for k, v in result.items() if not k.startswith("_")}
