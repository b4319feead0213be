"""A local file, folder or weights in memory to a report: when the whole file is hashed (the
HASH_* policies), what the store answers without reading weights, and the reports of sources
with no file hash. Also registering a file or URL as a reference, and the report of a failure.

``hash_file`` and ``fingerprint_path`` are looked up on the package (``fpcore.identify``) at call
time: replacing them there (tests do, to count or forbid hashing and reading) replaces the ones
used here."""
from __future__ import annotations

import os
import time

import numpy as np

from .. import arch, identify as _package
from ..refs import known
from . import provenance
from ..errors import BadFileError, FpError
from ..fingerprint import Fingerprint
from ..sources import FileIdentity, check_regular_file, is_url, open_source
from .read import fingerprint_open, remote_identity
from .url import identify_url
from .verdict import file_report, identify_fingerprint, report_outdated


#: when identify/scan compute a whole-file SHA-256 (docs/json-format.md): "auto" only where it
#: decides something (a size a known release has, a copy of a reference to confirm) or the host
#: already knows it; "always" (``--hash``); "never" (``--no-hash``)
HASH_AUTO, HASH_ALWAYS, HASH_NEVER = "auto", "always", "never"
HASH_POLICIES = (HASH_AUTO, HASH_ALWAYS, HASH_NEVER)
#: the report's ``hash`` field -> the store's record of where a hash came from
_SOURCE_OF = {"computed": "hash", "host": "host", "published": "published"}


def file_identity(path: str) -> FileIdentity:
    """Identity of a regular file (resolved path, size, mtime, inode, change time, device)."""
    from ..store import stat_identity
    return stat_identity(path, check_regular_file(path))


def _same_identity(a: FileIdentity, h) -> bool:
    from ..store import same_file
    return same_file(a, h)


def _hash_unchanged(p: str, ident, progress=None):
    """hash_file, refusing a file that is no longer the one ``ident`` describes."""
    h = _package.hash_file(p, progress=progress)
    if not _same_identity(ident, h):
        raise BadFileError("file changed since it was first read; try again when it is complete", p)
    return h


def hashes_for(path: str | os.PathLike, store=None, progress=None) -> dict:
    """SHA-256 / AutoV2 / AutoV3 of a file, from the store when the file is unchanged."""
    p = os.fspath(path)
    ident = file_identity(p)
    rec = store.file_record(ident) if store is not None else None
    if rec and rec.sha256 and (rec.autov3 or not p.lower().endswith((".safetensors", ".sft"))):
        return {"sha256": rec.sha256, "autov2": rec.sha256[:10], "autov3": rec.autov3, "size": ident.size,
                "cached": True, "hash": rec.hash_origin}
    h = _hash_unchanged(p, ident, progress)
    if store is not None:
        store.put_file(ident, h.sha256, h.autov3, "hash")
    return {**h.to_json(), "cached": False, "hash": "computed"}


def _may_be_copy_of_reference(fp: Fingerprint, db) -> bool:
    """Whether a reference with a known SHA-256 stores exactly the sampled bytes and tensor sizes
    of ``fp``: only a whole-file hash can then tell whether the files are identical."""
    n = fp.info.get("tensor_bytes")
    for r in db.refs.values():
        rf = getattr(r, "fp", None)
        if (r.sha256 and rf is not None and rf.info.get("tensor_bytes") == n and rf.keys == fp.keys
                and rf.dtypes == fp.dtypes and np.array_equal(rf.h_raw, fp.h_raw)):
            return True
    return False


def identify(path: str | os.PathLike, db, hashes: bool = True, progress=None, sha256: str | None = None,
             store=None, hash_policy: str = HASH_AUTO, sha256_origin: str = "host", remote=None,
             fingerprints: dict | None = None) -> dict:
    """Full report for one file (`identify --json`, docs/json-format.md). Raises FpError on bad input.

    The claims of the file and its sidecars are checked on every call (fpcore.claims), outside
    the cached report: a sidecar changes without the model file changing. See ``_identify``."""
    from .. import claims
    rep = _identify(path, db, hashes=hashes, progress=progress, sha256=sha256, store=store,
                    hash_policy=hash_policy, sha256_origin=sha256_origin, remote=remote, fingerprints=fingerprints)
    return claims.annotate(rep, rep.get("path") or os.fspath(path), db, store)


