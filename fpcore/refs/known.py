"""Official releases recognised by their published SHA-256 (refs/known_hashes.json).

An exact match is named from the hash alone. Its weight fingerprint then becomes a
reference automatically (origin ``known_hash``), with the parent that
refs/known_lineage.json implies, so a user who has the SDXL base gets the SDXL
reference for free.
"""
from __future__ import annotations

import json
import logging
from functools import lru_cache

from .. import paths

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def table() -> dict[str, dict]:
    """sha256 -> entry (family, variant, filename, sources, ...)."""
    try:
        rows = json.loads((paths.BUILTIN_REFS / "known_hashes.json").read_text())
    except (OSError, ValueError) as e:
        log.warning("known hashes unavailable: %s", e)
        return {}
    return {r["sha256"].lower(): r for r in rows if isinstance(r, dict) and r.get("sha256")}


@lru_cache(maxsize=1)
def _lineage() -> dict:
    try:
        return json.loads((paths.BUILTIN_REFS / "known_lineage.json").read_text())
    except (OSError, ValueError):
        return {}


#: fields of a known_hashes.json row that give the release's file size in bytes (sourced)
SIZE_FIELDS = ("size_bytes", "size")


@lru_cache(maxsize=1)
def sizes() -> frozenset[int]:
    """File sizes of the known releases: a file of one of these sizes may be one of them, and is
    hashed to find out (every other file is identified from its fingerprint alone)."""
    out = set()
    for r in table().values():
        for f in SIZE_FIELDS:
            v = r.get(f)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                out.add(v)
    return frozenset(out)


def size_matches(size: int) -> bool:
    return size in sizes()


def lookup(sha256: str | None) -> dict | None:
    return table().get(sha256.lower()) if sha256 else None


def parent_of(entry: dict) -> str | None:
    lin = _lineage()
    variant = entry.get("variant")
    if variant in lin.get("by_variant", {}):
        return lin["by_variant"][variant]
    return lin.get("by_family", {}).get(entry.get("family"))


def describe(entry: dict) -> str:
    fn = entry.get("filename")
    return f"the official {entry['variant']} release" + (f" ({fn.split(' ')[0]})" if fn else "")


def register(db, entry: dict, fp, family: str | None, sha256: str):
    """Register a known release as a reference unless a reference already has its hash."""
    if any(r.sha256 == sha256 for r in db.refs.values()):
        return None
    name = entry["variant"]
    if name in db.refs:
        return None
    note = f"{describe(entry)}; recognised by SHA-256 from: " + "; ".join(entry.get("sources", [])[:3])
    try:
        r = db.add(fp, name, parent=parent_of(entry), note=note[:1000], family=family, sha256=sha256,
                   source=entry.get("filename"), origin="known_hash")
    except Exception as e:  # a read-only refs dir must not stop identification
        log.warning("could not register %s as a reference: %s", name, e)
        return None
    log.info("registered %s as reference %r", describe(entry), name)
    return r
