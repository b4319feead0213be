"""What a worker does with one entry: fingerprint it and return the reference file's bytes with
its outcome. It never raises for a bad entry (a bad file is an outcome, not a task failure the
engine would retry); only the loss of the worker makes the engine run it again elsewhere.

A URL is read by the remote source (range reads, the hub's published SHA-256); a local path is
fingerprinted and hashed as ``refs add`` does. Every request of every file a worker process reads
at once goes through one :class:`~fpcore.sources.remote.Gate` per process: at most ``in_flight``
requests at a time, and a server's Retry-After holds every file of the process back.

Credentials: the worker uses the tokens of its own environment (``HF_TOKEN``,
``CIVITAI_API_TOKEN``), each sent only to its own host by the remote source; none travels in a
task. Errors and the stored ``source`` show URLs redacted.
"""
from __future__ import annotations

import os
import threading
import time

#: one gate per worker process and in-flight limit (threads of a process share it)
_GATES: dict[int, object] = {}
_GATES_LOCK = threading.Lock()


def _gate(limit: int):
    from ..sources.remote import Gate
    with _GATES_LOCK:
        g = _GATES.get(limit)
        if g is None:
            g = _GATES[limit] = Gate(limit)
        return g


def _public(source: str) -> str:
    from ..sources.remote import is_url, redact
    return redact(source) if is_url(source) else os.path.basename(source.rstrip("/\\"))


def _check_published(sha: str | None, size: int, shown: str) -> None:
    """A published SHA-256 that names a known release must come with that release's size."""
    if not sha:
        return
    from ..refs import known
    from ..errors import BadFileError
    entry = known.lookup(sha)
    if not entry:
        return
    want = next((entry.get(k) for k in known.SIZE_FIELDS if isinstance(entry.get(k), int)), None)
    if want is not None and size and want != size:
        raise BadFileError(f"the hub publishes the SHA-256 of {known.describe(entry)} ({want:,} bytes) for a file "
                           f"of {size:,} bytes; not trusted", shown)


def run_entry(entry: dict, settings: dict) -> dict:
    """Fingerprint ``entry`` ({key, line, source, name, parent}); returns its outcome (see
    fpcore.indexer.journal.COLUMNS) with ``blob``, the .fpref bytes, when it is ``ok``."""
    t0 = time.perf_counter()
    out = {"key": entry["key"], "status": "error", "error": None, "sha256": None, "sha256_from": None,
           "family": None, "size": None, "bytes": 0, "requests": None, "seconds": None, "blob": None,
           "worker": f"{os.uname().nodename}:{os.getpid()}"}
    shown = entry.get("shown") or "?"
    try:
        out.update(_fingerprint(entry, settings))
        out["status"] = "ok"
    except Exception as e:   # one line, credentials masked; never a task failure
        from ..errors import FpError
        from ..sources.remote import mask
        msg = str(e) if isinstance(e, FpError) else f"{shown}: unexpected {type(e).__name__}: {e}"
        out["error"] = mask(" ".join(msg.split()))[:1000]
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _fingerprint(entry: dict, settings: dict) -> dict:
    from ..refs import fpref
    from ..errors import UsageError
    from ..fingerprint import ALGO_VERSION
    from ..identify import fingerprint_open, remote_identity
    from ..sources import open_source
    from ..sources.remote import RemoteOptions, is_url
    if settings.get("fp_version") not in (None, ALGO_VERSION):
        raise UsageError(f"this worker's fpcore makes fingerprint version {ALGO_VERSION}, the job's is "
                         f"{settings['fp_version']}: install the same model-fingerprint version on every worker")
    source = entry["source"]
    opts = RemoteOptions(connections=int(settings.get("connections") or 4),
                         gate=_gate(int(settings.get("in_flight") or 16)))
    url = is_url(source)
    with open_source(source, opts if url else None) as src:
        rid, rsrc = remote_identity(src)
        fp, a, _, stats = fingerprint_open(src)
        size = src.size
        if rid is not None:
            sha, sha_from = rid.sha256, rid.sha256_source
            _check_published(sha, rid.size, src.path)
            rstats = rsrc.stats
            nbytes, nreq = rstats.get("bytes_transferred"), rstats.get("requests")
        else:
            sha = sha_from = None
            nbytes, nreq = stats.get("bytes_read"), None
    if not url and settings.get("hash_local", True) and os.path.isfile(source):
        from ..sources.hashing import hash_file
        sha, sha_from = hash_file(source).sha256, "computed"
    meta = {"name": entry["name"], "parent": entry.get("parent"), "family": a.family, "sha256": sha,
            "source": _public(source), "added": time.strftime("%Y-%m-%dT%H:%M:%S"), "origin": "pack"}
    blob = fpref.encode_reference(meta, fp)
    return {"sha256": sha, "sha256_from": sha_from, "family": a.family, "size": size, "bytes": nbytes or 0,
            "requests": nreq, "blob": blob}
