"""One reference as a file: the ``.fpref`` format (a zip of ``ref.json``, ``fingerprint.npz`` and
``sketch.npz``), its reading with size limits, its writing, and the :class:`Reference` record.

The reference database (fpcore.refs.library) keeps a folder of these files; the catalog of a folder
(fpcore.refs.folder) remembers their small members so that listing and searching read none.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

from .. import paths
from ..errors import BadFileError
from ..facts import dominant_dtype
from ..fingerprint import Fingerprint

EXT = ".fpref"
#: metadata fields of a reference (ref.json, catalog, packs)
META_FIELDS = ("name", "parent", "note", "family", "sha256", "source", "added")
#: largest ref.json / sketch member read from a .fpref file (a hostile file cannot make us
#: parse gigabytes); real ones are a few KB
MAX_META_BYTES = 1 << 20
MAX_SKETCH_BYTES = 16 << 20


class Reference:
    """A registered reference. ``fp`` is read from ``path`` on first use (through the
    database's LRU) unless the reference was made with its fingerprint in hand."""

    def __init__(self, name: str, fp: Fingerprint | None = None, parent: str | None = None, note: str | None = None,
                 family: str | None = None, sha256: str | None = None, source: str | None = None,
                 added: str | None = None, origin: str = "user", path: str | None = None, *,
                 dtype: str | None = None, n_tensors: int | None = None, layouts: dict | None = None,
                 db=None):
        self.name, self.parent, self.note, self.family = name, parent, note, family
        self.sha256, self.source, self.added, self.origin, self.path = sha256, source, added, origin, path
        self._fp = fp
        self._db = db
        self.sketches: dict | None = None       # component -> sketch vector (fpcore.refs.sketchindex)
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
    from .. import layout
    per: dict[str, list] = {}
    for k, s in zip(fp.keys, fp.shapes):
        per.setdefault(layout.component_of(k), []).append((k, s))
        if layout.in_component(k, layout.WHOLE):     # a file no rule knows is compared as one component
            per.setdefault(layout.WHOLE, []).append((k, s))
    return {comp: [layout.layout_digest(items), len(items)] for comp, items in per.items()}


# -- .fpref files -------------------------------------------------------------------------
def encode_reference(meta: dict, fp: Fingerprint, sketches: dict | None = None) -> bytes:
    """The bytes of a .fpref file: ref.json, fingerprint.npz and (optional) sketch.npz."""
    from . import sketchindex
    meta = {k: meta.get(k) for k in META_FIELDS if meta.get(k) is not None} | {
        "origin": meta.get("origin") or "user", "fp_version": fp.version, "dtype": dominant_dtype(fp.dtypes),
        "n_tensors": len(fp.keys), "layouts": layout_digests(fp)}
    if sketches is None:
        sketches = sketchindex.sketches_of(fp)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("ref.json", json.dumps(meta, indent=1))
        z.writestr("fingerprint.npz", fp.serialize())
        z.writestr("sketch.npz", sketchindex.encode_sketches(sketches))
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
    from . import sketchindex
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
    sketches = sketchindex.decode_sketches(sk) if sk is not None else None
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
    return reference_from_meta(meta, origin, str(path), fp=fp)


def reference_from_meta(meta: dict, origin: str, path: str | None, fp=None, db=None) -> Reference:
    fields = {k: meta.get(k) for k in META_FIELDS}
    return Reference(fp=fp, origin=meta.get("origin") or origin if origin == "user" else origin, path=path,
                     dtype=meta.get("dtype"), n_tensors=meta.get("n_tensors"), layouts=meta.get("layouts"), db=db,
                     **fields)

