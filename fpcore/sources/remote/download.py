"""Whole-file hashes of a remote file (SHA-256, AutoV2, AutoV3) by downloading it, streamed:
nothing is written; a hash the hub published must match."""
from __future__ import annotations

from ...errors import BadFileError
from .options import RemoteOptions
from .source import open_remote_file


def download_hashes(url: str, opts: RemoteOptions | None = None, progress=None) -> dict:
    """SHA-256 / AutoV3 of a remote file by downloading it whole (streamed; nothing written)."""
    import hashlib
    f = open_remote_file(url, opts)
    try:
        size = f.size
        full, tail = hashlib.sha256(), hashlib.sha256()
        n = int.from_bytes(f.head[:8], "little") if len(f.head) >= 9 else 0
        data_start = 8 + n if f.head[8:9] == b"{" and 8 + n <= size else None
        step = 16 << 20
        done = 0
        while done < size:
            chunk = f.read(min(step, size - done), done)
            full.update(chunk)
            if data_start is not None:
                cut = max(0, data_start - done)
                if cut < len(chunk):
                    tail.update(memoryview(chunk)[cut:])
            done += len(chunk)
            if progress:
                progress(done, size)
        sha = full.hexdigest()
        if f.sha256 and f.sha256 != sha:
            raise BadFileError(f"downloaded bytes hash to {sha[:12]}…, not the published {f.sha256[:12]}… "
                               "(the file changed or the download was corrupted)", f.display)
        return {"sha256": sha, "autov2": sha[:10], "autov3": tail.hexdigest()[:12] if data_start else None,
                "size": size, "hash": "computed", "etag": f.etag}
    finally:
        f.close()
