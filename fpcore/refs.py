"""The reference database: named fingerprints that may name a parent (a tree).

References live as one ``<slug>.fpref`` file each, in the project's built-in ``refs/``
(read-only) and in the user reference dir (``FPCORE_REFS``). A reference whose parent
is named but not registered is an *orphan*: files far from it are not claimed as its
descendants, because a sibling cannot be told from a descendant without the parent.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import paths
from .errors import BadFileError, RefError
from .facts import dominant_dtype
from .fingerprint import ALGO_VERSION, Fingerprint

log = logging.getLogger(__name__)
EXT = ".fpref"


@dataclass
class Reference:
    name: str
    fp: Fingerprint = field(repr=False)
    parent: str | None = None
    note: str | None = None
    family: str | None = None
    sha256: str | None = None
    source: str | None = None
    added: str | None = None
    origin: str = "user"          # user | builtin | known_hash
    path: str | None = None       # where the reference file lives

    def info(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("fp",)}
        d["dtype"] = _main_dtype(self.fp)
        return d


def _main_dtype(fp: Fingerprint) -> str | None:
    return dominant_dtype(fp.dtypes)


def slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "ref"
    return s[:80]


def save_reference(ref: Reference, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in ref.info().items() if k not in ("path", "dtype")}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("ref.json", json.dumps(meta, indent=1))
        z.writestr("fingerprint.npz", ref.fp.serialize())
    path = directory / (slug(ref.name) + EXT)
    i = 2
    while path.exists() and load_reference(path).name != ref.name:
        path = directory / f"{slug(ref.name)}-{i}{EXT}"
        i += 1
    paths.atomic_write(path, buf.getvalue())
    return path


def load_reference(path: Path, origin: str = "user") -> Reference:
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("ref.json"))
            blob = z.read("fingerprint.npz")
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as e:
        raise BadFileError(f"damaged reference file ({type(e).__name__}: {e})", path) from None
    fp = Fingerprint.deserialize(blob, str(path))
    fields = {k: meta.get(k) for k in ("name", "parent", "note", "family", "sha256", "source", "added")}
    if not fields["name"]:
        raise BadFileError("reference file has no name", path)
    return Reference(fp=fp, origin=meta.get("origin", origin) if origin == "user" else origin, path=str(path), **fields)


class RefDB:
    """All references: built-in ones first, then the user's (a user name shadows a built-in)."""

    def __init__(self, user_dir: str | os.PathLike | None = None, builtin_dir: str | os.PathLike | None = None):
        self.user_dir = Path(user_dir) if user_dir else paths.user_refs_dir()
        self.builtin_dir = Path(builtin_dir) if builtin_dir else paths.BUILTIN_REFS
        self._refs: dict[str, Reference] | None = None
        self._lock = threading.Lock()
        self.problems: list[str] = []

    def _files(self):
        for d, origin in ((self.builtin_dir, "builtin"), (self.user_dir, "user")):
            if d.is_dir():
                for p in sorted(d.glob("*" + EXT)):
                    yield p, origin

    def token(self) -> str:
        """Changes whenever a reference file is added, removed or rewritten (cheap: stats only)."""
        import hashlib
        from . import __version__
        h = hashlib.sha256(f"{__version__}|{ALGO_VERSION}".encode())
        for p, origin in self._files():
            try:
                st = p.stat()
            except OSError:
                continue
            h.update(f"|{origin}:{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:32]

    @property
    def refs(self) -> dict[str, Reference]:
        """name -> Reference, loaded on first use (a user name shadows a built-in one)."""
        if self._refs is None:
            with self._lock:   # scans identify from several threads: load once, publish when complete
                if self._refs is None:
                    self._refs = self._load()
        return self._refs

    def _load(self) -> dict[str, Reference]:
        refs: dict[str, Reference] = {}
        for p, origin in self._files():
            try:
                r = load_reference(p, origin)
            except BadFileError as e:
                log.warning("skipping reference: %s", e)
                self.problems.append(str(e))
                continue
            if r.fp.version != ALGO_VERSION:
                msg = f"{p}: reference made by fingerprint version {r.fp.version}, this is {ALGO_VERSION}; re-add it"
                log.warning(msg)
                self.problems.append(msg)
                continue
            refs[r.name] = r
        return refs

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

    # -- edits ---------------------------------------------------------------------------
    def add(self, fp: Fingerprint, name: str, parent: str | None = None, note: str | None = None,
            family: str | None = None, sha256: str | None = None, source: str | None = None,
            origin: str = "user", replace: bool = False) -> Reference:
        name = name.strip()
        if not name:
            raise RefError("a reference needs a non-empty --name")
        if name in self.refs and not replace:
            raise RefError(f"a reference named {name!r} already exists; remove it first or pick another name")
        if parent == name:
            raise RefError(f"reference {name!r} cannot be its own parent")
        if parent and name in self.lineage(parent):
            raise RefError(f"making {parent!r} the parent of {name!r} would create a cycle")
        if parent and parent not in self.refs:
            log.warning("parent %r is not registered: %r is kept as an orphan until it is", parent, name)
        ref = Reference(name=name, fp=fp, parent=parent or None, note=note, family=family, sha256=sha256,
                        source=source, added=time.strftime("%Y-%m-%dT%H:%M:%S"), origin=origin)
        try:
            ref.path = str(save_reference(ref, self.user_dir))
        except OSError as e:
            raise RefError(f"cannot write reference: {e.strerror or e}", self.user_dir) from None
        self.refs[name] = ref
        return ref

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
        kids = self.children(name)
        if kids:
            log.warning("%s now name an unregistered parent %r", ", ".join(kids), name)
        return r


def _suggest(name: str, names) -> str:
    import difflib
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
