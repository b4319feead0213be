"""A model source over tensors already in memory (a host's loaded state dict).

``MemorySource`` implements the ``Source`` interface, so ``fingerprint.fingerprint_source``
samples a loaded model exactly as it samples a file: same canonical keys, same
positions, bytes in the tensor's own dtype. Only the sampled elements are copied
(a few rows per tensor at most); the model is never copied, moved or modified.

Tensors are duck-typed: numpy arrays (including ``ml_dtypes`` bfloat16 / float8) or
torch tensors on any device. torch is imported only when a torch tensor is read, and
nothing here imports a host. Host-specific key layouts are mapped to the checkpoint
layout by ``fpcore.sources.keymaps.remap`` before the tensors get here.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Mapping

import numpy as np

from .. import dtypes
from ..errors import BadFileError
from .base import Source, TensorInfo

log = logging.getLogger(__name__)

#: dtype name as torch / numpy / ml_dtypes print it -> safetensors dtype name
DTYPE_NAMES = dtypes.TORCH_NAMES

#: item size -> name of the torch integer type used to reinterpret raw bytes
_TORCH_INT = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}


def dtype_name(t: Any) -> str | None:
    """Safetensors dtype name of a tensor-like, or None if fpcore cannot read it."""
    dt = getattr(t, "dtype", None)
    if dt is None:
        return None
    if isinstance(dt, np.dtype):
        name = dt.name                       # "float16", "bfloat16", ... whatever the byte order
    else:
        name = str(dt).rsplit(".", 1)[-1]    # "torch.float16" -> "float16"
    return DTYPE_NAMES.get(name)


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


class MemorySource(Source):
    """Tensors in memory as a fingerprintable source. ``tensors``: key -> tensor-like.

    Tensors of a dtype fpcore cannot decode (quantized or packed types) and tensors
    without a shape are left out and listed in ``skipped``."""

    format = "memory"

    def __init__(self, tensors: Mapping[str, Any], name: str = "<memory>", metadata: Mapping[str, str] | None = None):
        super().__init__(name)
        self.metadata = dict(metadata or {})
        self.skipped: dict[str, str] = {}
        self._data: dict[str, Any] = {}
        for key, t in tensors.items():
            if isinstance(t, np.generic):
                t = np.asarray(t)
            dt = dtype_name(t)
            if dt is None or not hasattr(t, "shape"):
                self.skipped[key] = str(getattr(t, "dtype", type(t).__name__))
                continue
            shape = _shape(t)
            self._data[key] = t
            self.tensors[key] = TensorInfo(key, dt, shape, 0, math.prod(shape) * dtypes.DTYPES[dt].itemsize)
        self.size = sum(t.nbytes for t in self.tensors.values())
        if self.skipped:
            log.info("%s: %d tensors of unsupported dtype not sampled (e.g. %s)", name, len(self.skipped),
                     next(iter(self.skipped.items())))

    def read_elements(self, requests: Iterable[tuple[str, int, int]]) -> list[bytes]:
        """Raw little-endian bytes of ``count`` elements from flat index ``start``, per (key, start, count)."""
        out = []
        for key, start, count in requests:
            info = self.tensors[key]
            if start < 0 or count < 0 or start + count > info.numel:
                raise BadFileError(f"tensor {key!r}: elements {start}..{start + count} outside {info.numel}", self.path)
            b = _read(self._data[key], info, start, count, self.path)
            self._count(len(b))
            out.append(b)
        return out

    def close(self) -> None:
        self._data = {}


def _rows(info: TensorInfo, start: int, count: int) -> tuple[int, int, int]:
    """(first row, end row, element offset in the first row) along dim 0 covering the run."""
    if len(info.shape) == 0:
        return 0, 0, start
    row = math.prod(info.shape[1:])
    if row == 0:
        return 0, 0, 0
    r0 = start // row
    r1 = (start + count - 1) // row + 1 if count else r0
    return r0, r1, start - r0 * row


def _read(t: Any, info: TensorInfo, start: int, count: int, where: str) -> bytes:
    item = dtypes.DTYPES[info.dtype].itemsize
    if count == 0:
        return b""
    r0, r1, off = _rows(info, start, count)
    if isinstance(t, np.ndarray):
        part = t if t.ndim == 0 else t[r0:r1]
        flat = np.ascontiguousarray(part).reshape(-1)[off:off + count]
        raw = flat.byteswap().tobytes() if flat.dtype.byteorder == ">" else flat.tobytes()
    else:
        raw = _read_torch(t, r0, r1, off, count, item, info, where)
    if len(raw) != count * item:
        raise BadFileError(f"tensor {info.key!r}: read {len(raw)} bytes, expected {count * item}", where)
    return raw


def _read_torch(t: Any, r0: int, r1: int, off: int, count: int, item: int, info: TensorInfo, where: str) -> bytes:
    import torch  # only here: fpcore must not need torch

    try:
        part = t.detach()
        if part.dim():
            part = part[r0:r1]                      # a view: no copy of the tensor
        if part.device.type != "cpu":
            part = part.to("cpu")                   # only the few rows of the run
        flat = part.contiguous().reshape(-1)[off:off + count].contiguous()
        if flat.dtype == torch.bool:
            flat = flat.to(torch.uint8)
        ints = flat.view(getattr(torch, _TORCH_INT[item]))   # reinterpret: bf16 / fp8 have no numpy type
        return ints.numpy().astype(f"<i{item}" if item > 1 else np.uint8, copy=False).tobytes()
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as e:
        device = getattr(getattr(t, "device", None), "type", "?")
        raise BadFileError(f"tensor {info.key!r} ({info.dtype} on {device}) cannot be read: {e}", where) from None
