"""Scan a model folder: identify every file, against the references and against each other.

Finds duplicates (same bytes), the same weights in another precision or format, and
fine-tunes and merges of other files in the same folder; optionally writes the tag
sidecars and an HTML report with the folder's family tree. The store makes a second
run nearly instant (unchanged files are neither hashed nor read).
"""
from __future__ import annotations

import logging
import os

from .. import identify as ident
from . import tags
from ..errors import FpError
from ..refs.library import RefDB
from .find import _disk_workers, _run, find_models
from .fingerprints import _confirm_same_bytes, _fingerprints
from .groups import _cached_groups, group_label, reclaimable_total
from .families import family_groups, family_of, family_title, in_family
from .peers import PEER_CANDIDATES, PEER_SHORTLIST, _peer_relations, UnitRows, _quick_vectors, prepare

# the interface, plus two helpers used from outside: _quick_vectors (report_html), _disk_workers (bench/scan_speed)
__all__ = ["PEER_CANDIDATES", "PEER_SHORTLIST", "family_groups", "family_of", "family_title", "find_models",
           "folder_text", "group_label", "in_family",
           "public", "reclaimable_total", "scan_folder", "_disk_workers", "_quick_vectors"]
log = logging.getLogger("fpcore.scan")


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
    from ..store import Store
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
        prepared: dict = {}      # path -> what comparing needs of those (peers.prepare)
        unit_rows = UnitRows()   # where their unit samples are kept

        def one(path: str) -> dict:
            base = done["bytes"]

            def cb(n, total):
                if byte_progress:
                    byte_progress(base + n, total_bytes)
            try:
                rep = ident.identify(path, db, store=store, progress=cb, hash_policy=hash_policy, fingerprints=read)
                if path in read:     # what comparing needs of the file, while it is at hand
                    prepared[path] = prepare(read[path], rep, unit_rows)
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
        _peer_relations(reports, fps, store, phase, keys=fps.keys_by_path, candidates=peer_candidates,
                        prepared=prepared, unit_rows=unit_rows)
        if phase:
            phase("grouping", 0, 1)
        groups = _cached_groups(reports, sizes, fps, store, os.fspath(root))
        _claims_and_fits(reports, db, store, hash_policy)
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

def _claims_and_fits(reports: dict, db, store, hash_policy: str) -> None:
    """Claims checked with the folder's files known, and each LoRA's fit list (fpcore.claims). A
    checkpoint a LoRA names by A1111's legacy hash is confirmed by its whole-file hash (unless never)."""
    from .. import claims

    def hasher(path: str) -> str | None:
        if hash_policy == "never":
            return None
        try:
            return ident.hashes_for(path, store=store)["sha256"]
        except (FpError, OSError) as e:
            log.warning("%s: not hashed: %s", path, e)
            return None
    claims.annotate_folder(reports, db, store, hasher)


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
