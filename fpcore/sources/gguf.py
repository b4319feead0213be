"""GGUF files (ComfyUI-GGUF / llama.cpp), through the ``gguf`` package.

Tensors are exposed with their logical (PyTorch, row-major) shape: GGUF stores
dimensions fastest-first, so the shape is reversed, and ComfyUI-GGUF records shapes
it had to change in ``comfy.gguf.orig_shape.<name>``. Unquantized tensors are read
as stored; for quantized types only the blocks covering the requested elements are
dequantized, and the values come back as float32 (dtype "F32").
"""
from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..errors import BadFileError, UnsupportedError
from .base import FileIdentity, Source, TensorInfo, check_regular_file

log = logging.getLogger(__name__)

#: GGML types stored as plain arrays -> safetensors dtype
PLAIN = {"F32": "F32", "F16": "F16", "BF16": "BF16", "F64": "F64", "I8": "I8", "I16": "I16", "I32": "I32",
         "I64": "I64"}


def _gguf():
    try:
        import gguf  # noqa: PLC0415 - optional at import time of fpcore
    except ImportError:
        return None
    return gguf


class GGUFFile(Source):
    format = "gguf"

    def __init__(self, path: str | os.PathLike):
        super().__init__(os.fspath(path))
        p = self.path
        st = check_regular_file(p)
        self.size = st.st_size
        self.identity = FileIdentity(os.path.realpath(p), st.st_size, st.st_mtime_ns, st.st_ino)
        g = _gguf()
        if g is None:
            raise UnsupportedError("reading .gguf needs the 'gguf' package", p, fix="pip install gguf")
        self._g = g
        try:
            self._reader = g.GGUFReader(p, "r")
        except (ValueError, KeyError, IndexError, OSError, TypeError, AssertionError) as e:
            raise BadFileError(f"not a valid GGUF file ({type(e).__name__}: {str(e)[:80]})", p) from None
        meta: dict[str, str] = {}
        for name, f in self._reader.fields.items():
            if name.startswith("GGUF.") or not f.types:
                continue
            try:
                v = f.contents()
            except Exception:  # a field the package cannot decode is not worth failing over
                continue
            if isinstance(v, (str, int, float, bool)):
                meta[name] = str(v)
            elif isinstance(v, list) and len(v) <= 16:
                meta[name] = str(v)
        self.metadata = meta
        self._t = {}
        #: tensor name -> GGML block type of the quantized tensors (their values read as F32):
        #: the fingerprint keeps it, so a copy is compared by requantizing (fpcore.match.quant)
        self.quant: dict[str, str] = {}
        tensors = {}
        for t in self._reader.tensors:
            qtype = g.GGMLQuantizationType(int(t.tensor_type))
            shape = tuple(int(s) for s in reversed([int(x) for x in t.shape]))
            orig = meta.get(f"comfy.gguf.orig_shape.{t.name}")
            if orig:
                try:
                    shape = tuple(int(x) for x in orig.strip("[]() ").split(",") if x.strip())
                except ValueError:
                    pass
            if qtype.name in PLAIN:
                dt = PLAIN[qtype.name]
            elif qtype in g.GGML_QUANT_SIZES:
                dt = "F32"
                self.quant[t.name] = qtype.name
            else:
                raise UnsupportedError(f"tensor {t.name!r}: GGML type {qtype.name} is not supported", p)
            if math.prod(shape) != int(t.n_elements):
                raise BadFileError(f"tensor {t.name!r}: shape {shape} does not hold {int(t.n_elements)} elements", p)
            self._t[t.name] = (t, qtype)
            tensors[t.name] = TensorInfo(t.name, dt, shape, int(t.data_offset), int(t.n_bytes))
        self.tensors = tensors

    def read_elements(self, requests: list[tuple[str, int, int]]) -> list[bytes]:
        g = self._g
        out = []
        for key, start, count in requests:
            t, qtype = self._t[key]
            flat = np.asarray(t.data).reshape(-1).view(np.uint8)
            if qtype.name in PLAIN:
                item = flat.size // max(int(t.n_elements), 1)
                b = flat[start * item:(start + count) * item].tobytes()
                self._count(len(b))
                out.append(b)
                continue
            bs, ts = g.GGML_QUANT_SIZES[qtype]
            b0, b1 = start // bs, (start + count - 1) // bs + 1
            raw = np.ascontiguousarray(flat[b0 * ts:b1 * ts]).reshape(1, -1)
            self._count(raw.size)
            vals = g.quants.dequantize(raw, qtype).reshape(-1).astype(np.float32)
            lo = start - b0 * bs
            out.append(vals[lo:lo + count].astype("<f4").tobytes())
        return out

    def close(self) -> None:
        r = getattr(self, "_reader", None)
        if r is not None:
            self._reader = None
            self._t = {}
            mm = getattr(r, "data", None)
            m = getattr(mm, "_mmap", None)
            del r, mm
            if m is not None:
                try:
                    m.close()
                except (BufferError, ValueError):
                    pass
