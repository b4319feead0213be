"""From a path, URL or open source to what identify works on: the header's facts (``inspect``)
and the fingerprint with its architecture, raw metadata and read statistics."""
from __future__ import annotations

import os
import time

from .. import arch, layout
from . import provenance
from ..fingerprint import Fingerprint, canonical_tensors, fingerprint_source
from ..sources import open_source


def _header_facts(src, ct: dict | None = None) -> tuple[dict, dict, arch.ArchResult]:
    ct = ct if ct is not None else canonical_tensors(src.tensors, src.path)
    shapes = {k: tuple(t.shape) for k, t in ct.items()}
    quant = getattr(src, "quant", None) or {}     # GGUF block types: precision by the stored bytes
    dts = {k: quant.get(t.key, t.dtype) for k, t in ct.items()}
    where = {k: layout.container_of(t.key) for k, t in ct.items()}
    return shapes, dts, arch.detect(shapes, dts, src.metadata, where)


def inspect(path: str | os.PathLike, why: bool = False, remote=None) -> dict:
    """Header-only report: architecture, components, dtypes, metadata. ``remote``: options for a
    URL (``sources.remote.RemoteOptions``)."""
    p = os.fspath(path)
    with open_source(p, remote) as src:
        shapes, dts, a = _header_facts(src)
        comps: dict[str, dict] = {}
        for k, d in dts.items():
            c = layout.component_of(k)
            e = comps.setdefault(c, {"tensors": 0, "dtypes": {}})
            e["tensors"] += 1
            e["dtypes"][d] = e["dtypes"].get(d, 0) + 1
        rep = {"path": p, "format": src.format, "size": src.size, "architecture": a.to_json(),
               "tensors": len(src.tensors), "components_detail": comps,
               "metadata": provenance.extract(src.metadata), "error": None}
        if why:
            rep["rules"] = {"matched": a.rule, "rejected": [{"rule": r, "why": w} for r, w in a.rejected]}
        rid, rsrc = remote_identity(src)
        if rid is not None:
            rep.update(path=src.path, sha256=rid.sha256, hash="published" if rid.sha256 else "not computed",
                       remote=_remote_json(rid, rsrc))
        return rep


def fingerprint_open(src) -> tuple[Fingerprint, arch.ArchResult, dict, dict]:
    """(fingerprint, architecture, raw metadata, read stats) of an open source (file, folder, memory)."""
    ct = canonical_tensors(src.tensors, src.path)
    _, _, a = _header_facts(src, ct)
    t0 = time.perf_counter()
    fp = fingerprint_source(src, ct)
    stats = {"fingerprint_seconds": round(time.perf_counter() - t0, 4),
             "bytes_read": getattr(src, "bytes_read", None), "file_size": src.size, "format": src.format}
    fp.info["family"] = a.family
    return fp, a, dict(src.metadata), stats


def fingerprint_path(path: str | os.PathLike, remote=None) -> tuple[Fingerprint, arch.ArchResult, dict, dict]:
    """(fingerprint, architecture, raw metadata, read stats) of a model file, folder or URL."""
    with open_source(os.fspath(path), remote) as src:
        return fingerprint_open(src)


def remote_identity(src):
    """(RemoteIdentity, the remote source) of a source opened from a URL (a view's too), else (None, None)."""
    for s in (src, *(getattr(src, "_files", None) or [])):
        if getattr(s, "remote", None) is not None:
            return s.remote, s
    return None, None


def _remote_json(rid, rsrc) -> dict:
    return {"url": rid.url, "etag": rid.etag, "size": rid.size, "sha256_from": rid.sha256_source,
            **(rsrc.stats if rsrc is not None else {})}
