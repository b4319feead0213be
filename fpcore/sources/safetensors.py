"""Safetensors files: a validated header and sampled byte ranges.

Only the header and the byte ranges the fingerprint asks for are read. The header is
checked the way the safetensors Rust core checks it (size cap, JSON, dtype table,
contiguous offsets inside the file, byte length = elements x item size), so a lying
header is reported as such instead of causing huge allocations or reads past the end.
``parse_header`` works on any byte reader, so a remote file is validated exactly like a
local one.
"""
from __future__ import annotations

import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .. import dtypes
from ..errors import BadFileError, HeaderError, UnsupportedError
from .base import MAX_HEADER_BYTES, Source, TensorInfo, open_fd, pread

log = logging.getLogger(__name__)

#: read ranges closer than this are read in one request: one 16 KiB read costs about the same
#: as a 4 KiB one on SSDs and disks, and it merges a layer's weight, bias and norm runs
COALESCE_GAP = 16 * 1024
#: concurrent reads: a cold read is latency-bound, so overlap a few (bench/speed.py)
READ_THREADS = 8
#: above this many spans, reads are spread over threads; below it the thread start costs more
THREADED_SPANS = 4


def parse_header(read: Callable[[int, int], bytes], size: int, path: str) -> tuple[dict[str, str], int, dict[str, TensorInfo]]:
    """Validate a safetensors header. ``read(n, offset)`` returns exactly n bytes (or raises).
    Returns (metadata, header length, tensors by key)."""
    p = path
    if size < 8:
        raise HeaderError(f"file is {size} bytes, too small for a safetensors header (truncated or empty)", p)
    n = int.from_bytes(read(8, 0), "little")
    if n > MAX_HEADER_BYTES:
        raise HeaderError(f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit (not a safetensors file, or corrupt)", p)
    if n < 2:
        raise HeaderError(f"header length {n} is too small for a JSON object", p)
    if 8 + n > size:
        raise HeaderError(f"header length {n} runs past the end of the {size}-byte file (truncated download?)", p)
    return parse_header_bytes(read(n, 8), size, p)


def parse_header_bytes(raw: bytes, size: int, path: str) -> tuple[dict[str, str], int, dict[str, TensorInfo]]:
    """Validate the JSON header ``raw`` (the n bytes after the 8-byte length) of a ``size``-byte file."""
    p, n = path, len(raw)
    try:
        header = json.loads(raw.decode("utf-8"))
    except RecursionError:  # [[[[... thousands deep: json gives up on the C stack's behalf
        raise HeaderError("header JSON is nested too deeply to be a safetensors header", p) from None
    except (UnicodeDecodeError, ValueError) as e:
        raise HeaderError(f"header is not valid UTF-8 JSON ({type(e).__name__}: {str(e)[:80]})", p) from None
    if not isinstance(header, dict):
        raise HeaderError("header JSON is not an object", p)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise HeaderError("__metadata__ is not an object", p)
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    data_start = 8 + n
    data_len = size - data_start
    entries = []
    for key, info in header.items():
        if not isinstance(info, dict):
            raise HeaderError(f"tensor {key!r}: entry is not an object", p)
        dt = info.get("dtype")
        if not isinstance(dt, str):
            raise HeaderError(f"tensor {key!r}: missing dtype", p)
        d = dtypes.get(dt)
        if d is None:
            raise UnsupportedError(f"tensor {key!r}: unknown dtype {dt!r}", p)
        shape = info.get("shape")
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise HeaderError(f"tensor {key!r}: shape {shape!r} is not a list of non-negative integers", p)
        offs = info.get("data_offsets")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
            raise HeaderError(f"tensor {key!r}: data_offsets {offs!r} is not a pair of integers", p)
        b, e = offs
        if b < 0 or e < b:
            raise HeaderError(f"tensor {key!r}: data_offsets {offs} are negative or reversed", p)
        numel = math.prod(shape)  # python ints: no overflow
        if numel * d.itemsize != e - b:
            raise HeaderError(
                f"tensor {key!r}: shape {shape} x {dt} needs {numel * d.itemsize} bytes but data_offsets span {e - b}", p)
        entries.append((b, e, key, dt, tuple(shape)))
    entries.sort(key=lambda t: (t[0], t[1]))
    pos = 0
    for b, e, key, _, _ in entries:
        if b != pos:
            what = "overlaps the previous tensor" if b < pos else f"leaves a gap of {b - pos} bytes"
            raise HeaderError(f"tensor {key!r}: data_offsets start at {b}, which {what}", p)
        pos = e
    if pos > data_len:
        raise HeaderError(
            f"header describes {pos} bytes of tensor data but the file holds {data_len} (truncated download?)", p)
    if pos < data_len:
        raise HeaderError(f"{data_len - pos} bytes after the last tensor are not described by the header", p)
    tensors = {key: TensorInfo(key, dt, shape, data_start + b, e - b) for b, e, key, dt, shape in entries}
    return metadata, n, tensors


def coalesce(ranges: list[tuple[int, int]], gap: int = COALESCE_GAP) -> list[list]:
    """Group absolute (offset, length) ranges into spans [start, end, [range indices]] in offset
    order; ranges closer than ``gap`` share a span."""
    order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
    spans: list[list] = []
    for i in order:
        o, n = ranges[i]
        if spans and o <= spans[-1][1] + gap:
            spans[-1][1] = max(spans[-1][1], o + n)
            spans[-1][2].append(i)
        else:
            spans.append([o, o + n, [i]])
    return spans


def split_spans(ranges: list[tuple[int, int]], spans: list[list], blobs: list[bytes]) -> list[bytes]:
    """The bytes of each range, cut from the span blobs that hold them."""
    out: list[bytes] = [b""] * len(ranges)
    for (start, _, idxs), blob in zip(spans, blobs):
        mv = memoryview(blob)
        for i in idxs:
            o, n = ranges[i]
            out[i] = bytes(mv[o - start:o - start + n])
    return out


def element_ranges(tensors: dict[str, TensorInfo], requests: list[tuple[str, int, int]]) -> list[tuple[int, int]]:
    """Absolute byte ranges of (key, start, count) element runs."""
    ranges = []
    for key, start, count in requests:
        t = tensors[key]
        item = dtypes.DTYPES[t.dtype].itemsize
        ranges.append((t.offset + start * item, count * item))
    return ranges


class SafetensorsFile(Source):
    """A local safetensors file with a validated header. Use as a context manager."""

    format = "safetensors"

    _fd = -1

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self._fd, self.identity = open_fd(self.path)
        try:
            self.size = self.identity.size
            self.metadata, self.header_len, self.tensors = parse_header(self._pread, self.size, self.path)
            self.data_start = 8 + self.header_len
        except BaseException:
            self.close()
            raise

    def _pread(self, n: int, offset: int) -> bytes:
        return pread(self._fd, n, offset, self.path)

    def read_ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Read absolute (offset, length) ranges; nearby ranges are read together, in offset
        order, and requests run concurrently (cold reads are latency-bound)."""
        if not ranges:
            return []
        if hasattr(os, "posix_fadvise"):
            try:  # no readahead: we want only the pages we ask for
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)
            except OSError:
                pass
        spans = coalesce(ranges)
        if len(spans) > THREADED_SPANS:
            # one task per thread over interleaved spans: per-future overhead would dominate
            n = min(READ_THREADS, len(spans))
            groups = [spans[i::n] for i in range(n)]
            with ThreadPoolExecutor(n) as ex:
                parts = list(ex.map(lambda g: [self._pread(s[1] - s[0], s[0]) for s in g], groups))
            blobs: list = [None] * len(spans)
            for i, part in enumerate(parts):
                blobs[i::n] = part
        else:
            blobs = [self._pread(s[1] - s[0], s[0]) for s in spans]
        self._count(sum(len(b) for b in blobs))
        return split_spans(ranges, spans, blobs)

    def read_elements(self, requests: list[tuple[str, int, int]]) -> list[bytes]:
        return self.read_ranges(element_ranges(self.tensors, requests))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
