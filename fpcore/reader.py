"""Reading model files: a validated safetensors header and sampled byte ranges.

Only the header and the byte ranges the fingerprint asks for are read. The header is
checked the way the safetensors Rust core checks it (size cap, JSON, dtype table,
contiguous offsets inside the file, byte length = elements x item size), so a lying
header is reported as such instead of causing huge allocations or reads past the end.
"""
from __future__ import annotations

import json
import logging
import math
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import dtypes
from .errors import BadFileError, HeaderError, UnsupportedError
from .formats.base import Source

log = logging.getLogger(__name__)

#: the safetensors library refuses headers over 100 MB; so do we
MAX_HEADER_BYTES = 100_000_000
#: read ranges closer than this are read in one request
COALESCE_GAP = 16 * 1024
#: concurrent reads: a cold read is latency-bound, so overlap a few
READ_THREADS = 8


@dataclass(frozen=True)
class TensorInfo:
    key: str
    dtype: str
    shape: tuple[int, ...]
    offset: int          # absolute file offset of the first byte
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class FileIdentity:
    path: str
    size: int
    mtime_ns: int
    inode: int


def check_regular_file(path: str | os.PathLike) -> os.stat_result:
    """stat() a path and refuse anything that is not a readable regular file."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise BadFileError("no such file", p) from None
    except OSError as e:  # ELOOP, EACCES, ENAMETOOLONG ...
        raise BadFileError(f"cannot stat: {e.strerror or e}", p) from None
    if stat.S_ISDIR(st.st_mode):
        raise BadFileError("is a directory, not a model file", p)
    if not stat.S_ISREG(st.st_mode):
        raise BadFileError("is not a regular file (FIFO, socket or device)", p)
    return st


class SafetensorsFile(Source):
    """A safetensors file with a validated header. Use as a context manager."""

    format = "safetensors"

    _fd = -1

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.bytes_read = 0
        check_regular_file(self.path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as e:
            raise BadFileError(f"cannot open: {e.strerror or e}", self.path) from None
        try:
            st = os.fstat(self._fd)
            self.identity = FileIdentity(os.path.realpath(self.path), st.st_size, st.st_mtime_ns, st.st_ino)
            self.size = st.st_size
            self._parse_header()
        except BaseException:
            self.close()
            raise

    # -- header ---------------------------------------------------------------------
    def _parse_header(self) -> None:
        p, size = self.path, self.size
        if size < 8:
            raise HeaderError(f"file is {size} bytes, too small for a safetensors header (truncated or empty)", p)
        n = int.from_bytes(self._pread(8, 0), "little")
        if n > MAX_HEADER_BYTES:
            raise HeaderError(f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit (not a safetensors file, or corrupt)", p)
        if n < 2:
            raise HeaderError(f"header length {n} is too small for a JSON object", p)
        if 8 + n > size:
            raise HeaderError(f"header length {n} runs past the end of the {size}-byte file (truncated download?)", p)
        raw = self._pread(n, 8)
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
        self.metadata: dict[str, str] = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
        self.header_len = n
        self.data_start = 8 + n
        data_len = size - self.data_start
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
        self.tensors: dict[str, TensorInfo] = {
            key: TensorInfo(key, dt, shape, self.data_start + b, e - b) for b, e, key, dt, shape in entries}

    # -- reading ----------------------------------------------------------------------
    def _pread(self, n: int, offset: int) -> bytes:
        try:
            data = os.pread(self._fd, n, offset)
        except OSError as e:
            raise BadFileError(f"read failed at offset {offset}: {e.strerror or e}", self.path) from None
        if len(data) != n:
            raise BadFileError(f"file ended early: wanted {n} bytes at offset {offset}, got {len(data)} (was it truncated?)",
                               self.path)
        return data

    def read_ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Read absolute (offset, length) ranges; nearby ranges are read together,
        and requests run concurrently (cold reads are latency-bound)."""
        if not ranges:
            return []
        if hasattr(os, "posix_fadvise"):
            try:  # no readahead: we want only the pages we ask for
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)
            except OSError:
                pass
        order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
        spans: list[list] = []  # [start, end, [range idx...]]
        for i in order:
            o, n = ranges[i]
            if spans and o <= spans[-1][1] + COALESCE_GAP:
                spans[-1][1] = max(spans[-1][1], o + n)
                spans[-1][2].append(i)
            else:
                spans.append([o, o + n, [i]])
        if len(spans) > 4:
            # one task per thread over interleaved spans: per-future overhead would dominate
            n = min(READ_THREADS, len(spans))
            groups = [spans[i::n] for i in range(n)]
            with ThreadPoolExecutor(n) as ex:
                parts = list(ex.map(lambda g: [self._pread(s[1] - s[0], s[0]) for s in g], groups))
            blobs = [None] * len(spans)
            for i, part in enumerate(parts):
                blobs[i::n] = part
        else:
            blobs = [self._pread(s[1] - s[0], s[0]) for s in spans]
        out: list[bytes] = [b""] * len(ranges)
        for (start, _, idxs), blob in zip(spans, blobs):
            mv = memoryview(blob)
            for i in idxs:
                o, n = ranges[i]
                out[i] = bytes(mv[o - start:o - start + n])
        self.bytes_read += sum(len(b) for b in blobs)
        return out

    def read_elements(self, requests: list[tuple[str, int, int]]) -> list[bytes]:
        """Raw bytes of ``count`` elements from ``start`` for each (key, start, count)."""
        ranges = []
        for key, start, count in requests:
            t = self.tensors[key]
            item = dtypes.DTYPES[t.dtype].itemsize
            ranges.append((t.offset + start * item, count * item))
        return self.read_ranges(ranges)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_model(path: str | os.PathLike):
    """Open a model of any supported format: safetensors, torch checkpoint (.ckpt/.pt/.pth/.bin,
    read without running pickle code), GGUF, or a diffusers folder (the folder itself or its
    model_index.json). Files are recognised by their first bytes, then by extension."""
    p = os.fspath(path)
    if os.path.basename(p) == "model_index.json" or (os.path.isdir(p) and any(
            os.path.exists(os.path.join(p, n)) for n in ("model_index.json", "unet", "transformer", "vae"))):
        from .formats.diffusers import DiffusersFolder
        return DiffusersFolder(p)
    check_regular_file(p)
    try:
        with open(p, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise BadFileError(f"cannot open: {e.strerror or e}", p) from None
    ext = os.path.splitext(p)[1].lower()
    if magic == b"GGUF":
        from .formats.gguf import GGUFFile
        return GGUFFile(p)
    from .formats.textenc import wrap
    if magic == b"PK\x03\x04" or (ext in (".ckpt", ".pt", ".pth", ".bin") and magic[:1] == b"\x80"):
        from .formats.ckpt import CkptFile
        return wrap(CkptFile(p))
    if ext == ".gguf":
        raise HeaderError("no GGUF magic number: not a GGUF file (truncated or renamed?)", p)
    # safetensors is self-describing; its reader says precisely what is wrong
    return wrap(SafetensorsFile(p))
