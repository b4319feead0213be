"""Shared plumbing of the non-safetensors sources."""
from __future__ import annotations

import os

from ..errors import BadFileError


class Source:
    """Context-manager base: subclasses set path, size, metadata, tensors."""

    format = "unknown"

    def __init__(self, path: str):
        self.path = path
        self.bytes_read = 0
        self.metadata: dict[str, str] = {}
        self.tensors: dict = {}
        self.size = 0

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def pread(fd: int, n: int, offset: int, path: str) -> bytes:
    try:
        data = os.pread(fd, n, offset)
    except OSError as e:
        raise BadFileError(f"read failed at offset {offset}: {e.strerror or e}", path) from None
    if len(data) != n:
        raise BadFileError(f"file ended early: wanted {n} bytes at offset {offset}, got {len(data)}", path)
    return data
