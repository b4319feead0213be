"""The reference database: named fingerprints that may name a parent (a tree).

References live as one ``<slug>.fpref`` file each, in the project's built-in ``refs/``
(read-only) and in the user reference dir (``FPCORE_REFS``). A reference whose parent
is named but not registered is an *orphan*: files far from it are not claimed as its
descendants, because a sibling cannot be told from a descendant without the parent.

Libraries of thousands: each folder has a small *catalog* (``.fpcatalog`` beside the
``.fpref`` files) holding every reference's names, parent, family, hashes, component
layouts and sketches (fpcore.refindex). Listing, adding and the candidate search read
only the catalog; a reference's fingerprint is read from its file when the analysis
needs it and kept in a small LRU (FP_CACHE_MAX). The catalog is checked against the
files' sizes and modification times on every load and brought up to date for what
changed (a file another process added or removed, an old ``.fpref`` without a sketch);
a folder that cannot be written keeps its catalog in the cache dir, or in memory.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from . import paths
from .errors import BadFileError, RefError
from .facts import dominant_dtype
from .fingerprint import ALGO_VERSION, Fingerprint

log = logging.getLogger(__name__)
EXT = ".fpref"
#: the catalog file in each reference folder (hidden: not a reference itself)
CATALOG = ".fpcatalog"
#: bump when the catalog's content changes; an older catalog is rebuilt from the files
CATALOG_VERSION = 2
#: fingerprints kept in memory after the analysis read them (least recently used dropped):
#: a scan meets the same few candidates again and again, while a library of thousands must
#: never be held at once. One identify of an SDXL file reads 8-12 (the index's candidates and
#: their ancestors for four components, mostly the same ones); a reduced-width SDXL fingerprint
#: with its decoded views is ~5 MB, a full-size one ~30 MB. Calibrated: bench/refs_scale.py
#: (peak RSS at 1,000 references).
FP_CACHE_MAX = 16
#: metadata fields of a reference (ref.json, catalog, packs)
META_FIELDS = ("name", "parent", "note", "family", "sha256", "source", "added")
#: largest ref.json / sketch member read from a .fpref file (a hostile file cannot make us
#: parse gigabytes); real ones are a few KB
MAX_META_BYTES = 1 << 20
MAX_SKETCH_BYTES = 16 << 20
#: the catalog keeps each sketch folded to refindex.INDEX_DIM floats (the .fpref keeps it whole)
SKETCH_DTYPE = np.float32


class Reference:
    """A registered reference. ``fp`` is read from ``path`` on first use (through the
    database's LRU) unless the reference was made with its fingerprint in hand."""

    def __init__(self, name: str, fp: Fingerprint | None = None, parent: str | None = None, note: str | None = None,
                 family: str | None = None, sha256: str | None = None, source: str | None = None,
                 added: str | None = None, origin: str = "user", path: str | None = None, *,
                 dtype: str | None = None, n_tensors: int | None = None, layouts: dict | None = None,
                 db: "RefDB | None" = None):
        self.name, self.parent, self.note, self.family = name, parent, note, family
        self.sha256, self.source, self.added, self.origin, self.path = sha256, source, added, origin, path
        self._fp = fp
        self._db = db
        self.sketches: dict | None = None       # component -> sketch vector (fpcore.refindex)
        self.dtype = dtype if dtype is not None or fp is None else dominant_dtype(fp.dtypes)
        self.n_tensors = n_tensors if n_tensors is not None or fp is None else len(fp.keys)
        self.layouts = layouts if layouts is not None or fp is None else layout_digests(fp)

    def __repr__(self) -> str:
        return f"Reference(name={self.name!r}, parent={self.parent!r}, family={self.family!r}, origin={self.origin!r})"

    @property
    def fp(self) -> Fingerprint:
        """The fingerprint (read lazily; raises BadFileError if the file is damaged)."""
        if self._fp is not None:
            return self._fp
        if self._db is not None:
            return self._db.fingerprint(self)
        return read_fingerprint(self.path)

    @property
    def loaded(self) -> bool:
        return self._fp is not None

    def meta(self) -> dict:
        return {k: getattr(self, k) for k in META_FIELDS}

    def info(self) -> dict:
        d = self.meta()
        d.update(origin=self.origin, path=self.path, dtype=self.dtype)
        return d


def slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "ref"
    return s[:80]


def layout_digests(fp: Fingerprint) -> dict[str, list]:
    """component -> [digest of its (key, shape) list, number of keys]: references with the
    same digest compare alike with any file (identify's same-layout pools)."""
    out: dict[str, list] = {}
    from . import layout
    per: dict[str, list[str]] = {}
    for k, s in zip(fp.keys, fp.shapes):
        per.setdefault(layout.split(k)[0], []).append(f"{k}:{','.join(map(str, s))}")
    for comp, items in per.items():
        out[comp] = [hashlib.blake2b("\n".join(items).encode(), digest_size=12).hexdigest(), len(items)]
    return out


# -- .fpref files -------------------------------------------------------------------------
def encode_reference(meta: dict, fp: Fingerprint, sketches: dict | None = None) -> bytes:
    """The bytes of a .fpref file: ref.json, fingerprint.npz and (optional) sketch.npz."""
    from . import refindex
    meta = {k: meta.get(k) for k in META_FIELDS if meta.get(k) is not None} | {
        "origin": meta.get("origin") or "user", "fp_version": fp.version, "dtype": dominant_dtype(fp.dtypes),
        "n_tensors": len(fp.keys), "layouts": layout_digests(fp)}
    if sketches is None:
        sketches = refindex.sketches_of(fp)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("ref.json", json.dumps(meta, indent=1))
        z.writestr("fingerprint.npz", fp.serialize())
        z.writestr("sketch.npz", refindex.encode_sketches(sketches))
    return buf.getvalue()


def _read_member(z: zipfile.ZipFile, name: str, limit: int) -> bytes:
    info = z.getinfo(name)
    if info.file_size > limit:
        raise ValueError(f"{name} is {info.file_size} bytes, more than {limit}")
    with z.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{name} is larger than {limit} bytes")
    return data


def _zip(src) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src)


