"""The functions hosts call (ComfyUI nodes, the A1111/Forge tab, the standalone UI).

Each returns plain JSON-able dicts as in CONTRACT.md and never raises for a bad model
file: the report carries an ``error`` field instead (hosts show it as is). Reference and
cache locations come from the arguments, else ``FPCORE_REFS`` / ``FPCORE_CACHE``.
"""
from __future__ import annotations

import logging
import os

from . import identify as _ident
from .errors import FpError
from .refs import RefDB

log = logging.getLogger(__name__)


def _db(refs_dir=None) -> RefDB:
    return RefDB(refs_dir)


def identify_file(path: str | os.PathLike, *, sha256: str | None = None, hashes: bool = True,
                  progress=None, refs_dir=None, cache_dir=None, use_cache: bool = True,
                  db: RefDB | None = None) -> dict:
    """Identify one model file. ``sha256``: a hash the host already knows (A1111 keeps one),
    which saves hashing the file; ``progress(done_bytes, total_bytes)`` reports hashing.
    Results are cached in the shared store (``cache_dir`` or FPCORE_CACHE)."""
    from .store import Store
    p = os.fspath(path)
    store = Store(cache_dir) if use_cache else None
    try:
        return _ident.identify(p, db or _db(refs_dir), hashes=hashes, progress=progress, sha256=sha256, store=store)
    except FpError as e:
        log.warning("%s", e)
        return _ident.error_report(p, e)
    finally:
        if store is not None:
            store.close()


def inspect_file(path: str | os.PathLike) -> dict:
    p = os.fspath(path)
    try:
        return _ident.inspect(p)
    except FpError as e:
        return _ident.error_report(p, e)


def add_reference(path: str | os.PathLike, name: str, *, parent: str | None = None, note: str | None = None,
                  refs_dir=None, progress=None) -> dict:
    """Register ``path`` as reference ``name``. Raises FpError (RefError/BadFileError) on failure."""
    r = _ident.add_reference(_db(refs_dir), path, name, parent=parent, note=note, progress=progress)
    return r.info()


def list_references(refs_dir=None) -> list[dict]:
    db = _db(refs_dir)
    return [dict(r.info(), children=db.children(r.name), orphan=db.orphan(r.name)) for r in db.refs.values()]


def remove_reference(name: str, refs_dir=None) -> dict:
    return _db(refs_dir).remove(name).info()


def summary_line(report: dict) -> str:
    """One line for a UI: architecture, verdict, base."""
    if report.get("error"):
        return f"error: {report['error']}"
    a, v = report.get("architecture") or {}, report.get("verdict") or {}
    fam = _ident.family_name(a.get("family", "unknown"))
    return f"{fam}: {v.get('summary', '')}"
