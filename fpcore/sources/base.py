"""The source interface every container implements, and the plumbing they share.

A *source* is anything fpcore can fingerprint: a safetensors file, a torch checkpoint, a
GGUF file, a diffusers folder, tensors in memory, a remote file. It exposes its tensors
under the file's own key names with their dtype and shape, and reads raw little-endian
bytes of element runs on request. Nothing above this layer knows which container it is.
"""
from __future__ import annotations

import abc
import math
import os
import stat
from dataclasses import dataclass

from ..errors import BadFileError

#: the safetensors library refuses headers over 100 MB (its HeaderTooLarge); so do we, and
#: every other container caps its own metadata at this size too
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorInfo:
    key: str
    dtype: str           # safetensors dtype name: F16, BF16, F8_E4M3, ...
    shape: tuple[int, ...]
    offset: int          # absolute offset of the first byte in the container (0 where it has none)
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


class Source(abc.ABC):
    """A model container, used as a context manager.

    Attributes every source sets: ``path`` (what the user gave: a path, a folder, a name),
    ``format`` (``safetensors | ckpt | gguf | diffusers | memory | ...``), ``size`` (bytes of the
    container), ``metadata`` (str -> str), ``tensors`` (key -> TensorInfo), ``bytes_read``
    (bytes actually read so far), and ``identity`` (a FileIdentity, or None when the source is
    not one local file)."""

    format = "unknown"

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.size = 0
        self.metadata: dict[str, str] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self.identity: FileIdentity | None = None
        self._bytes_read = 0

    @property
    def bytes_read(self) -> int:
        return self._bytes_read

    def _count(self, n: int) -> None:
        self._bytes_read += n

    @abc.abstractmethod
    def read_elements(self, requests: list[tuple[str, int, int]]) -> list[bytes]:
        """Raw little-endian bytes of ``count`` elements from flat index ``start`` of tensor
        ``key``, for each (key, start, count); one bytes object per request, in order."""

    def close(self) -> None:
        """Release what the source holds; closing twice is harmless."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing useful to do
            pass


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


def open_fd(path: str) -> tuple[int, FileIdentity]:
    """Open a regular file read-only; its identity is taken from the open descriptor."""
    check_regular_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise BadFileError(f"cannot open: {e.strerror or e}", path) from None
    st = os.fstat(fd)
    return fd, FileIdentity(os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)


def pread(fd: int, n: int, offset: int, path: str) -> bytes:
    try:
        data = os.pread(fd, n, offset)
    except OSError as e:
        raise BadFileError(f"read failed at offset {offset}: {e.strerror or e}", path) from None
    if len(data) != n:
        raise BadFileError(f"file ended early: wanted {n} bytes at offset {offset}, got {len(data)} (was it truncated?)",
                           path)
    return data