def read_meta(src, where=None) -> tuple[dict, dict | None]:
    """(ref.json, sketches or None) of a .fpref file or its bytes, without the fingerprint."""
    from . import refindex
    where = where or src
    try:
        with _zip(src) as z:
            meta = json.loads(_read_member(z, "ref.json", MAX_META_BYTES))
            names = set(z.namelist())
            if "fingerprint.npz" not in names:
                raise KeyError("fingerprint.npz missing")
            sk = _read_member(z, "sketch.npz", MAX_SKETCH_BYTES) if "sketch.npz" in names else None
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, RecursionError, EOFError) as e:
        raise BadFileError(f"damaged reference file ({type(e).__name__}: {e})", where) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"].strip():
        raise BadFileError("reference file has no name", where)
    for k in META_FIELDS[1:]:
        if meta.get(k) is not None and not isinstance(meta[k], str):
            raise BadFileError(f"reference file has a malformed {k!r}", where)
    sketches = refindex.decode_sketches(sk) if sk is not None else None
    return meta, sketches


def read_fingerprint(src, where=None) -> Fingerprint:
    where = where or src
    try:
        with _zip(src) as z:
            blob = z.read("fingerprint.npz")
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, EOFError) as e:
        raise BadFileError(f"damaged reference file ({type(e).__name__}: {e})", where) from None
    return Fingerprint.deserialize(blob, str(where))