def _identify(path: str | os.PathLike, db, hashes: bool = True, progress=None, sha256: str | None = None,
              store=None, hash_policy: str = HASH_AUTO, sha256_origin: str = "host", remote=None,
              fingerprints: dict | None = None) -> dict:
    """The report of ``identify`` without its claims (the part the store caches).

    Answers from the fingerprint. The whole file is hashed (``hash_policy="auto"``) only when
    its size is a known release's size, or when its fingerprint holds exactly the sampled bytes
    of a reference whose hash is known; ``"always"`` hashes it, ``"never"`` (or ``hashes=False``)
    does not. The report's ``hash`` says where ``sha256`` came from, or ``"not computed"``.
    ``sha256``: a hash the caller already knows (``sha256_origin``: "host" or "published").
    ``store``: a fpcore.store.Store; a file seen before (same path, size, mtime, inode, change
    time) is answered from it without hashing or reading weights. ``progress(done, total)``:
    bytes, called when reading starts and as a hash proceeds. ``fingerprints``: a dict that
    receives path -> Fingerprint when the fingerprint was read or loaded (a folder scan compares
    the files with it without loading them again)."""
    from ..store import hostcache
    p = os.fspath(path)
    if is_url(p):   # read by range requests; the hash only where the hub publishes it
        return identify_url(p, db, store=store, remote=remote)
    t0 = time.perf_counter()
    if hash_policy not in HASH_POLICIES:
        raise ValueError(f"hash_policy must be one of {HASH_POLICIES}, not {hash_policy!r}")
    policy = hash_policy if hashes else HASH_NEVER
    if os.path.isdir(p):  # a diffusers folder: several files, no single hash to key a cache by
        with open_source(p) as src:
            return identify_source(src, db)
    ident = file_identity(p)
    rec = store.file_record(ident) if store is not None else None
    sha, autov3, origin = None, None, "not computed"
    if sha256:
        sha, origin = sha256.lower(), sha256_origin if sha256_origin in _SOURCE_OF else "host"
    elif rec is not None and rec.sha256:
        sha, autov3, origin = rec.sha256, rec.autov3, rec.hash_origin
    elif policy != HASH_NEVER:
        sha = hostcache.sha256_for(p)
        origin = "host" if sha else origin
    if not sha and (policy == HASH_ALWAYS or (policy == HASH_AUTO and known.size_matches(ident.size))):
        h = _hash_unchanged(p, ident, progress)
        sha, autov3, origin = h.sha256, h.autov3, "computed"
    if store is not None and (rec is None or (sha and rec.sha256 != sha)):
        rec = store.put_file(ident, sha, autov3, _SOURCE_OF.get(origin, "hash"))
    key = rec.key if rec is not None else None
    token = db.token() if store is not None else None
    if store is not None and key:
        rep = store.get_report(key, token)
        if rep is not None and (sha or policy != HASH_ALWAYS) and not arch.outdated(rep.get("architecture")) \
                and not report_outdated(rep):
            rep.update(path=p, hash=origin if sha else "not computed")
            rep.setdefault("stats", {})["cached"] = "report"
            rep["stats"]["seconds"] = round(time.perf_counter() - t0, 4)
            return rep
    cached = store.get_fingerprint(key) if store is not None and key else None
    if cached and not arch.outdated(cached[1]):     # else read again: it predates unknown layouts
        fp, arch_json, meta, stats = cached
        a = arch.ArchResult.from_json(arch_json)
        stats = dict(stats, cached="fingerprint")
    else:
        if progress:
            progress(0, ident.size)
        fp, a, meta, stats = _package.fingerprint_path(p)
        if not _same_identity(ident, file_identity(p)):
            if store is not None:
                store.forget_file(ident)
            raise BadFileError("file changed while it was being fingerprinted; try again when it is complete", p)
        if store is not None and key:
            store.put_fingerprint(key, fp, a.to_json(), meta, stats)
    if fingerprints is not None:
        fingerprints[p] = fp
    if not sha and policy == HASH_AUTO and _may_be_copy_of_reference(fp, db):
        h = _hash_unchanged(p, ident, progress)   # a copy of a reference? only the bytes can say
        sha, autov3, origin = h.sha256, h.autov3, "computed"
        if store is not None:
            rec = store.put_file(ident, sha, autov3, "hash")
            key = rec.key
    rep, registered = file_report(p, sha, autov3, origin, fp, a, meta, stats, db, t0)
    if registered:
        token = db.token() if store is not None else None
    if store is not None and key:
        store.put_report(key, token, rep)
    return rep


def identify_source(src, db) -> dict:
    """Report for a source with no file hash (a diffusers folder, weights in memory):
    everything but ``identical``, which needs the bytes of one file."""
    t0 = time.perf_counter()
    fp, a, meta, stats = fingerprint_open(src)
    rep = {"path": src.path, "sha256": None, "autov2": None, "autov3": None, "hash": "not computed",
           "format": stats["format"], "architecture": a.to_json()}
    rep.update(identify_fingerprint(fp, a, db, None))
    rep["metadata"] = provenance.extract(meta)
    rep["stats"] = {**stats, "seconds": round(time.perf_counter() - t0, 4), "fingerprint_bytes": len(fp.raw)}
    rep["error"] = None
    return rep


def error_report(path: str, err: FpError | Exception) -> dict:
    return {"path": path, "sha256": None, "autov2": None, "hash": "not computed", "format": None,
            "architecture": None,
            "verdict": None, "merge": [], "components": {}, "candidates": [], "metadata": {},
            "error": str(err)}


def add_reference(db, path: str | os.PathLike, name: str, parent: str | None = None, note: str | None = None,
                  hashes: bool = True, progress=None, origin: str = "user", remote=None):
    """Fingerprint (and hash) ``path`` and register it in ``db`` as ``name``. A URL is read by
    range requests; its SHA-256 is the published one, if any (never downloaded)."""
    if is_url(os.fspath(path)):
        with open_source(os.fspath(path), remote) as src:
            fp, a, _, _ = fingerprint_open(src)
            rid, _ = remote_identity(src)
            shown = src.path
        return db.add(fp, name, parent=parent, note=note, family=a.family, sha256=rid.sha256, source=shown,
                      origin=origin)
    fp, a, _, _ = _package.fingerprint_path(path)
    sha = _package.hash_file(path, progress=progress).sha256 if hashes else None
    return db.add(fp, name, parent=parent, note=note, family=a.family, sha256=sha, source=os.fspath(path),
                  origin=origin)


def identify_tensors(tensors, db, name: str = "<memory>", metadata=None) -> dict:
    """Report for tensors already in memory (a host's loaded model, keys in the checkpoint
    layout: see ``keymaps.remap``), against ``db`` (a RefDB). No SHA-256 exists for weights in
    memory, so ``identical`` is never claimed."""
    from ..sources.memory import MemorySource

    from .. import claims
    with MemorySource(tensors, name, metadata) as src:
        rep = identify_source(src, db)
        rep["stats"].update(tensors=len(src.tensors), skipped_tensors=len(src.skipped), tensor_bytes=src.size)
    return claims.annotate(rep, None, db)
