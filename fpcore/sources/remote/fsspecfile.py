"""Any other fsspec URL (``s3://``, ``gs://``, ``memory://``...), read with the filesystem's own
range reads (when fsspec and that filesystem are installed)."""
from __future__ import annotations

from ...errors import BadFileError, UnsupportedError
from .hub import SHA256_RE
from .options import HEADER_PROBE, RemoteOptions
from .urls import mask, redact


class FsspecFile:
    """Any other fsspec URL (s3://, gs://, memory://...), read with the filesystem's own range reads."""

    def __init__(self, url: str, display: str | None = None, opts: RemoteOptions | None = None):
        self.url, self.display = url, display or redact(url)
        self.opts = opts or RemoteOptions()
        try:
            import fsspec
            from fsspec.core import url_to_fs
        except ImportError:
            raise UnsupportedError("reading this URL needs fsspec and its filesystem (pip install fsspec s3fs / "
                                   "gcsfs ...)", self.display) from None
        try:
            self.fs, self.fpath = url_to_fs(url)
        except (ImportError, ValueError) as e:
            raise UnsupportedError(f"no filesystem for this URL ({mask(str(e))[:120]})", self.display) from None
        del fsspec
        try:
            info = self.fs.info(self.fpath)
        except FileNotFoundError:
            raise BadFileError("not found", self.display) from None
        except Exception as e:
            raise BadFileError(f"cannot read ({type(e).__name__}: {mask(str(e))[:120]})", self.display) from None
        if info.get("type") == "directory":
            raise BadFileError("is a directory, not a model file", self.display)
        self.size = int(info.get("size") or 0)
        self.etag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("generation")
        self.etag = str(self.etag) if self.etag else None
        sha = str(info.get("ChecksumSHA256") or info.get("sha256") or "").lower()
        self.sha256 = sha if SHA256_RE.match(sha) else None
        self.sha256_source = "filesystem" if self.sha256 else None
        self.requests, self.bytes = 1, 0
        self.multi_range = False
        self.final_url = url
        self.head = self.read(min(HEADER_PROBE, self.size), 0) if self.size else b""

    def _cat(self, starts, ends) -> list[bytes]:
        try:
            if len(starts) == 1:
                blobs = [self.fs.cat_file(self.fpath, start=starts[0], end=ends[0])]
            else:
                blobs = self.fs.cat_ranges([self.fpath] * len(starts), starts, ends, on_error="raise")
        except Exception as e:
            raise BadFileError(f"read failed ({type(e).__name__}: {mask(str(e))[:120]})", self.display) from None
        self.requests += len(starts)
        self.bytes += sum(len(b) for b in blobs)
        for s, e, b in zip(starts, ends, blobs):
            if len(b) != e - s:
                raise BadFileError(f"file ended early: wanted {e - s} bytes at offset {s}, got {len(b)}", self.display)
        return list(blobs)

    def read(self, n: int, offset: int) -> bytes:
        if offset + n <= len(getattr(self, "head", b"")):
            return self.head[offset:offset + n]
        return self._cat([offset], [offset + n])[0] if n > 0 else b""

    def read_spans(self, spans):
        return self._cat([s for s, _ in spans], [e for _, e in spans]) if spans else []

    def close(self) -> None:
        pass
