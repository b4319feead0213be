"""Scan a model folder: identify every file, against the references and against each other.

Finds duplicates (same bytes), the same weights in another precision or format, and
fine-tunes and merges of other files in the same folder; optionally writes the tag
sidecars and an HTML report with the folder's family tree. The store makes a second
run nearly instant (unchanged files are neither hashed nor read).
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import identify as ident
from . import layout, tags
from .errors import FpError
from .refs import RefDB

log = logging.getLogger(__name__)

MODEL_EXTS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
#: peers compared in full with each file (the nearest by a quick cosine)
PEER_CANDIDATES = 8


def find_models(root: str | os.PathLike) -> tuple[list[str], list[dict]]:
    """Model files under ``root``, recursively, each real directory visited once (symlink
    loops end there). Unreadable directories are reported, not fatal."""
    root = os.fspath(root)
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
        dirnames.sort()
        for f in sorted(filenames):
            if f.lower().endswith(MODEL_EXTS):
                files.append(os.path.join(dirpath, f))
    return files, errors


#: files per probe batch when choosing how many files to hash at once
PROBE_FILES = 4
#: two concurrent hashes must beat one by this factor to be kept
PARALLEL_GAIN = 1.15


def _run(files: list[str], one, sizes: dict, reports: dict, workers: int | None, root: str) -> int:
    """Identify every file; returns the number of files hashed at once in the end.

    Unless ``workers`` is given: on a spinning disk one at a time; otherwise the first
    files are hashed one at a time, the next ones two at a time, and two are kept only if
    they were faster (the disk gains from it), since /sys often says "rotational" for
    virtual disks and says nothing about network shares."""
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
        hashed = sum(sizes.get(p, 0) for p in paths if "cached" not in (reports[p].get("stats") or {}))
        return hashed / max(perf_counter() - t, 1e-9)

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
    log.info("hashing one file at a time: %.0f MB/s, two: %.0f MB/s; using %d", r1 / 1e6, r2 / 1e6, n)
    batch(files[3 * PROBE_FILES:], n)
    return n


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
                dry_run: bool = False, workers: int | None = None) -> dict:
    """Identify every model under ``root``. Returns {"reports", "groups", "tags", "errors"}.

    ``progress(done_files, total_files, path)``; ``byte_progress(done_bytes, total_bytes)``.
    With ``write_tags`` the sidecars are written (``dry_run``: only planned)."""
    from .store import Store
    db = db or RefDB(refs_dir)
    own_store = store is None and use_cache
    store = store if store is not None else (Store(cache_dir) if use_cache else None)
    try:
        files, errors = find_models(root)
        sizes = {}
        for f in files:
            try:
                sizes[f] = os.stat(f).st_size if not os.path.isdir(f) else sum(
                    os.path.getsize(os.path.join(dp, n)) for dp, _, ns in os.walk(f) for n in ns)
            except OSError:
                sizes[f] = 0
        total_bytes, done = sum(sizes.values()), {"bytes": 0, "files": 0}
        reports: dict[str, dict] = {}

        def one(path: str) -> dict:
            base = done["bytes"]

            def cb(n, total):
                if byte_progress:
                    byte_progress(base + n, total_bytes)
            try:
                rep = ident.identify(path, db, store=store, progress=cb)
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
        fps = _fingerprints(reports, store)
        _peer_relations(reports, fps, store)
        groups = _groups(reports, sizes)
        tag_results = []
        if write_tags:
            tag_results = _write_tags(reports, dry_run)
        return {"root": os.fspath(root), "reports": [reports[f] for f in files], "groups": groups,
                "tags": tag_results, "errors": errors, "workers": chosen, "_fingerprints": fps}
    finally:
        if own_store and store is not None:
            store.close()


def _fingerprints(reports: dict, store) -> dict:
    """path -> Fingerprint for every file that was identified."""
    out = {}
    for path, rep in reports.items():
        if rep.get("error"):
            continue
        got = store.get_fingerprint(rep["sha256"]) if store is not None and rep.get("sha256") else None
        if got:
            out[path] = got[0]
            continue
        try:
            out[path] = ident.fingerprint_path(path)[0]
        except FpError:
            continue
    return out


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


def _peer_relations(reports: dict, fps: dict, store=None) -> None:
    """Add a ``folder`` entry to each report: its relation to the other files.

    Cached in the store per file content and set of peer contents, so a rescan of an
    unchanged folder does no matching."""
    import hashlib

    from . import match
    for (family, comp), paths in family_groups(reports, fps).items():
        shas = {p: reports[p].get("sha256") for p in paths}
        peers_key = "peers:" + hashlib.sha256("|".join(["v2", *sorted({s or p for p, s in shas.items()})]).encode()).hexdigest()[:32]
        # one representative per distinct content
        uniq: dict[str, str] = {}
        for p in paths:
            uniq.setdefault(shas[p] or p, p)
        reps_ = list(uniq.values())
        X = _quick_vectors(reps_, fps, comp) if len(reps_) > 1 else None
        path_of_sha = {s: p for p, s in shas.items() if s}

        def relation_of(u: str) -> dict:
            """The folder relation of one distinct content (``u`` represents it)."""
            hit = store.get_report(shas[u], peers_key) if store is not None and shas[u] else None
            if hit and (hit.get("peer_sha") is None or hit["peer_sha"] in path_of_sha):
                return {"relation": hit["relation"], "confidence": hit["confidence"],
                        "peer": path_of_sha.get(hit.get("peer_sha")),
                        "merge": [{"ref": path_of_sha[m["sha"]], "weight": m["weight"]} for m in hit["merge"]
                                  if m["sha"] in path_of_sha]}
            others = [q for q in reps_ if q != u]
            if not others:
                return {"relation": "unknown", "peer": None, "confidence": 0.0, "merge": []}
            if X is not None and len(others) > PEER_CANDIDATES:
                i = reps_.index(u)
                norms = np.linalg.norm(X, axis=1) * np.linalg.norm(X[i]) + 1e-30
                cos = (X @ X[i]) / norms
                others = [reps_[j] for j in np.argsort(-cos) if reps_[j] != u][:PEER_CANDIDATES]
            v = match.analyse(fps[u], comp, [_Peer(q, fps[q]) for q in others], tree=None)
            # files in a folder form no tree: the nearest related file may be a parent, a child
            # or a sibling, so it is only called "related"
            entry = {"relation": "related" if v.relation == "derivative" else v.relation, "peer": v.ref,
                     "confidence": v.confidence, "merge": [{"ref": n, "weight": w} for n, w in v.merge]}
            if store is not None and shas[u] and all(shas.get(m["ref"]) for m in entry["merge"]):
                store.put_report(shas[u], peers_key, {
                    "relation": entry["relation"], "confidence": entry["confidence"],
                    "peer_sha": shas.get(entry["peer"]) if entry["peer"] else None,
                    "merge": [{"sha": shas[m["ref"]], "weight": m["weight"]} for m in entry["merge"]]})
            return entry

        # numpy releases the GIL in the large products, so two threads use both cores
        with ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as ex:
            found = dict(zip(reps_, ex.map(relation_of, reps_)))
        for p in paths:
            dup = [q for q in paths if q != p and shas[q] and shas[q] == shas[p]]
            reports[p]["folder"] = {"duplicates": dup, **found[uniq[shas[p] or p]]}


def _groups(reports: dict, sizes: dict) -> list[dict]:
    out = []
    by_sha: dict[str, list[str]] = {}
    for p, rep in reports.items():
        if rep.get("sha256") and not rep.get("error"):
            by_sha.setdefault(rep["sha256"], []).append(p)
    for sha, paths in by_sha.items():
        if len(paths) > 1:
            out.append({"relation": "identical", "paths": sorted(paths),
                        "reclaimable_bytes": sum(sizes.get(p, 0) for p in paths) - max(sizes.get(p, 0) for p in paths)})
    # same weights in another precision/format: union of same_weights peer links
    parent: dict[str, str] = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x
    for p, rep in reports.items():
        f = rep.get("folder") or {}
        if f.get("relation") == "same_weights" and f.get("peer"):
            a, b = find(p), find(f["peer"])
            if a != b:
                parent[a] = b
    comps: dict[str, list[str]] = {}
    for p in list(parent) + [v for v in parent.values()]:
        comps.setdefault(find(p), [])
    for p in reports:
        r = find(p)
        if r in comps:
            comps[r].append(p)
    for members in comps.values():
        members = sorted(set(members))
        # include exact duplicates of members
        extra = {q for m in members for q in (reports[m].get("folder") or {}).get("duplicates", [])}
        members = sorted(set(members) | extra)
        if len({reports[m].get("sha256") for m in members}) > 1:
            out.append({"relation": "same_weights", "paths": members,
                        "reclaimable_bytes": sum(sizes.get(m, 0) for m in members) - max(sizes.get(m, 0) for m in members)})
    return out


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
    """The JSON of CONTRACT.md (``scan --json``): drops internal fields."""
    return {k: v for k, v in result.items() if not k.startswith("_")}
