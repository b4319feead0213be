"""Reference packs: many references in one file, to share a library.

A pack is a zip (stored, not compressed: fingerprints are compressed already) holding

* ``pack.json``: format name and version, fingerprint version, fpcore version, creation
  time, and one entry per reference: name, parent, note, family, sha256, source, added,
  the member holding it and that member's SHA-256;
* ``pack.sha256``: the SHA-256 of ``pack.json`` (so every byte of the pack is covered);
* ``refs/NNNNN.fpref``: each reference exactly as the reference dir stores it.

Import verifies everything before writing anything: sizes against fixed limits (a zip
bomb or a huge JSON is refused from the directory, and reads are bounded whatever the
directory claims), member names (no absolute paths, no ``..``, no duplicates), checksums,
the fingerprint version, each fingerprint and its metadata. Names are never used as
paths. Then the references are written into a staging folder inside the reference dir
and moved into place; if a move fails the ones already moved are removed again. A bad
pack is one FpError line and imports nothing.

Provenance: a reference's ``source`` is exported as given when it is a URL, and as the
file name only when it is a local path (a pack must not reveal the sender's folders).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from ..errors import BadFileError, FpError, RefError, UsageError

log = logging.getLogger(__name__)

FORMAT = "fpcore-refpack"
#: bump when the layout of a pack changes; a pack of another version is refused
PACK_VERSION = 1
#: file name extension suggested for packs
PACK_EXT = ".fprefs"
# -- limits a pack must respect (named so tests and users can see them) -----------------------
#: references in one pack: ten times the largest library measured (bench/refs_scale.py)
MAX_REFS = 100_000
#: pack.json: ~300 bytes per reference at MAX_REFS
MAX_MANIFEST_BYTES = 64 << 20
#: one .fpref: a full-size Flux or HiDream fingerprint is under 10 MB
MAX_MEMBER_BYTES = 64 << 20
#: everything unpacked
MAX_TOTAL_BYTES = 8 << 30
#: a member may expand at most this much (stored members: 1; a deflated fingerprint ~1.1)
MAX_RATIO = 20
#: nesting of pack.json (a real one has depth 3)
MAX_JSON_DEPTH = 8
#: longest reference name or note
MAX_TEXT = 4096

_MEMBER = re.compile(r"^refs/[0-9]{1,9}\.fpref$")


class PackError(BadFileError):
    """A pack that cannot be imported: damaged, hostile, or of another version."""


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _public_source(src):
    if not src:
        return src
    if re.match(r"^[a-z][a-z0-9+.-]*://", src, re.I):
        return re.sub(r"//[^/@]*@", "//", src)         # never a user:token@ part
    return os.path.basename(src.replace("\\", "/"))


# -- export ---------------------------------------------------------------------------------------
def export_pack(db, path: str | os.PathLike, names: list[str] | None = None) -> dict:
    """Write ``names`` (default: every user reference) to a pack at ``path`` (atomically).
    Returns {"path", "references", "parents_not_included"}."""
    from ..fingerprint import ALGO_VERSION
    from .fpref import encode_reference
    refs = db.refs
    if names:
        missing = [n for n in names if n not in refs]
        if missing:
            from .library import _suggest
            raise RefError(f"no reference named {missing[0]!r}" + _suggest(missing[0], refs))
        chosen = list(dict.fromkeys(names))
    else:
        chosen = [n for n, r in refs.items() if r.origin != "builtin"]
    if not chosen:
        raise RefError("no user references to export (add some with `fpcore refs add`, or name built-in ones)")
    # parents first, so an importer meets a parent before its children
    depth = {n: len(db.lineage(n)) for n in chosen}
    chosen.sort(key=lambda n: (depth[n], n))

    def items():
        for n in chosen:
            r = refs[n]
            fp = r.fp
            if fp.version != ALGO_VERSION:
                raise RefError(f"reference {n!r} was made by fingerprint version {fp.version}; re-add it first")
            meta = dict(r.meta(), origin="pack", source=_public_source(r.source))
            yield meta, encode_reference(meta, fp)

    entries = write_pack(path, items())
    outside = sorted({r["parent"] for r in entries if r["parent"] and r["parent"] not in chosen})
    return {"path": str(Path(path)), "references": [e["name"] for e in entries], "parents_not_included": outside}


def write_pack(path: str | os.PathLike, items) -> list[dict]:
    """Write a pack at ``path`` (atomically) from ``items``, an iterable of (meta, .fpref bytes)
    consumed one at a time (a pack of 10^5 references is never held in memory). ``meta`` holds
    the reference's fields (name, parent, note, family, sha256, source, added) as its .fpref
    does. Returns the manifest's entries; raises BadFileError when the file cannot be written."""
    from .. import __version__
    from ..fingerprint import ALGO_VERSION
    out = Path(path)
    entries: list[dict] = []

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            for i, (meta, blob) in enumerate(items):
                member = f"refs/{i:05d}.fpref"
                z.writestr(member, blob)
                entries.append({**{k: meta.get(k) for k in ("name", "parent", "note", "family", "sha256", "source",
                                                             "added")},
                                "member": member, "member_sha256": _sha(blob), "bytes": len(blob)})
            manifest = json.dumps({"format": FORMAT, "version": PACK_VERSION, "fingerprint_version": ALGO_VERSION,
                                   "fpcore": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                   "references": entries}, indent=1).encode()
            z.writestr("pack.json", manifest)
            z.writestr("pack.sha256", _sha(manifest) + "\n")

    try:
        from ..paths import atomic_write
        atomic_write(out, write)
    except OSError as e:
        raise BadFileError(f"cannot write the pack: {e.strerror or e}", out) from None
    return entries


