"""The catalog of one reference folder: a ``.fpcatalog`` file beside the ``.fpref`` files holding
every reference's names, parent, family, hashes, component layouts and folded sketches, so that
listing, adding and the candidate search read no fingerprint.

It is checked against the files' sizes and modification times on every load and brought up to
date for what changed (a file another process added or removed, an old ``.fpref`` without a
sketch); a folder that cannot be written keeps its catalog in the cache dir, or in memory.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from .. import paths
from . import fpref
from ..errors import BadFileError
from ..facts import dominant_dtype
from ..fingerprint import ALGO_VERSION
from .fpref import EXT, META_FIELDS, layout_digests, read_meta

log = logging.getLogger("fpcore.refs")
#: the catalog file in each reference folder (hidden: not a reference itself)
CATALOG = ".fpcatalog"
#: bump when the catalog's content changes; an older catalog is rebuilt from the files
CATALOG_VERSION = 2
#: the catalog keeps each sketch folded to sketchindex.INDEX_DIM floats (the .fpref keeps it whole)
SKETCH_DTYPE = np.float32


def fallback_catalog(directory: Path) -> Path:
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
        from . import sketchindex
        for p in (self.dir / CATALOG, fallback_catalog(self.dir)):
            try:
                with np.load(p, allow_pickle=False) as z:
                    head = json.loads(bytes(z["meta"]).decode())
                    if head.get("version") != CATALOG_VERSION or head.get("sketch") != sketchindex.INDEX_VERSION:
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
        from . import sketchindex
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
                        or sketchindex.sketch_version(sk) != sketchindex.SKETCH_VERSION:
                    fp = fpref.read_fingerprint(p)   # an old .fpref: read once, remembered in the catalog
                    meta = dict(meta, fp_version=fp.version, dtype=dominant_dtype(fp.dtypes),
                                n_tensors=len(fp.keys), layouts=layout_digests(fp))
                    sk = sketchindex.sketches_of(fp) if fp.version == ALGO_VERSION else {}
                self.rebuilt += 1
            except BadFileError as e:
                self.entries.pop(f, None)
                self.sketches.pop(f, None)
                self.problems.append(str(e))
                log.warning("skipping reference: %s", e)
                continue
            self.entries[f] = {"file": f, "size": st[0], "mtime_ns": st[1], **{
                k: meta.get(k) for k in (*META_FIELDS, "origin", "fp_version", "dtype", "n_tensors", "layouts")}}
            self.sketches[f] = sketchindex.index_vectors(sk)
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
        self.sketches[path.name] = _sketchindex().index_vectors(sketches)

    def drop(self, file: str) -> None:
        self.entries.pop(file, None)
        self.sketches.pop(file, None)

    def save(self) -> None:
        """Write the catalog atomically: in the folder, else in the cache dir, else nowhere
        (it is rebuilt from the files next time; nothing is lost)."""
        from . import sketchindex
        files = sorted(self.entries)
        pos = {f: i for i, f in enumerate(files)}
        comps = sorted({c for f in files for c in self.sketches.get(f, {})})
        arrays = {}
        for c in comps:
            have = [f for f in files if c in self.sketches.get(f, {})]
            arrays[f"files_{c}"] = np.array([pos[f] for f in have], np.int32)
            arrays[f"sk_{c}"] = np.stack([self.sketches[f][c] for f in have]).astype(SKETCH_DTYPE)
        head = {"version": CATALOG_VERSION, "sketch": sketchindex.INDEX_VERSION, "comps": comps,
                "entries": [self.entries[f] for f in files]}
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(head).encode(), np.uint8), **arrays)
        data = buf.getvalue()
        for p in (self.dir / CATALOG, fallback_catalog(self.dir)):
            try:
                if not self.dir.is_dir():
                    return
                p.parent.mkdir(parents=True, exist_ok=True)
                paths.atomic_write(p, data)
                return
            except OSError as e:
                log.debug("cannot write catalog %s: %s", p, e)
        log.info("reference catalog of %s kept in memory only (no writable place)", self.dir)


def _sketchindex():
    from . import sketchindex
    return sketchindex

