"""The one façade every front end calls: the command line, ComfyUI nodes, the A1111/Forge
tab and the standalone UI.

Each function returns plain JSON-able dicts (the fields are described in
docs/json-format.md). A bad model file does not raise: its report carries an ``error``
field instead (hosts show it as is); pass ``strict=True`` to get the FpError raised (the
command line does, to show tracebacks under ``--debug``). Reference and cache locations
come from the arguments, else ``FPCORE_REFS`` / ``FPCORE_CACHE``.

Imports of the engine happen inside the functions, so importing this module is cheap and
each command loads only what it uses.
"""
from __future__ import annotations

import logging
import os

from .errors import BadFileError, FpError

log = logging.getLogger(__name__)


def refdb(refs_dir=None):
    """The reference set: the user reference dir (``refs_dir`` or FPCORE_REFS) plus the built-in one."""
    from .refs.library import RefDB
    return RefDB(refs_dir)


def _store(cache_dir=None, use_cache: bool = True):
    if not use_cache:
        return None
    from .store import Store
    return Store(cache_dir)


def _error(path: str, e: FpError, strict: bool) -> dict:
    if strict:
        raise e
    from .identify import error_report
    log.warning("%s", e)
    return error_report(path, e)


def is_model_folder(path: str) -> bool:
    """A diffusers folder (one model stored as several files), as opposed to a folder of models."""
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, n))
                                       for n in ("model_index.json", "unet", "transformer", "vae"))


def check_model_path(path: str) -> None:
    """Raise a one-line BadFileError for what cannot be a model: a missing path, a folder of models."""
    if not os.path.lexists(path):
        raise BadFileError("no such file or directory", path)
    if os.path.isdir(path) and not is_model_folder(path):
        raise BadFileError("is a folder of models, not a model; to identify every model in it: fpcore scan "
                           + _quote(path), path)


def _quote(path: str) -> str:
    import shlex
    return shlex.quote(path)


def is_url(path) -> bool:
    """Whether ``path`` names a remote file (``https://``, ``hf://``, ``s3://``...)."""
    from .sources import is_url as _is_url
    return _is_url(os.fspath(path) if isinstance(path, os.PathLike) else path)


def remote_options(headers=None, policy=None):
    """Options for reading URLs: ``headers`` ('Name: value' strings or a dict, e.g. an
    Authorization header), ``policy`` (an ``exposure.Policy``: URLs pointing inside the server's
    network are refused, on the first URL and after every redirect, unless it allows them)."""
    from .sources.remote import RemoteOptions, parse_header_option
    h = dict(parse_header_option(x) for x in headers) if isinstance(headers, (list, tuple)) else headers
    allow = None if policy is None else bool(getattr(policy, "allow_private_urls", False))
    return RemoteOptions(headers=h or None, allow_private=allow)


def identify_file(path: str | os.PathLike, *, sha256: str | None = None, hashes: bool = True,
                  progress=None, refs_dir=None, cache_dir=None, use_cache: bool = True,
                  db=None, store=None, strict: bool = False, remote=None, hash_policy: str = "auto") -> dict:
    """Identify one model file or diffusers folder. ``sha256``: a hash the host already knows
    (A1111 keeps one); ``hash_policy``: "auto" (hash the whole file only where it decides
    something), "always" or "never" (``hashes=False`` too); ``progress(done_bytes, total_bytes)``
    reports reading and hashing. Results are cached in the shared store (``cache_dir`` or FPCORE_CACHE)."""
    from . import identify as _ident
    p = os.fspath(path)
    own = store is None
    store = _store(cache_dir, use_cache) if own else store
    try:
        if is_url(p):   # read by range requests (``remote``: remote_options())
            return _ident.identify(p, db or refdb(refs_dir), store=store, remote=remote)
        check_model_path(p)
        return _ident.identify(p, db or refdb(refs_dir), hashes=hashes, progress=progress, sha256=sha256,
                               store=store, hash_policy=hash_policy)
    except FpError as e:
        return _error(p, e, strict)
    finally:
        if own and store is not None:
            store.close()


def inspect_file(path: str | os.PathLike, *, why: bool = False, strict: bool = False, remote=None) -> dict:
    """Architecture, components, dtypes and metadata from the header only (no weights read)."""
    from . import identify as _ident
    p = os.fspath(path)
    try:
        if not is_url(p):
            check_model_path(p)
        return _ident.inspect(p, why=why, remote=remote)
    except FpError as e:
        return _error(p, e, strict)