# -- reading and verifying --------------------------------------------------------------------------
def _depth(o, d=0) -> int:
    if d > MAX_JSON_DEPTH:
        return d
    if isinstance(o, dict):
        return max([_depth(v, d + 1) for v in o.values()] or [d + 1])
    if isinstance(o, list):
        return max([_depth(v, d + 1) for v in o] or [d + 1])
    return d


def _read(z: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, where) -> bytes:
    if info.file_size > limit:
        raise PackError(f"member {info.filename!r} claims {info.file_size} bytes (limit {limit})", where)
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise PackError(f"member {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}x "
                        f"(a zip bomb?)", where)
    with z.open(info) as f:
        data = f.read(limit + 1)          # bounded whatever the directory claims
    if len(data) > limit:
        raise PackError(f"member {info.filename!r} is larger than {limit} bytes", where)
    return data


def _open(where: str) -> tuple[zipfile.ZipFile, dict, dict, list]:
    """Open and check the pack's directory and manifest: (zip, members by name, manifest, entries)."""
    from ..fingerprint import ALGO_VERSION
    try:
        st = os.stat(where)
    except OSError as e:
        raise PackError(f"cannot read the pack: {e.strerror or e}", where) from None
    if not os.path.isfile(where):
        raise PackError("is not a file", where)
    try:
        z = zipfile.ZipFile(where)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise PackError(f"not a reference pack (not a zip file: {e})", where) from None
    try:
        infos = z.infolist()
        if len(infos) > MAX_REFS + 2:
            raise PackError(f"{len(infos)} members (limit {MAX_REFS + 2})", where)
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise PackError("duplicate member names", where)
        for n in names:
            if n.startswith(("/", "\\")) or ".." in n.replace("\\", "/").split("/") or ":" in n \
                    or n not in ("pack.json", "pack.sha256") and not _MEMBER.match(n):
                raise PackError(f"unexpected member name {n[:80]!r} (path traversal or not a pack)", where)
        total = sum(i.file_size for i in infos)
        if total > MAX_TOTAL_BYTES or total > MAX_RATIO * max(st.st_size, 1):
            raise PackError(f"unpacks to {total} bytes from {st.st_size} (a zip bomb?)", where)
        by = {i.filename: i for i in infos}
        if "pack.json" not in by or "pack.sha256" not in by:
            raise PackError("not a reference pack (pack.json or pack.sha256 missing)", where)
        raw = _read(z, by["pack.json"], MAX_MANIFEST_BYTES, where)
        want = _read(z, by["pack.sha256"], 128, where).decode("ascii", "replace").strip()
        if _sha(raw) != want:
            raise PackError("checksum mismatch in pack.json (damaged or edited)", where)
        try:
            man = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise PackError(f"pack.json is not valid JSON ({type(e).__name__})", where) from None
        if not isinstance(man, dict) or _depth(man) > MAX_JSON_DEPTH:
            raise PackError("pack.json has an unexpected structure", where)
        if man.get("format") != FORMAT:
            raise PackError("not a reference pack (unknown format)", where)
        if man.get("version") != PACK_VERSION:
            raise PackError(f"pack format version {man.get('version')!r}; this fpcore reads version "
                            f"{PACK_VERSION} (update fpcore, or export the pack again)", where)
        if man.get("fingerprint_version") != ALGO_VERSION:
            raise PackError(f"made with fingerprint version {man.get('fingerprint_version')!r}, this fpcore uses "
                            f"{ALGO_VERSION}; the sender must export it with a matching fpcore", where)
        entries = man.get("references")
        if not isinstance(entries, list) or not entries or len(entries) > MAX_REFS:
            raise PackError("pack.json lists no references", where)
        seen_names, seen_members = set(), set()
        for e in entries:
            if not isinstance(e, dict):
                raise PackError("pack.json has a malformed entry", where)
            name, member = e.get("name"), e.get("member")
            if not isinstance(name, str) or not name.strip() or len(name) > MAX_TEXT or "\n" in name:
                raise PackError("a reference without a usable name", where)
            for k in ("parent", "note", "family", "sha256", "source", "added"):
                if e.get(k) is not None and (not isinstance(e[k], str) or len(e[k]) > MAX_TEXT):
                    raise PackError(f"reference {name[:60]!r}: malformed {k!r}", where)
            if name in seen_names:
                raise PackError(f"reference {name[:60]!r} appears twice", where)
            if not isinstance(member, str) or member not in by or member in seen_members:
                raise PackError(f"reference {name[:60]!r}: member missing", where)
            seen_names.add(name)
            seen_members.add(member)
        return z, by, man, entries
    except BaseException:
        z.close()
        raise


