"""Known base releases as pullable references: ``refs catalog`` and ``refs pull --known``.

The known-release table (refs/known_hashes.json) names each official release's SHA-256 and,
where it is known, the file on the Hugging Face hub that holds it (``hub``: repository, path in
it, size, where that was read). Pulling one reads its header and sampled ranges over HTTP
(fpcore.sources.remote: tens of MB instead of a 7 GB download), checks the SHA-256 the hub
publishes for that file against the table's (the hub's X-Linked-ETag / paths-info: the same
file, byte for byte), and registers the fingerprint as a reference named after the release,
with the parent that refs/known_lineage.json gives.
"""
from __future__ import annotations

import logging
import re
import time

from . import known
from ..errors import BadFileError, FpError, UsageError

log = logging.getLogger(__name__)

#: pulled references carry this origin (``refs list`` shows it)
ORIGIN = "pulled"


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "", (text or "").lower())


def catalog() -> list[dict]:
    """One row per known release: name, family, SHA-256, parent, and where it is published
    (``repo``, ``path``, ``url``; ``pullable`` when a hub file is known)."""
    rows = []
    for sha, e in known.table().items():
        hub = e.get("hub") if isinstance(e.get("hub"), dict) else {}
        repo = hub.get("repo") or _repo_of(e.get("hf"))
        path = hub.get("path")
        rev = hub.get("revision") or "main"
        url = f"hf://{repo}/{path}" + (f"@{rev}" if rev != "main" else "") if repo and path else None
        rows.append({"name": e.get("variant"), "alias": hub.get("alias"), "family": e.get("family"),
                     "sha256": sha, "parent": known.parent_of(e), "repo": repo, "path": path,
                     "size": hub.get("size_bytes") or e.get("size_bytes"), "url": url,
                     "pullable": bool(url and path.lower().endswith((".safetensors", ".sft"))),
                     "source": hub.get("source")})
    rows.sort(key=lambda r: (not r["pullable"], r["family"] or "", r["name"] or ""))
    return rows


def _repo_of(hf: str | None) -> str | None:
    """The first OWNER/REPO named in the table's free-text ``hf`` field."""
    m = re.match(r"^\s*([\w.-]+/[\w.-]+)", hf or "")
    return m.group(1) if m else None


def select(names) -> list[dict]:
    """Catalog rows for ``names`` (release names, aliases, or ``all``: every pullable one)."""
    rows = catalog()
    names = [n for n in (names or []) if n and n.strip()]
    if not names:
        raise UsageError("name the releases to pull (refs catalog lists them), or 'all'")
    if any(n.strip().lower() == "all" for n in names):
        return [r for r in rows if r["pullable"]]
    out = []
    for n in names:
        k = _norm(n)
        hit = [r for r in rows if k in (_norm(r["name"]), _norm(r["alias"] or ""))]
        if not hit:
            hit = [r for r in rows if r["pullable"] and k and k in _norm(r["name"])]
        if not hit:
            import difflib
            close = difflib.get_close_matches(n, [r["alias"] or r["name"] for r in rows if r["pullable"]], n=1)
            raise UsageError(f"no known release named {n!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                             + "; `fpcore refs catalog` lists them")
        if len(hit) > 1 and not all(h["sha256"] == hit[0]["sha256"] for h in hit):
            raise UsageError(f"{n!r} names several releases: " + ", ".join(repr(h["alias"] or h["name"]) for h in hit))
        out.extend(h for h in hit if h not in out)
    return out


def pull(names, db, remote=None, progress=None) -> list[dict]:
    """Register the fingerprints of the named releases (see module doc); one row each."""
    from ..identify import fingerprint_open, remote_identity
    from ..sources import open_source
    rows = []
    todo = select(names)
    # parents first, so each child finds its parent registered
    order = {r["name"]: i for i, r in enumerate(todo)}
    todo.sort(key=lambda r: (len(_chain(r["name"])), order[r["name"]]))
    for i, r in enumerate(todo):
        row = {"name": r["name"], "url": r["url"], "parent": r["parent"], "sha256": r["sha256"], "verified": False,
               "status": None, "error": None}
        rows.append(row)
        if progress:
            progress(i, len(todo), r["name"])
        if not r["pullable"]:
            row.update(status="error", error=f"{r['name']}: no hub file is known for it (the catalog lists where "
                                              "it is published)")
            continue
        existing = db.refs.get(r["name"])
        if existing is not None or any(x.sha256 == r["sha256"] for x in db.refs.values()):
            row["status"] = "present"
            continue
        t0 = time.perf_counter()
        try:
            with open_source(r["url"], remote) as src:
                rid, rsrc = remote_identity(src)
                if rid.sha256 and rid.sha256 != r["sha256"]:
                    raise BadFileError(f"the hub's file has SHA-256 {rid.sha256[:12]}…, not the known release's "
                                       f"{r['sha256'][:12]}… (the repository changed it); not registered", src.path)
                fp, a, _, _ = fingerprint_open(src)
                stats = rsrc.stats
            verified = rid.sha256 == r["sha256"]
            note = (f"{known.describe(known.lookup(r['sha256']) or {'variant': r['name']})}; pulled from {r['url']} "
                    + ("(SHA-256 published by the hub matches the known release)" if verified
                       else "(the hub published no SHA-256: not verified byte for byte)"))
            db.add(fp, r["name"], parent=r["parent"], note=note[:1000], family=a.family,
                   sha256=r["sha256"] if verified else None, source=r["url"], origin=ORIGIN)
            row.update(status="added", verified=verified, family=a.family, requests=stats.get("requests"),
                       bytes_transferred=stats.get("bytes_transferred"), size=rid.size,
                       seconds=round(time.perf_counter() - t0, 2))
        except FpError as e:
            row.update(status="error", error=str(e))
            log.warning("%s", e)
    if progress:
        progress(len(todo), len(todo), "")
    return rows


def _chain(name: str) -> list[str]:
    by_name = {e.get("variant"): e for e in known.table().values()}
    out, cur = [], name
    while cur and cur not in out and len(out) < 20:
        out.append(cur)
        e = by_name.get(cur)
        cur = known.parent_of(e) if e else None
    return out