def hash_file(path: str | os.PathLike, *, cache_dir=None, use_cache: bool = True, progress=None,
              store=None, strict: bool = False, remote=None, download: bool = False) -> dict:
    """SHA-256, AutoV2 and AutoV3 of a file; an unchanged file is answered from the store. A URL:
    the hash its hub publishes, else (only with ``download=True``) the hash of a streamed download."""
    from . import identify as _ident
    p = os.fspath(path)
    if is_url(p):
        try:
            return _hash_url(p, remote, download, progress)
        except FpError as e:
            if strict:
                raise
            return {"path": p, "sha256": None, "autov2": None, "autov3": None, "error": str(e)}
    own = store is None
    store = _store(cache_dir, use_cache) if own else store
    try:
        if os.path.isdir(p):
            raise BadFileError("is a folder; hashes are of single files", p)
        return {"path": p, **_ident.hashes_for(p, store=store, progress=progress), "error": None}
    except FpError as e:
        if strict:
            raise
        return {"path": p, "sha256": None, "autov2": None, "autov3": None, "error": str(e)}
    finally:
        if own and store is not None:
            store.close()


def _hash_url(url: str, remote, download: bool, progress) -> dict:
    from .facts import format_bytes
    from .sources.remote import download_hashes, open_remote_file, redact
    if download:
        return {"path": redact(url), **download_hashes(url, remote, progress), "error": None}
    f = open_remote_file(url, remote)
    try:
        if f.sha256:
            return {"path": f.display, "sha256": f.sha256, "autov2": f.sha256[:10], "autov3": None, "size": f.size,
                    "hash": "published", "hash_from": f.sha256_source, "error": None}
        raise BadFileError(f"no published SHA-256 for this file; hashing it means downloading all "
                           f"{format_bytes(f.size)}: pass --download to do that", f.display)
    finally:
        f.close()


def scan_folder(root: str | os.PathLike, *, refs_dir=None, cache_dir=None, use_cache: bool = True, db=None,
                progress=None, byte_progress=None, phase=None, write_tags: bool = False,
                dry_run: bool = False, hash_policy: str = "auto", allowed_roots=None) -> dict:
    """Identify every model under ``root``, against the references and against each other.

    ``hash_policy``: "auto" hashes only where a hash decides something, "always", "never".
    ``allowed_roots`` (an exposed UI's model folders): files and folders whose real path leaves
    them are not read, and are listed in ``skipped``.
    Raises BadFileError when ``root`` is missing or not a folder. The result keeps the
    fingerprints (``_fingerprints``) for :func:`write_report`; :func:`scan_json` drops them."""
    from . import scan as _scan
    r = os.fspath(root)
    if not os.path.lexists(r):
        raise BadFileError("no such directory", r)
    if not os.path.isdir(r):
        raise BadFileError("is a file, not a folder; to identify one model: fpcore identify " + _quote(r), r)
    kw = {"cache_dir": cache_dir} if cache_dir else {}
    return _scan.scan_folder(r, db=db or refdb(refs_dir), use_cache=use_cache, progress=progress,
                             byte_progress=byte_progress, phase=phase, write_tags=write_tags, dry_run=dry_run,
                             hash_policy=hash_policy, allowed_roots=allowed_roots, **kw)


def scan_json(result: dict) -> dict:
    """What ``scan --json`` prints: the result without internal fields, plus ``summary``."""
    from .scan import public
    return dict(public(result), summary=scan_summary(result))


def scan_summary(result: dict) -> dict:
    """Counts for the one-line summary of a scan."""
    reps = result.get("reports") or []
    groups = result.get("groups") or []
    try:
        from .scan import reclaimable_total
        reclaim = reclaimable_total(groups)
    except ImportError:
        reclaim = sum(g.get("reclaimable_bytes", 0) for g in groups)
    return {"models": sum(1 for r in reps if not r.get("error")),
            "unreadable": sum(1 for r in reps if r.get("error")) + len(result.get("errors") or []),
            "groups": len(groups), "reclaimable_bytes": reclaim,
            "tag_errors": sum(1 for t in result.get("tags") or [] if t.get("error"))}