def _member(z: zipfile.ZipFile, by: dict, e: dict, where: str) -> bytes:
    """The verified bytes of entry ``e``'s member: checksum, the name it holds, fingerprint version."""
    from ..fingerprint import ALGO_VERSION
    from .fpref import read_fingerprint, read_meta
    name, member = e["name"], e["member"]
    blob = _read(z, by[member], MAX_MEMBER_BYTES, where)
    if _sha(blob) != e.get("member_sha256"):
        raise PackError(f"checksum mismatch for reference {name[:60]!r} (damaged)", where)
    meta, _ = read_meta(blob, f"{where}:{member}")
    if meta.get("name") != name:
        raise PackError(f"reference {name[:60]!r}: its file names {meta.get('name')!r}", where)
    fp = read_fingerprint(blob, f"{where}:{member}")
    if fp.version != ALGO_VERSION:
        raise PackError(f"reference {name[:60]!r}: fingerprint version {fp.version}", where)
    return blob


def _guard(where: str, fn):
    """Run ``fn``; every failure of a damaged pack becomes one PackError line."""
    try:
        return fn()
    except PackError:
        raise
    except FpError as e:
        raise PackError(f"damaged reference in pack ({e.message})", where) from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, RuntimeError, NotImplementedError) as e:
        raise PackError(f"damaged pack ({type(e).__name__}: {e})", where) from None
    except Exception as e:   # zlib.error and friends from a corrupt member: still one line
        raise PackError(f"damaged pack ({type(e).__name__})", where) from None


