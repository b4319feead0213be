"""A model at a URL to a report: read by range requests (the header and the sampled ranges),
cached by URL + ETag + size, hashed only where the hub publishes the SHA-256."""
from __future__ import annotations

import time

from .. import arch
from ..sources import open_source
from .read import _remote_json, fingerprint_open, remote_identity
from .verdict import file_report, report_outdated


def identify_url(url: str, db, store=None, remote=None) -> dict:
    """Report for a model at a URL, read by range requests: the header and the sampled ranges.

    ``sha256`` (``hash: "published"``) only where the hub publishes it (Hugging Face's LFS hash,
    Civitai's model-version API); the whole file is never downloaded here. The fingerprint is
    cached by URL + ETag + size (and by the published SHA-256): a changed file is read again."""
    t0 = time.perf_counter()
    with open_source(url, remote) as src:
        rid, rsrc = remote_identity(src)
        shown, sha = src.path, rid.sha256
        token = db.token() if store is not None else None
        if store is not None and sha:
            rep = store.get_report(sha, token)
            if rep is not None and not arch.outdated(rep.get("architecture")) and not report_outdated(rep):
                rep.update(path=shown, hash="published", remote=_remote_json(rid, rsrc))
                rep.setdefault("stats", {}).update(cached="report", seconds=round(time.perf_counter() - t0, 4))
                return rep
        cached = store.get_remote(rid.url, rid.etag, rid.size) if store is not None else None
        if cached is None and store is not None and sha:
            hit = store.get_fingerprint(sha)
            cached = (*hit, sha) if hit else None
        if cached and not arch.outdated(cached[1]):
            fp, arch_json, meta, stats, _ = cached
            a = arch.ArchResult.from_json(arch_json)
            stats = dict(stats, cached="fingerprint")
        else:
            fp, a, meta, stats = fingerprint_open(src)   # raises (nothing cached) if the file changes
            stats.update(rsrc.stats)
            if store is not None:
                store.put_remote(rid.url, rid.etag, rid.size, sha, fp, a.to_json(), meta, stats)
                if sha:
                    store.put_fingerprint(sha, fp, a.to_json(), meta, stats)
        remote_info = _remote_json(rid, rsrc)
    rep, registered = file_report(shown, sha, None, "published", fp, a, meta, stats, db, t0)
    if registered:
        token = db.token() if store is not None else None
    rep["remote"] = remote_info
    if store is not None and sha:
        store.put_report(sha, token, rep)
    return rep
