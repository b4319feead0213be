"""The reference database: named fingerprints that may name a parent (a tree).

References live as one ``<slug>.fpref`` file each, in the project's built-in ``refs/``
(read-only) and in the user reference dir (``FPCORE_REFS``). A reference whose parent
is named but not registered is an *orphan*: files far from it are not claimed as its
descendants, because a sibling cannot be told from a descendant without the parent.

Libraries of thousands: each folder has a small *catalog* (``.fpcatalog`` beside the
``.fpref`` files) holding every reference's names, parent, family, hashes, component
layouts and sketches (fpcore.refs.sketchindex). Listing, adding and the candidate search read
only the catalog; a reference's fingerprint is read from its file when the analysis
needs it and kept in a small LRU (FP_CACHE_MAX). The catalog is checked against the
files' sizes and modification times on every load and brought up to date for what
changed (a file another process added or removed, an old ``.fpref`` without a sketch);
a folder that cannot be written keeps its catalog in the cache dir, or in memory.

The ``.fpref`` file and the :class:`Reference` record are in fpcore.refs.fpref, the catalog in
fpcore.refs.folder.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from .. import paths
from ..errors import RefError
from ..fingerprint import ALGO_VERSION, Fingerprint
from . import fpref
from .candidates import CandidateSearch
from .folder import FolderCatalog
from .fpref import EXT, Reference, read_meta, reference_from_meta, save_reference
from .lineage import LineageTree

log = logging.getLogger(__name__)
#: fingerprints kept in memory after the analysis read them (least recently used dropped):
#: a scan meets the same few candidates again and again, while a library of thousands must
#: never be held at once. One identify of an SDXL file reads 8-12 (the index's candidates and
#: their ancestors for four components, mostly the same ones); a reduced-width SDXL fingerprint
#: with its decoded views is ~5 MB, a full-size one ~30 MB. Calibrated: bench/refs_scale.py
#: (peak RSS at 1,000 references).
FP_CACHE_MAX = 16


class RefDB(LineageTree, CandidateSearch):
    """All references: built-in ones first, then the user's (a user name shadows a built-in). The
    lineage tree (fpcore.refs.lineage) and the candidate search (fpcore.refs.candidates) read it."""

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
        from .. import __version__
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
                r = reference_from_meta(e, origin, str(d / f), db=self)
                r.sketches = cat.sketches.get(f)
                refs[e["name"]] = r
        return refs

    # -- fingerprints ----------------------------------------------------------------------
    def fingerprint(self, ref: Reference) -> Fingerprint:
        """The fingerprint of a catalogued reference, from the LRU or its file."""
        with self._lock:
            fp = self._fps.get(ref.name)
            if fp is not None:
                self._fps.move_to_end(ref.name)
                return fp
        fp = fpref.read_fingerprint(ref.path)
        with self._lock:
            self._fps[ref.name] = fp
            while len(self._fps) > FP_CACHE_MAX:
                self._fps.popitem(last=False)
        return fp

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
