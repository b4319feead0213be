"""From a path to a report: inspect (header only), fingerprint, identify."""
from __future__ import annotations

import logging
import math
import os
import time

from . import arch, known, layout, provenance
from .facts import FAMILIES, KIND_NAMES, family_name  # noqa: F401
from .errors import FpError
from .fingerprint import Fingerprint, canonical_tensors, fingerprint_source
from .hashing import hash_file
from .errors import BadFileError
from .reader import FileIdentity, check_regular_file, open_model

log = logging.getLogger(__name__)

# display names, kind names: one table in fpcore.facts (kept importable from here)
FAMILY_NAMES = {f.id: f.name for f in FAMILIES.values()}


def _header_facts(src, ct: dict | None = None) -> tuple[dict, dict, arch.ArchResult]:
    ct = ct if ct is not None else canonical_tensors(src.tensors, src.path)
    shapes = {k: tuple(t.shape) for k, t in ct.items()}
    dts = {k: t.dtype for k, t in ct.items()}
    return shapes, dts, arch.detect(shapes, dts, src.metadata)


def inspect(path: str | os.PathLike, why: bool = False) -> dict:
    """Header-only report: architecture, components, dtypes, metadata."""
    p = os.fspath(path)
    with open_model(p) as src:
        shapes, dts, a = _header_facts(src)
        comps: dict[str, dict] = {}
        for k, d in dts.items():
            c = layout.split(k)[0]
            e = comps.setdefault(c, {"tensors": 0, "dtypes": {}})
            e["tensors"] += 1
            e["dtypes"][d] = e["dtypes"].get(d, 0) + 1
        rep = {"path": p, "format": src.format, "size": src.size, "architecture": a.to_json(),
               "tensors": len(src.tensors), "components_detail": comps,
               "metadata": provenance.extract(src.metadata), "error": None}
        if why:
            rep["rules"] = {"matched": a.rule, "rejected": [{"rule": r, "why": w} for r, w in a.rejected]}
        return rep


def fingerprint_open(src) -> tuple[Fingerprint, arch.ArchResult, dict, dict]:
    """(fingerprint, architecture, raw metadata, read stats) of an open source (file, folder, memory)."""
    ct = canonical_tensors(src.tensors, src.path)
    _, _, a = _header_facts(src, ct)
    t0 = time.perf_counter()
    fp = fingerprint_source(src, ct)
    stats = {"fingerprint_seconds": round(time.perf_counter() - t0, 4),
             "bytes_read": getattr(src, "bytes_read", None), "file_size": src.size, "format": src.format}
    fp.info["family"] = a.family
    return fp, a, dict(src.metadata), stats


def fingerprint_path(path: str | os.PathLike) -> tuple[Fingerprint, arch.ArchResult, dict, dict]:
    """(fingerprint, architecture, raw metadata, read stats) of a model file or folder."""
    with open_model(os.fspath(path)) as src:
        return fingerprint_open(src)


def identify_source(src, db) -> dict:
    """Report for a source with no file hash (a diffusers folder, weights in memory):
    everything but ``identical``, which needs the bytes of one file."""
    t0 = time.perf_counter()
    fp, a, meta, stats = fingerprint_open(src)
    rep = {"path": src.path, "sha256": None, "autov2": None, "autov3": None, "format": stats["format"],
           "architecture": a.to_json()}
    rep.update(identify_fingerprint(fp, a, db, None))
    rep["metadata"] = provenance.extract(meta)
    rep["stats"] = {**stats, "seconds": round(time.perf_counter() - t0, 4), "fingerprint_bytes": len(fp.raw)}
    rep["error"] = None
    return rep


def _denoiser(components: list[str]) -> str | None:
    for c in components:
        if c in layout.DENOISERS:
            return c
    return components[0] if components else None


def _same_layout(fp: Fingerprint, ref: Fingerprint, comp: str) -> bool:
    mine = {k: s for k, s in zip(fp.keys, fp.shapes) if k.startswith(comp + ":")}
    theirs = {k: s for k, s in zip(ref.keys, ref.shapes) if k.startswith(comp + ":")}
    if not mine:
        return False
    same = sum(1 for k, s in mine.items() if theirs.get(k) == s)
    return same >= 0.5 * len(mine)   # same_weights still needs 95 % coverage (match.SAME_MIN_COVERAGE)


