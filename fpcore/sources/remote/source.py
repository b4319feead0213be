"""The source: a safetensors file at a URL, opened through the same validation as a local file
(``safetensors.parse_header``, ``element_ranges``, ``coalesce``), its sampled ranges coalesced
wider than on disk (a request costs a round trip)."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import ExposureError, UnsupportedError
from ..base import MAX_HEADER_BYTES, Source
from ..safetensors import coalesce, element_ranges, parse_header_bytes, split_spans
from .fsspecfile import FsspecFile
from .httpfile import HttpFile
from .options import RemoteOptions
from .urls import hub_url, parse_hf, redact

#: ranges closer than this share a request: a round trip (tens of ms) costs more than a few
#: hundred KB at broadband speed, and it keeps SDXL under 200 spans (bench/remote_speed.py)
REMOTE_GAP = 256 * 1024


def open_remote_file(url: str, opts: RemoteOptions | None = None):
    """An HttpFile or FsspecFile for ``url`` (a hub URL resolved first)."""
    display = redact(url)
    hub = parse_hf(url)
    if hub is not None:
        target = hub_url(hub) if url.startswith("hf://") else url.replace("/blob/", "/resolve/", 1)
        return HttpFile(target, display, opts, hub=hub)
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        return HttpFile(url, display, opts)
    if opts is not None and opts.allow_private is not None:
        raise ExposureError(f"{display}: only http, https and hf:// URLs are read on a UI reachable by others")
    return FsspecFile(url, display, opts)


@dataclass
class RemoteIdentity:
    """What identifies a remote file's content without reading it: the URL as given (redacted),
    ETag, size, and the published SHA-256 when the hub gives one."""

    url: str
    etag: str | None
    size: int
    sha256: str | None
    sha256_source: str | None


class RemoteSafetensors(Source):
    """A safetensors file at a URL: the header from one or two requests, sampled ranges by
    coalesced concurrent range requests."""

    format = "safetensors"

    def __init__(self, f, path: str):
        super().__init__(path)
        self.f = f
        self.size = f.size
        self.remote = RemoteIdentity(f.display, f.etag, f.size, f.sha256, f.sha256_source)
        self._count(len(f.head))
        self.metadata, self.header_len, self.tensors = self._header()
        self.data_start = 8 + self.header_len

    def _header(self):
        from ...errors import HeaderError
        from ..safetensors import parse_header
        if self.size < 8 or len(self.f.head) < 8:
            return parse_header(self._read, self.size, self.path)
        n = int.from_bytes(self.f.head[:8], "little")
        if n > MAX_HEADER_BYTES or n < 2 or 8 + n > self.size:
            return parse_header(self._read, self.size, self.path)   # the same errors as a local file
        raw = self.f.head[8:8 + n]
        if len(raw) < n:   # the header is larger than the first read: one more request for the rest
            raw = raw + self._read(n - len(raw), 8 + len(raw))
        if len(raw) != n:
            raise HeaderError("header cut short", self.path)
        return parse_header_bytes(raw, self.size, self.path)

    def _read(self, n: int, offset: int) -> bytes:
        data = self.f.read(n, offset)
        if offset + n > len(self.f.head):
            self._count(len(data))
        return data

    @property
    def stats(self) -> dict:
        return {"requests": self.f.requests, "bytes_transferred": self.f.bytes, "multi_range": self.f.multi_range}

    def read_ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        spans = coalesce(ranges, REMOTE_GAP)
        blobs = self.f.read_spans([(s[0], s[1]) for s in spans])
        self._count(sum(len(b) for b in blobs))
        return split_spans(ranges, spans, blobs)

    def read_elements(self, requests: list[tuple[str, int, int]]) -> list[bytes]:
        return self.read_ranges(element_ranges(self.tensors, requests))

    def close(self) -> None:
        f = getattr(self, "f", None)
        if f is not None:
            f.close()


def open_url(url: str, opts: RemoteOptions | None = None) -> Source:
    """Open a model at a URL (safetensors; other formats are named and refused)."""
    f = open_remote_file(url, opts)
    try:
        magic = f.head[:4]
        # a safetensors file starts with its header length (any first byte, 0x80 included), then "{"
        looks_safetensors = f.head[8:9] == b"{"
        if magic == b"GGUF" or magic[:2] == b"PK" or (magic[:1] == b"\x80" and not looks_safetensors):
            what = "a GGUF file" if magic == b"GGUF" else "a torch checkpoint (.ckpt/.pt)"
            raise UnsupportedError(f"{what}: remote reading supports safetensors files; download it first", f.display)
        return RemoteSafetensors(f, f.display)
    except BaseException:
        f.close()
        raise