def summary_text(summary: dict) -> str:
    """'38 models, 2 unreadable, 3 groups, 418 MB reclaimable'."""
    from .facts import format_bytes
    n = summary["models"]
    parts = [f"{n} model{'s' if n != 1 else ''}"]
    if summary["unreadable"]:
        parts.append(f"{summary['unreadable']} unreadable")
    g = summary["groups"]
    parts.append(f"{g} group{'s' if g != 1 else ''}")
    parts.append(f"{format_bytes(summary['reclaimable_bytes'])} reclaimable")
    if summary.get("tag_errors"):
        parts.append(f"{summary['tag_errors']} sidecar(s) not written")
    return ", ".join(parts)


def write_report(result: dict, path: str | os.PathLike, *, refs_dir=None, db=None) -> str:
    """Write the self-contained HTML report of a scan (atomically); returns its path."""
    from .scan import html as report_html
    from .paths import atomic_write
    p = os.fspath(path)
    try:
        atomic_write(p, report_html.render(result, db or refdb(refs_dir)).encode("utf-8"))
    except OSError as e:
        raise BadFileError(f"cannot write the report: {e.strerror or e}", p) from None
    return p


def add_reference(path: str | os.PathLike, name: str, *, parent: str | None = None, note: str | None = None,
                  refs_dir=None, progress=None, hashes: bool = True, db=None, remote=None) -> dict:
    """Register ``path`` (a file, folder or URL) as reference ``name``. Raises FpError
    (RefError/BadFileError) on failure. A URL is read by range requests (``refs pull URL``)."""
    from . import identify as _ident
    p = os.fspath(path)
    if not is_url(p):
        check_model_path(p)
    r = _ident.add_reference(db or refdb(refs_dir), p, name, parent=parent, note=note, progress=progress,
                             hashes=hashes, remote=remote)
    return dict(r.info(), tensors=len(r.fp.keys))


def reference_catalog() -> list[dict]:
    """The known base releases and where each is published (``refs catalog``)."""
    from .refs import pull
    return pull.catalog()


def pull_known(names, *, refs_dir=None, db=None, remote=None, progress=None) -> list[dict]:
    """Fetch the fingerprints of known releases (names, aliases, or ``all``) by range requests,
    verify each against its published SHA-256 where the hub gives one, and register them with
    their parent from the lineage table. One row per release (``status``: added, present, error)."""
    from .refs import pull
    return pull.pull(names, db or refdb(refs_dir), remote=remote, progress=progress)


def find_loras(dirs) -> list[str]:
    """Model files under ``dirs`` (recursively, sorted): the candidates of a LoRA folder."""
    from .facts import MODEL_EXTS
    out: list[str] = []
    for d in [os.fspath(x) for x in dirs or [] if x]:
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames.sort()
            out += [os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(MODEL_EXTS)]
    return list(dict.fromkeys(out))


def loras_fitting(checkpoint: dict | str | os.PathLike, loras, *, refs_dir=None, cache_dir=None, db=None,
                  progress=None, hash_policy: str = "auto") -> list[dict]:
    """Which LoRAs fit a checkpoint (its identify report, or its path): one row per file of
    ``loras`` (paths) that is a LoRA, ``{"lora", "fit": yes|no|unknown, "reason", "trained_on"}``,
    what fits first. ``progress(done, total, path)``. A checkpoint a LoRA names by A1111's legacy
    hash is confirmed by its whole-file SHA-256 (unless ``hash_policy`` is "never")."""
    from . import claims
    from .identify import hashes_for
    db = db or refdb(refs_dir)
    store = _store(cache_dir)
    try:
        ckpt = checkpoint if isinstance(checkpoint, dict) else identify_file(checkpoint, db=db, store=store)
        reports = {}
        paths = [os.fspath(p) for p in loras]
        for i, p in enumerate(paths):
            reports[p] = identify_file(p, db=db, store=store, hash_policy="never")
            if progress:
                progress(i + 1, len(paths), p)
        key = ckpt.get("path") or "<checkpoint>"
        reports = {key: ckpt, **{p: r for p, r in reports.items() if p != key}}

        def hasher(path):
            if hash_policy == "never" or not os.path.isfile(path):
                return None
            try:
                return hashes_for(path, store=store)["sha256"]
            except (FpError, OSError) as e:
                log.warning("%s: not hashed: %s", path, e)
                return None
        claims.annotate_folder(reports, db, store, hasher)
    finally:
        if store is not None:
            store.close()
    rows = []
    for p, r in reports.items():
        if p == key or not claims.is_lora(r):
            continue
        f = next((x for x in r.get("fits") or [] if x["path"] == key), None) or \
            {"fit": "unknown", **claims.fit(r, ckpt)}
        rows.append({"lora": p, "fit": f["fit"], "reason": f["reason"], "trained_on": r.get("trained_on"),
                     "claim_check": r.get("claim_check")})
    order = {"yes": 0, "unknown": 1, "no": 2}
    return sorted(rows, key=lambda x: (order[x["fit"]], x["lora"]))