def _json_safe(obj):
    """Non-finite floats (a distance of inf when nothing is comparable: NaN weights) as null,
    so reports are strict JSON (json.dumps(..., allow_nan=False))."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def identify_fingerprint(fp: Fingerprint, a: arch.ArchResult, db, sha256: str | None = None) -> dict:
    """Verdict, components and candidates for a fingerprint against ``db`` (a RefDB)."""
    return _json_safe(_identify_fingerprint(fp, a, db, sha256))


def _identify_fingerprint(fp: Fingerprint, a: arch.ArchResult, db, sha256: str | None = None) -> dict:
    from . import match  # numerical part, loaded only when there is something to match

    comps = a.components
    main = _denoiser(comps)
    refs = list(db.refs.values())
    result: dict = {"verdict": None, "merge": [], "components": {}, "candidates": []}
    # identical: same bytes as a reference
    same_file = [r for r in refs if sha256 and r.sha256 == sha256]
    for comp in comps:
        if comp in layout.DENOISERS and a.family != "unknown":
            pool = [r for r in refs if r.family == a.family]
        else:  # unknown family, or a component shared across families: same keys and shapes
            pool = [r for r in refs if _same_layout(fp, r.fp, comp)]
        v = match.analyse(fp, comp, pool, tree=db, allow_merge=comp in layout.DENOISERS or comp == main)
        entry = {"relation": v.relation, "ref": v.ref, "confidence": v.confidence, "reason": v.reason}
        if same_file:
            entry.update(relation="identical", ref=same_file[0].name, confidence=1.0, reason="same SHA-256")
        result["components"][comp] = entry
        if comp == main:
            result["candidates"] = [c.to_json() for c in v.candidates[:8]]
            result["merge"] = [{"ref": n, "weight": w} for n, w in v.merge]
            if v.merge_blocks:
                result["merge_blocks"] = {g: [{"ref": n, "weight": w} for n, w in ws] for g, ws in v.merge_blocks.items()}
            main_v, n_family = entry, len(pool)
    if main is None:
        kind = a.kind or "file"
        what = KIND_NAMES.get(kind, kind)
        fam = f" for {family_name(a.family)}" if a.family not in (None, "unknown") else ""
        result["verdict"] = {"relation": "unknown", "base": None, "lineage": [], "confidence": 0.0,
                             "summary": f"A {what}{fam}; it has no denoiser weights to compare with references."}
        return result
    rel, base = main_v["relation"], main_v["ref"]
    lineage = db.lineage(base) if base else []
    result["verdict"] = {"relation": rel, "base": base, "lineage": lineage, "confidence": main_v["confidence"],
                         "summary": _summary(rel, base, lineage, result, a, n_family, main_v["reason"])}
    return result


def _summary(rel, base, lineage, result, a, n_family, reason) -> str:
    fam = family_name(a.family)
    if rel == "identical":
        return f"Identical to {base} (same SHA-256)."
    if rel == "same_weights":
        return f"Same weights as {base}, stored as {a.dtype or 'another format'}."
    if rel == "derivative":
        chain = " → ".join(lineage)
        tail = f" (lineage: {chain})" if len(lineage) > 1 else ""
        return f"A fine-tune or other derivative of {base}{tail}."
    if rel == "merge":
        parts = ", ".join(f"{m['ref']} ({m['weight'] * 100:.0f}%)" for m in result["merge"])
        block = " with different weights per UNet block" if result.get("merge_blocks") else ""
        return f"A merge of {parts}{block}."
    if n_family == 0:
        return (f"A {fam} model; no {fam} reference is registered to compare it with "
                f"(add one with `fpcore refs add`).")
    if "far from" in reason:
        return f"A {fam} model related to a registered reference but not placeable: {reason}."
    return f"A {fam} model not related to any registered {fam} reference (unknown base)."


def file_identity(path: str) -> FileIdentity:
    st = check_regular_file(path)
    return FileIdentity(os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)


def _same_identity(a: FileIdentity, h) -> bool:
    return (a.size, a.mtime_ns, a.inode) == (h.size, h.mtime_ns, h.inode)


def hashes_for(path: str | os.PathLike, store=None, progress=None) -> dict:
    """SHA-256 / AutoV2 / AutoV3 of a file, from the store when the file is unchanged."""
    p = os.fspath(path)
    ident = file_identity(p)
    hit = store.lookup_file(ident) if store is not None else None
    if hit and (hit[1] or not p.lower().endswith((".safetensors", ".sft"))):
        sha, autov3 = hit
        return {"sha256": sha, "autov2": sha[:10], "autov3": autov3, "size": ident.size, "cached": True}
    h = hash_file(p, progress=progress)
    if store is not None and _same_identity(ident, h):
        store.put_file(ident, h.sha256, h.autov3, "hash")
    return {**h.to_json(), "cached": False}


def identify(path: str | os.PathLike, db, hashes: bool = True, progress=None, sha256: str | None = None,
             store=None) -> dict:
    """Full report for one file (CONTRACT.md `identify --json`). Raises FpError on bad input.

    ``sha256``: a hash the caller already knows for this file (skips hashing).
    ``store``: a fpcore.store.Store; a file seen before (same path, size, mtime, inode)
    is answered from it without hashing or reading weights."""
    p = os.fspath(path)
    t0 = time.perf_counter()
    if os.path.isdir(p):  # a diffusers folder: several files, no single hash to key a cache by
        with open_model(p) as src:
            return identify_source(src, db)
    ident = file_identity(p)
    sha, autov3, source = (sha256.lower(), None, "host") if sha256 else (None, None, None)
    if store is not None and not sha:
        hit = store.lookup_file(ident)
        if hit:
            sha, autov3 = hit
            source = "cache"
    if not sha and hashes:  # hash first: a renamed or copied file then finds its fingerprint
        h = hash_file(p, progress=progress)
        if not _same_identity(ident, h):
            raise BadFileError("file changed while it was being identified; try again when it is complete", p)
        sha, autov3, source = h.sha256, h.autov3, "hash"
    token = db.token() if store is not None else None
    if store is not None and sha:
        if source in ("hash", "host"):
            store.put_file(ident, sha, autov3, source)
        rep = store.get_report(sha, token)
        if rep is not None:
            rep["path"] = p
            rep.setdefault("stats", {})["cached"] = "report"
            rep["stats"]["seconds"] = round(time.perf_counter() - t0, 4)
            return rep
    cached = store.get_fingerprint(sha) if store is not None and sha else None
    if cached:
        fp, arch_json, meta, stats = cached
        a = arch.ArchResult(**{k: arch_json.get(k) for k in ("family", "variant", "rule", "components", "dtype",
                                                             "prediction", "kind")}, notes=arch_json.get("notes") or [])
        stats = dict(stats, cached="fingerprint")
    else:
        fp, a, meta, stats = fingerprint_path(p)
        if sha and file_identity(p) != ident:
            raise BadFileError("file changed while it was being identified; try again when it is complete", p)
        if store is not None and sha:
            store.put_fingerprint(sha, fp, a.to_json(), meta, stats)
    entry = known.lookup(sha)
    if entry is not None:
        known.register(db, entry, fp, a.family, sha)
        token = db.token() if store is not None else None
    rep = {"path": p, "sha256": sha, "autov2": sha[:10] if sha else None, "autov3": autov3,
           "format": stats["format"], "architecture": a.to_json()}
    rep.update(identify_fingerprint(fp, a, db, sha))
    if entry is not None:
        rep["known_release"] = {k: entry.get(k) for k in ("family", "variant", "filename", "hf", "confidence")}
        rep["verdict"]["summary"] = f"Identical to {known.describe(entry)} (published SHA-256)."
        rep["verdict"].update(relation="identical", confidence=1.0)
    rep["metadata"] = provenance.extract(meta)
    rep["stats"] = {**stats, "seconds": round(time.perf_counter() - t0, 4), "fingerprint_bytes": len(fp.raw)}
    rep["error"] = None
    if store is not None and sha:
        store.put_report(sha, token, rep)
    return rep


def error_report(path: str, err: FpError | Exception) -> dict:
    return {"path": path, "sha256": None, "autov2": None, "format": None, "architecture": None,
            "verdict": None, "merge": [], "components": {}, "candidates": [], "metadata": {},
            "error": str(err)}


def add_reference(db, path: str | os.PathLike, name: str, parent: str | None = None, note: str | None = None,
                  hashes: bool = True, progress=None, origin: str = "user"):
    """Fingerprint (and hash) ``path`` and register it in ``db`` as ``name``."""
    fp, a, _, _ = fingerprint_path(path)
    sha = hash_file(path, progress=progress).sha256 if hashes else None
    return db.add(fp, name, parent=parent, note=note, family=a.family, sha256=sha, source=os.fspath(path),
                  origin=origin)
