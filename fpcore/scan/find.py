"""Which files a folder scan reads, and how many it reads at once.

``find_models`` walks the folder (symlink loops end, links leaving the allowed roots are
skipped); ``_run`` identifies every file, one or two at a time, as the disk gains from it.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from .. import identify as ident
from ..errors import FpError
from ..facts import MODEL_EXTS

log = logging.getLogger("fpcore.scan")


def _leaves(path: str, roots: tuple[str, ...]) -> bool:
    """True when ``path``'s real location (symlinks, ``..`` resolved) is inside none of ``roots``."""
    real = os.path.realpath(path)
    return not any(real == r or os.path.commonpath([real, r]) == r for r in roots)


def find_models(root: str | os.PathLike, allowed_roots=None,
                skipped: list | None = None) -> tuple[list[str], list[dict]]:
    """Model files under ``root``, recursively, each real directory visited once (symlink
    loops end there). Unreadable directories are reported, not fatal. With ``allowed_roots``
    (an exposed UI: the model folders), a file or folder whose real path leaves them is neither
    read nor walked; it is appended to ``skipped`` as {"path", "reason"} (the link, not its target)."""
    root = os.fspath(root)
    roots = tuple(os.path.realpath(r) for r in allowed_roots) if allowed_roots is not None else None

    def outside(path: str) -> bool:
        if roots is None or not _leaves(path, roots):
            return False
        if skipped is not None:
            skipped.append({"path": path, "reason": "a link leading outside the model folders"})
        return True
    errors: list[dict] = []
    if not os.path.isdir(root):
        from ..errors import BadFileError
        raise BadFileError("is not a directory", root)
    files: list[str] = []
    seen: set[str] = set()

    def onerror(e: OSError):
        errors.append(ident.error_report(e.filename or root, FpError(f"cannot list directory: {e.strerror or e}",
                                                                         e.filename or root)))
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        if "model_index.json" in filenames and dirpath != root:  # a diffusers folder is one model
            files.append(dirpath)
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in sorted(dirnames) if not outside(os.path.join(dirpath, d))]
        for f in sorted(filenames):
            if f.lower().endswith(MODEL_EXTS) and not outside(os.path.join(dirpath, f)):
                files.append(os.path.join(dirpath, f))
    return files, errors


#: files per probe batch when choosing how many files to hash at once
PROBE_FILES = 4
#: two concurrent hashes must beat one by this factor to be kept
PARALLEL_GAIN = 1.15


def _run(files: list[str], one, sizes: dict, reports: dict, workers: int | None, root: str) -> int:
    """Identify every file; returns the number of files read at once in the end.

    Unless ``workers`` is given: on a spinning disk one at a time; otherwise the first
    files are read one at a time, the next ones two at a time, and two are kept only if
    they were faster (the disk gains from it), since /sys often says "rotational" for
    virtual disks and says nothing about network shares. Faster: more files fingerprinted
    per second, a hashed file counting as many as its hash took bytes of fingerprint reads."""
    from time import perf_counter

    def batch(paths: list[str], n: int) -> float:
        t = perf_counter()
        if n > 1 and len(paths) > 1:
            with ThreadPoolExecutor(n) as ex:
                for path, rep in zip(paths, ex.map(one, paths)):
                    reports[path] = rep
        else:
            for path in paths:
                reports[path] = one(path)
        return sum(_work(reports[p], sizes.get(p, 0)) for p in paths) / max(perf_counter() - t, 1e-9)

    if workers:
        batch(files, workers)
        return workers
    if _disk_workers(root) == 1 and not _probe_anyway(root):
        batch(files, 1)
        return 1
    if len(files) < 3 * PROBE_FILES:
        batch(files, 2)
        return 2
    r1 = batch(files[:PROBE_FILES], 1)
    r2 = batch(files[PROBE_FILES:3 * PROBE_FILES], 2)
    n = 2 if r2 > PARALLEL_GAIN * r1 else 1
    log.info("reading one file at a time: %.1f, two: %.1f units/s; using %d", r1, r2, n)
    batch(files[3 * PROBE_FILES:], n)
    return n


#: bytes a file's fingerprint reads, about: one page per sampled tensor run (the unit of _work)
FINGERPRINT_WORK_BYTES = 4 << 20


def _work(rep: dict, size: int) -> float:
    """What reading one file cost the disk, in fingerprints: 0 if answered from the store."""
    st = rep.get("stats") or {}
    if "cached" in st or rep.get("error"):
        return 0.0
    hashed = size if rep.get("hash") == "computed" else 0
    return 1.0 + hashed / FINGERPRINT_WORK_BYTES


def _probe_anyway(path: str) -> bool:
    """Virtual disks (virtio, Xen) report "rotational" whatever backs them: measure instead."""
    try:
        dev = os.stat(path).st_dev
        real = os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
        return any(os.path.basename(real).startswith(p) or f"/{p}" in real for p in ("vd", "xvd"))
    except OSError:
        return False


def _disk_workers(path: str) -> int:
    """Hash files in parallel only where the disk gains from it: 1 on a spinning disk."""
    try:
        dev = os.stat(path).st_dev
        major, minor = os.major(dev), os.minor(dev)
        base = f"/sys/dev/block/{major}:{minor}"
        for cand in (f"{base}/queue/rotational", f"{base}/../queue/rotational"):
            if os.path.exists(cand):
                with open(cand) as f:
                    if f.read().strip() == "1":
                        return 1
                break
    except (OSError, ValueError):
        pass
    return max(1, min(2, os.cpu_count() or 1))