def save_reference(ref: Reference, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = encode_reference(dict(ref.meta(), origin=ref.origin), ref.fp)
    path = directory / (slug(ref.name) + EXT)
    i = 2
    while path.exists() and _name_in(path) != ref.name:
        path = directory / f"{slug(ref.name)}-{i}{EXT}"
        i += 1
    paths.atomic_write(path, data)
    return path


def _name_in(path: Path) -> str | None:
    try:
        return read_meta(path)[0]["name"]
    except BadFileError:
        return None


def load_reference(path: Path, origin: str = "user") -> Reference:
    """A reference with its fingerprint read (a single file, outside any database)."""
    meta, _ = read_meta(path)
    fp = read_fingerprint(path)
    return _reference(meta, origin, str(path), fp=fp)


def _reference(meta: dict, origin: str, path: str | None, fp=None, db=None) -> Reference:
    fields = {k: meta.get(k) for k in META_FIELDS}
    return Reference(fp=fp, origin=meta.get("origin") or origin if origin == "user" else origin, path=path,
                     dtype=meta.get("dtype"), n_tensors=meta.get("n_tensors"), layouts=meta.get("layouts"), db=db,
                     **fields)


# -- the catalog of one folder ---------------------------------------------------------------
def _fallback_catalog(directory: Path) -> Path:
    h = hashlib.blake2b(os.fsencode(os.path.realpath(directory)), digest_size=10).hexdigest()
    return paths.cache_dir() / "refcatalog" / f"{h}{CATALOG}"


class FolderCatalog:
    """What the catalog knows of one folder: per file its stat, metadata and sketches."""

    def __init__(self, directory: Path, origin: str):
        self.dir, self.origin = directory, origin
        self.entries: dict[str, dict] = {}       # file name -> entry
        self.sketches: dict[str, dict] = {}      # file name -> {comp: vector}
        self.problems: list[str] = []
        self.rebuilt = 0                         # files read because the catalog did not know them

    def _stats(self) -> dict[str, tuple[int, int]]:
        out = {}
        try:
            it = os.scandir(self.dir)
        except OSError:
            return out
        with it:
            for e in it:
                if e.name.endswith(EXT) and not e.name.startswith("."):
                    try:
                        st = e.stat()
                    except OSError:
                        continue
                    out[e.name] = (st.st_size, st.st_mtime_ns)
        return out

    def _read_catalog(self) -> bool:
        from . import refindex
        for p in (self.dir / CATALOG, _fallback_catalog(self.dir)):
            try:
                with np.load(p, allow_pickle=False) as z:
                    head = json.loads(bytes(z["meta"]).decode())
                    if head.get("version") != CATALOG_VERSION or head.get("sketch") != refindex.INDEX_VERSION:
                        continue
                    entries = {e["file"]: e for e in head["entries"]}
                    sketches: dict[str, dict] = {f: {} for f in entries}
                    for comp in head.get("comps", []):
                        files, mat = z[f"files_{comp}"], z[f"sk_{comp}"]
                        for i, fi in enumerate(files):
                            sketches[head["entries"][int(fi)]["file"]][comp] = mat[i]
            except FileNotFoundError:
                continue
            except Exception as e:   # damaged: rebuilt from the files
                log.debug("ignoring catalog %s: %s", p, e)
                continue
            self.entries, self.sketches = entries, sketches
            return True
        return False

    def load(self) -> None:
        from . import refindex
        self._read_catalog()
        stats = self._stats()
        changed = False
        for f in list(self.entries):
            if f not in stats:
                del self.entries[f]
                self.sketches.pop(f, None)
                changed = True
        for f, st in sorted(stats.items()):
            e = self.entries.get(f)
            if e is not None and (e["size"], e["mtime_ns"]) == st:
                continue
            changed = True
            p = self.dir / f
            try:
                meta, sk = read_meta(p)
                if sk is None or meta.get("fp_version") is None or meta.get("layouts") is None \
                        or refindex.sketch_version(sk) != refindex.SKETCH_VERSION:
                    fp = read_fingerprint(p)   # an old .fpref: read once, remembered in the catalog
                    meta = dict(meta, fp_version=fp.version, dtype=dominant_dtype(fp.dtypes),
                                n_tensors=len(fp.keys), layouts=layout_digests(fp))
                    sk = refindex.sketches_of(fp) if fp.version == ALGO_VERSION else {}
                self.rebuilt += 1
            except BadFileError as e:
                self.entries.pop(f, None)
                self.sketches.pop(f, None)
                self.problems.append(str(e))
                log.warning("skipping reference: %s", e)
                continue
            self.entries[f] = {"file": f, "size": st[0], "mtime_ns": st[1], **{
                k: meta.get(k) for k in (*META_FIELDS, "origin", "fp_version", "dtype", "n_tensors", "layouts")}}
            self.sketches[f] = refindex.index_vectors(sk)
        if changed:
            self.save()

    def put(self, path: Path, meta: dict, sketches: dict) -> None:
        """Record a file this process just wrote (then saved with the catalog)."""
        try:
            st = path.stat()
        except OSError:
            return
        self.entries[path.name] = {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                   **{k: meta.get(k) for k in (*META_FIELDS, "origin", "fp_version", "dtype",
                                                               "n_tensors", "layouts")}}
        self.sketches[path.name] = _refindex().index_vectors(sketches)

    def drop(self, file: str) -> None:
        self.entries.pop(file, None)
        self.sketches.pop(file, None)

    def save(self) -> None:
        """Write the catalog atomically: in the folder, else in the cache dir, else nowhere
        (it is rebuilt from the files next time; nothing is lost)."""
        from . import refindex
        files = sorted(self.entries)
        pos = {f: i for i, f in enumerate(files)}
        comps = sorted({c for f in files for c in self.sketches.get(f, {})})
        arrays = {}
        for c in comps:
            have = [f for f in files if c in self.sketches.get(f, {})]
            arrays[f"files_{c}"] = np.array([pos[f] for f in have], np.int32)
            arrays[f"sk_{c}"] = np.stack([self.sketches[f][c] for f in have]).astype(SKETCH_DTYPE)
        head = {"version": CATALOG_VERSION, "sketch": refindex.INDEX_VERSION, "comps": comps,
                "entries": [self.entries[f] for f in files]}
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(head).encode(), np.uint8), **arrays)
        data = buf.getvalue()
        for p in (self.dir / CATALOG, _fallback_catalog(self.dir)):
            try:
                if not self.dir.is_dir():
                    return
                p.parent.mkdir(parents=True, exist_ok=True)
                paths.atomic_write(p, data)
                return
            except OSError as e:
                log.debug("cannot write catalog %s: %s", p, e)
        log.info("reference catalog of %s kept in memory only (no writable place)", self.dir)


