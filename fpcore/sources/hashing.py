"""File hashes as Civitai and A1111 show them, in one streaming pass.

* SHA-256 of the whole file; AutoV2 is its first 10 hex digits.
* AutoV3: SHA-256 of the bytes after the safetensors header, first 12 hex digits
  (A1111's addnet hash, kohya's ``sshs_model_hash``).

Reading runs in its own thread and each hash in another, so the two SHA-256s and the
disk overlap (hashlib releases the GIL on large buffers).
"""
from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from dataclasses import dataclass

from ..errors import BadFileError
from .base import MAX_HEADER_BYTES, check_regular_file

log = logging.getLogger(__name__)
CHUNK = 8 * 1024 * 1024


@dataclass
class Hashes:
    sha256: str
    autov3: str | None
    size: int
    mtime_ns: int = 0
    inode: int = 0
    ctime_ns: int = 0
    dev: int = 0

    @property
    def autov2(self) -> str:
        return self.sha256[:10]

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "autov2": self.autov2, "autov3": self.autov3, "size": self.size}


def _header_end(path: str, fd: int, size: int) -> int | None:
    """Offset where safetensors tensor data starts, or None if not a safetensors file."""
    if size < 8:
        return None
    n = int.from_bytes(os.pread(fd, 8, 0), "little")
    if n > MAX_HEADER_BYTES or 8 + n > size:
        return None
    first = os.pread(fd, 1, 8)
    return 8 + n if first == b"{" else None


def hash_file(path: str | os.PathLike, progress=None, autov3: bool = True) -> Hashes:
    """Hash ``path``; ``progress(done_bytes, total_bytes)`` is called as chunks arrive.

    Raises BadFileError if the file changes size or mtime while it is read, so a hash
    is never attached to content that is no longer there."""
    p = os.fspath(path)
    check_regular_file(p)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise BadFileError(f"cannot open: {e.strerror or e}", p) from None
    try:
        st0 = os.fstat(fd)
        size = st0.st_size
        data_start = _header_end(p, fd, size) if autov3 else None
        if hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except OSError:
                pass
        full = hashlib.sha256()
        tail = hashlib.sha256() if data_start is not None else None
        qs = [queue.Queue(maxsize=4) for _ in range(2 if tail else 1)]

        def worker(q, h, skip):
            pos = 0
            while True:
                item = q.get()
                if item is None:
                    return
                if skip > pos:  # only the part after the header
                    cut = min(len(item), skip - pos)
                    h.update(memoryview(item)[cut:])
                else:
                    h.update(item)
                pos += len(item)

        threads = [threading.Thread(target=worker, args=(qs[0], full, 0), daemon=True)]
        if tail:
            threads.append(threading.Thread(target=worker, args=(qs[1], tail, data_start), daemon=True))
        for t in threads:
            t.start()
        done = 0
        err = None
        try:
            while True:
                chunk = os.read(fd, CHUNK)
                if not chunk:
                    break
                for q in qs:
                    q.put(chunk)
                done += len(chunk)
                if progress:
                    progress(done, size)
        except OSError as e:
            err = e
        finally:
            for q in qs:
                q.put(None)
            for t in threads:
                t.join()
        if err:
            raise BadFileError(f"read failed while hashing: {err.strerror or err}", p)
        st1 = os.stat(p)
        # ctime too: a rewrite in place that sets the mtime back (cp --preserve) changes only that
        if (done != size or st1.st_size != size or st1.st_mtime_ns != st0.st_mtime_ns or st1.st_ino != st0.st_ino
                or st1.st_ctime_ns != st0.st_ctime_ns):
            raise BadFileError("file changed while it was being hashed; try again when it is complete", p)
    finally:
        os.close(fd)
    return Hashes(full.hexdigest(), tail.hexdigest()[:12] if tail else None, size, st0.st_mtime_ns, st0.st_ino,
                  st0.st_ctime_ns, st0.st_dev)