def lora_fit(lora: str | os.PathLike, checkpoint: dict | str | os.PathLike, *, refs_dir=None, cache_dir=None,
             db=None) -> dict:
    """Whether one LoRA fits one checkpoint (a report, e.g. of a loaded MODEL, or a path):
    ``{"status": "ok"|"warn", "fit", "reason", "lora", "checkpoint", "trained_on"}``."""
    from . import claims
    db = db or refdb(refs_dir)
    ckpt = checkpoint if isinstance(checkpoint, dict) else identify_file(checkpoint, db=db, cache_dir=cache_dir)
    rows = loras_fitting(ckpt, [lora], db=db, cache_dir=cache_dir)
    if not rows:   # not a LoRA, or unreadable: the reason says which
        return claims.lora_fit(identify_file(lora, db=db, cache_dir=cache_dir, hash_policy="never"), ckpt)
    r = rows[0]
    return {"status": "ok" if r["fit"] == "yes" else "warn", "fit": r["fit"], "reason": r["reason"],
            "lora": r["lora"], "checkpoint": ckpt.get("path"), "trained_on": r["trained_on"]}


def list_references(refs_dir=None) -> list[dict]:
    db = refdb(refs_dir)
    kids = db.children_map() if hasattr(db, "children_map") else None   # one pass: libraries of thousands
    return [dict(r.info(), children=sorted(kids.get(r.name, [])) if kids is not None else db.children(r.name),
                 orphan=db.orphan(r.name)) for r in db.refs.values()]


def export_references(pack: str | os.PathLike, names: list[str] | None = None, *, refs_dir=None, db=None) -> dict:
    """Write references (default: every user reference) to one pack file. Raises FpError."""
    from .refs.packs import export_pack
    return export_pack(db or refdb(refs_dir), pack, names or None)


def import_references(pack: str | os.PathLike, *, on_clash: str = "error", ask=None, refs_dir=None, db=None) -> dict:
    """Verify a pack and add its references; ``on_clash``: error | rename | skip | ask (with
    ``ask(name) -> rename | skip | abort``). A bad pack raises one-line FpError, imports nothing."""
    from .refs.packs import import_pack
    return import_pack(db or refdb(refs_dir), pack, on_clash=on_clash, ask=ask)


def index_listing(listing: str | os.PathLike, pack: str | os.PathLike, **options) -> dict:
    """Fingerprint every entry of a listing (``SOURCE [NAME [PARENT]]`` a line) on a distributed
    engine into a reference pack, with the outcome table beside it (fpcore.indexer.job.run: the
    options and the summary returned). Needs the ``index`` extra (Dask); raises FpError."""
    from .indexer import run
    return run(listing, pack, **options)


def remove_reference(name: str, refs_dir=None) -> dict:
    return refdb(refs_dir).remove(name).info()


def reference_dir(refs_dir=None) -> str:
    """Where user references are written."""
    from .paths import user_refs_dir
    return os.fspath(refs_dir or user_refs_dir())


def cache(action: str, cache_dir=None) -> dict:
    """The shared fingerprint store: ``info``, ``prune`` (forget files that are gone) or ``clear``."""
    from .store import Store
    store = Store(cache_dir)
    try:
        if action == "prune":
            return store.prune()
        if action == "clear":
            store.clear()
            return {"cleared": store.enabled}
        return store.info()
    finally:
        store.close()


def summary_line(report: dict) -> str:
    """One line for a UI: architecture, verdict, base."""
    if report.get("error"):
        return f"error: {report['error']}"
    from .facts import family_name
    a, v = report.get("architecture") or {}, report.get("verdict") or {}
    if a.get("layout_name") and a["layout_name"] in (v.get("summary") or ""):
        return v["summary"]            # a file no rule recognises: the summary names its layout already
    return f"{a.get('layout_name') or family_name(a.get('family', 'unknown'))}: {v.get('summary', '')}"