def _refindex():
    from . import refindex
    return refindex


class RefDB:
    """All references: built-in ones first, then the user's (a user name shadows a built-in)."""

    def __init__(self, user_dir: str | os.PathLike | None = None, builtin_dir: str | os.PathLike | None = None):
        self.user_dir = Path(user_dir) if user_dir else paths.user_refs_dir()
        self.builtin_dir = Path(builtin_dir) if builtin_dir else paths.BUILTIN_REFS
        self._refs: dict[str, Reference] | None = None
        self._lock = threading.RLock()
        self._fps: OrderedDict[str, Fingerprint] = OrderedDict()
        self._catalogs: dict[str, FolderCatalog] = {}
        self._index = None
        self.problems: list[str] = []

    def _files(self):
        for d, origin in ((self.builtin_dir, "builtin"), (self.user_dir, "user")):
            if d.is_dir():
                for p in sorted(d.glob("*" + EXT)):
                    yield p, origin

    def token(self) -> str:
        """Changes whenever a reference file is added, removed or rewritten (cheap: stats only)."""
        from . import __version__
        h = hashlib.sha256(f"{__version__}|{ALGO_VERSION}".encode())
        for d, origin in ((self.builtin_dir, "builtin"), (self.user_dir, "user")):
            cat = FolderCatalog(d, origin)
            for name, (size, mtime) in sorted(cat._stats().items()):
                h.update(f"|{origin}:{name}:{size}:{mtime}".encode())
        return h.hexdigest()[:32]

    @property
    def refs(self) -> dict[str, Reference]:
        """name -> Reference, from the catalogs (fingerprints are read when used)."""
        if self._refs is None:
            with self._lock:   # scans identify from several threads: load once, publish when complete
                if self._refs is None:
                    self._refs = self._load()
        return self._refs

    def _load(self) -> dict[str, Reference]:
        refs: dict[str, Reference] = {}
        self._index = None
        dirs = [(self.builtin_dir, "builtin"), (self.user_dir, "user")]
        if os.path.realpath(self.builtin_dir) == os.path.realpath(self.user_dir):
            dirs = [(self.user_dir, "user")]
        for d, origin in dirs:
            cat = FolderCatalog(d, origin)
            if d.is_dir():
                cat.load()
            self._catalogs[origin] = cat
            self.problems.extend(cat.problems)
            for f, e in sorted(cat.entries.items()):
                if e.get("fp_version") != ALGO_VERSION:
                    msg = (f"{d / f}: reference made by fingerprint version {e.get('fp_version')}, "
                           f"this is {ALGO_VERSION}; re-add it")
                    log.warning(msg)
                    self.problems.append(msg)
                    continue
                r = _reference(e, origin, str(d / f), db=self)
                r.sketches = cat.sketches.get(f)
                refs[e["name"]] = r
        return refs

    # -- fingerprints, sketches, candidates ------------------------------------------------
    def fingerprint(self, ref: Reference) -> Fingerprint:
        """The fingerprint of a catalogued reference, from the LRU or its file."""
        with self._lock:
            fp = self._fps.get(ref.name)
            if fp is not None:
                self._fps.move_to_end(ref.name)
                return fp
        fp = read_fingerprint(ref.path)
        with self._lock:
            self._fps[ref.name] = fp
            while len(self._fps) > FP_CACHE_MAX:
                self._fps.popitem(last=False)
        return fp

    def sketch_of(self, ref: Reference, comp: str):
        """The catalogued sketch of one reference's component (None if it has none)."""
        if ref.sketches is None:
            if ref._fp is None:
                return None
            ref.sketches = _refindex().index_vectors(_refindex().sketches_of(ref._fp))
        return ref.sketches.get(comp)

    @property
    def index(self):
        """The candidate index over the sketches (fpcore.refindex), built on first use."""
        if self._index is None:
            from .refindex import RefIndex
            self._index = RefIndex.build(self)
        return self._index

    def candidates(self, fp: Fingerprint, comp: str, pool: list) -> list:
        """The references of ``pool`` worth the full analysis of ``comp``: all of a small pool,
        else the index's few candidates and their ancestors. Unreadable ones are left out."""
        from .refindex import select
        chosen = select(self, fp, comp, pool)
        out = []
        for r in chosen:
            try:
                r.fp
            except BadFileError as e:
                log.warning("skipping reference: %s", e)
                if str(e) not in self.problems:
                    self.problems.append(str(e))
                continue
            out.append(r)
        return out

    def layout_pool(self, fp: Fingerprint, comp: str, same_layout) -> list:
        """References whose ``comp`` has (mostly) the file's keys and shapes: ``same_layout(fp,
        ref_fp, comp)`` decided once per distinct layout, on one fingerprint of that layout."""
        groups: dict[str, list] = {}
        for r in self.refs.values():
            lay = (r.layouts or {}).get(comp)
            if lay:
                groups.setdefault(lay[0], []).append(r)
        out = []
        for members in groups.values():
            for r in members:      # the first readable one decides for its layout
                try:
                    ok = same_layout(fp, r.fp, comp)
                except BadFileError:
                    continue
                if ok:
                    out.extend(members)
                break
        return out

    # -- tree ----------------------------------------------------------------------------
    def parent(self, name: str) -> str | None:
        """The registered parent, or None."""
        p = self.refs[name].parent if name in self.refs else None
        return p if p in self.refs else None

    def orphan(self, name: str) -> bool:
        """Names a parent that is not registered."""
        r = self.refs.get(name)
        return bool(r and r.parent and r.parent not in self.refs)

    def lineage(self, name: str) -> list[str]:
        """Chain of names from the root to ``name``; unregistered declared ancestors included."""
        chain, seen, cur = [], set(), name
        while cur and cur not in seen:
            seen.add(cur)
            chain.append(cur)
            cur = self.refs[cur].parent if cur in self.refs else None
        return chain[::-1]

    def children(self, name: str) -> list[str]:
        return sorted(n for n, r in self.refs.items() if r.parent == name)

    def children_map(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for n, r in self.refs.items():
            if r.parent:
                out.setdefault(r.parent, []).append(n)
        return out

    # -- edits ---------------------------------------------------------------------------
    def check_new(self, name: str, parent: str | None, replace: bool = False) -> str:
        name = (name or "").strip()
        if not name:
            raise RefError("a reference needs a non-empty --name")
        if name in self.refs and not replace:
            raise RefError(f"a reference named {name!r} already exists; remove it first or pick another name")
        if parent == name:
            raise RefError(f"reference {name!r} cannot be its own parent")
        if parent and name in self.lineage(parent):
            raise RefError(f"making {parent!r} the parent of {name!r} would create a cycle")
        return name

    def add(self, fp: Fingerprint, name: str, parent: str | None = None, note: str | None = None,
            family: str | None = None, sha256: str | None = None, source: str | None = None,
            origin: str = "user", replace: bool = False, added: str | None = None) -> Reference:
        name = self.check_new(name, parent, replace)
        if parent and parent not in self.refs:
            log.warning("parent %r is not registered: %r is kept as an orphan until it is", parent, name)
        ref = Reference(name=name, fp=fp, parent=parent or None, note=note, family=family, sha256=sha256,
                        source=source, added=added or time.strftime("%Y-%m-%dT%H:%M:%S"), origin=origin)
        try:
            ref.path = str(save_reference(ref, self.user_dir))
        except OSError as e:
            raise RefError(f"cannot write reference: {e.strerror or e}", self.user_dir) from None
        self._registered(ref)
        return ref

    def _registered(self, ref: Reference) -> None:
        """Bring this process's catalog and index up to date with a reference just written. The
        catalog file is not rewritten here (adding one of thousands stays cheap): the next load
        sees a file it does not know and reads only its small members."""
        cat = self._catalogs.get("user")
        if cat is not None and ref.path:
            meta, sk = read_meta(Path(ref.path))
            cat.put(Path(ref.path), meta, sk or {})
            ref.sketches = cat.sketches.get(os.path.basename(ref.path))
        ref._db = self
        if ref.path and ref._fp is not None:     # not pinned: a library of thousands added in one
            with self._lock:                     # process must not keep every fingerprint
                self._fps[ref.name] = ref._fp
                while len(self._fps) > FP_CACHE_MAX:
                    self._fps.popitem(last=False)
            ref._fp = None
        self.refs[ref.name] = ref
        self._index = None

    def remove(self, name: str) -> Reference:
        r = self.refs.get(name)
        if r is None:
            raise RefError(f"no reference named {name!r}" + _suggest(name, self.refs))
        if r.origin == "builtin":
            raise RefError(f"{name!r} is built in and cannot be removed")
        try:
            os.unlink(r.path)
        except OSError as e:
            raise RefError(f"cannot remove reference file: {e.strerror or e}", r.path) from None
        del self.refs[name]
        self._fps.pop(name, None)
        self._index = None
        cat = self._catalogs.get("user")
        if cat is not None:
            cat.drop(os.path.basename(r.path))
        kids = self.children(name)
        if kids:
            log.warning("%s now name an unregistered parent %r", ", ".join(kids), name)
        return r


def _suggest(name: str, names) -> str:
    import difflib
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