def verify_pack(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """Verify every byte of a pack, one member at a time (a pack of 10^5 references is never held
    in memory); returns (manifest, entries). Raises PackError."""
    where = os.fspath(path)

    def go():
        z, by, man, entries = _open(where)
        with z:
            for e in entries:
                _member(z, by, e, where)
        return man, entries
    return _guard(where, go)


def pack_members(path: str | os.PathLike, entries: list[dict]):
    """(entry, verified .fpref bytes) for each of ``entries`` (from :func:`verify_pack`), read one
    at a time and checked again as read (the file may have changed since). Raises PackError."""
    where = os.fspath(path)
    z, by, _, listed = _guard(where, lambda: _open(where))
    with z:
        known = {e["name"]: e for e in listed}
        for e in entries:
            if known.get(e["name"]) != e:
                raise PackError(f"the pack changed while it was read (reference {e['name'][:60]!r})", where)
            yield e, _guard(where, lambda: _member(z, by, e, where))


def read_pack(path: str | os.PathLike) -> tuple[dict, list[tuple[dict, bytes]]]:
    """Verify a pack; returns (manifest, [(entry, .fpref bytes)]), every member in memory (use
    :func:`verify_pack` and :func:`pack_members` for large packs). Raises PackError."""
    man, entries = verify_pack(path)
    return man, list(pack_members(path, entries))


# -- import -----------------------------------------------------------------------------------------
def _free_name(name: str, taken) -> str:
    i = 2
    while f"{name} ({i})" in taken:
        i += 1
    return f"{name} ({i})"


def import_pack(db, path: str | os.PathLike, on_clash: str = "error", ask=None) -> dict:
    """Verify the pack at ``path`` and add its references to ``db``'s user dir.

    ``on_clash`` for a name already registered with other weights: ``rename`` (``Name (2)``),
    ``skip``, ``ask`` (``ask(name) -> "rename" | "skip" | "abort"``) or ``error`` (nothing
    imported; the message names the clashes). A reference already registered with the same
    fingerprint is left as it is. Returns {"added": [...], "renamed": {old: new},
    "skipped": [...], "unchanged": [...]}."""
    from .fpref import encode_reference, read_fingerprint, read_meta, slug, EXT
    if on_clash not in ("error", "rename", "skip", "ask"):
        raise UsageError(f"unknown clash policy {on_clash!r}")
    _, entries = verify_pack(path)
    existing = db.refs
    plan, renamed, skipped, unchanged = [], {}, [], []
    taken = set(existing)
    clashes = []
    for e in entries:
        name = e["name"]
        if name in existing:
            same = False
            try:
                blob = next(b for _, b in pack_members(path, [e]))
                same = existing[name].fp.raw == read_fingerprint(blob).raw
            except FpError:
                pass
            if same:
                unchanged.append(name)
                continue
            clashes.append(name)
        plan.append(e)
    if clashes and on_clash == "error":
        more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
        raise RefError(f"{len(clashes)} reference name(s) already registered with other weights: "
                       f"{', '.join(repr(c) for c in clashes[:3])}{more}; import with --rename or --skip", path)
    final = []
    for e in plan:
        name = e["name"]
        if name in clashes:
            how = on_clash if on_clash != "ask" else (ask(name) if ask else "abort")
            if how == "abort":
                raise RefError(f"import cancelled at {name!r}; nothing was imported", path)
            if how == "skip":
                skipped.append(name)
                continue
            new = _free_name(name, taken)
            renamed[name] = new
            taken.add(new)
        else:
            taken.add(name)
        final.append(e)

    def out_blobs():
        # parents renamed with their children; a child of a skipped name keeps naming it (the registered one)
        for e, blob in pack_members(path, final):
            name = renamed.get(e["name"], e["name"])
            parent = e.get("parent")
            parent = renamed.get(parent, parent)
            if name == e["name"] and parent == e.get("parent"):
                yield name, blob
                continue
            meta, sk = read_meta(blob)
            meta.update(name=name, parent=parent, origin="pack")
            yield name, encode_reference(meta, read_fingerprint(blob), sk)

    added = [renamed.get(e["name"], e["name"]) for e in final]
    if final:
        _commit(db, out_blobs(), path, slug, EXT)
    db._refs = None          # re-read from the catalog (sees the new files)
    return {"path": os.fspath(path), "added": added, "renamed": renamed, "skipped": skipped,
            "unchanged": unchanged}


def _commit(db, blobs, where, slug, ext) -> None:
    """Write every reference of ``blobs`` (an iterable of (name, bytes), consumed one at a time)
    into a staging folder inside the user dir, then move them into place; on any failure remove
    what was moved and the staging folder."""
    d = Path(db.user_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".import-", dir=d))
    except OSError as e:
        raise RefError(f"cannot write references: {e.strerror or e}", d) from None
    moved: list[Path] = []
    try:
        used = {p.name for p in d.glob("*" + ext)}
        targets = []
        for name, blob in blobs:
            fname, i = slug(name) + ext, 2
            while fname in used:
                fname = f"{slug(name)}-{i}{ext}"
                i += 1
            used.add(fname)
            tmp = stage / fname
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            targets.append((tmp, d / fname))
        for tmp, final in targets:
            if final.exists():                       # another process took the name meanwhile
                raise RefError(f"{final.name} appeared during the import; try again", d)
            os.replace(tmp, final)
            moved.append(final)
    except BaseException as e:
        for p in moved:
            try:
                os.unlink(p)
            except OSError:
                pass
        if isinstance(e, OSError):
            raise RefError(f"cannot write references: {e.strerror or e}; nothing was imported", d) from None
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
