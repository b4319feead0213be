"""The weight fingerprint: header facts plus a small deterministic sample of values.

Per tensor: canonical key, shape, dtype, a hash of the sampled raw bytes (exact copy),
a hash of the sampled values decoded to float32 (survives lossless re-encoding:
fp16 -> fp32, key/prefix/order changes) and the sampled values themselves, stored in
the file's own dtype. Sample positions depend only on the canonical key and shape,
never on the file order, and each tensor contributes one contiguous run, so a cold
read touches about one page per tensor.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from . import dtypes, layout
from .errors import BadFileError

log = logging.getLogger(__name__)

#: bump when sampling or the stored format changes; stored with every fingerprint
ALGO_VERSION = 2

#: sample run length by tensor rank: (minimum ndim, elements per run)
RUN_LENGTH: list[tuple[int, int]] = [(2, 128), (0, 32)]
#: components whose tensors are not sampled (EMA copies are not what gets loaded)
NOT_SAMPLED = ("ema",)


def run_length(shape: tuple[int, ...]) -> int:
    for min_ndim, n in RUN_LENGTH:
        if len(shape) >= min_ndim:
            return min(n, math.prod(shape))
    return 0


def run_start(ckey: str, shape: tuple[int, ...], length: int) -> int:
    """Start element of the sample run, from the shape only (never from the file order).

    Weights (>= 2-D) are sampled at their end and 1-D tensors at their start: in
    safetensors files (tensors sorted by name) the end of a weight is usually followed by
    the biases and norms of the same layer, so one read covers them all and a cold read
    touches about one page per weight matrix."""
    numel = math.prod(shape)
    if numel <= length or len(shape) < 2:
        return 0
    return numel - length


def _h64(b: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "little")


@dataclass
class Fingerprint:
    keys: list[str]                      # canonical keys, sorted
    shapes: list[tuple[int, ...]]
    dtypes: list[str]
    counts: np.ndarray                   # sampled elements per tensor (int32)
    raw: bytes                           # concatenated sampled bytes, stored dtype
    h_raw: np.ndarray                    # uint64 per tensor
    h_val: np.ndarray                    # uint64 per tensor
    version: int = ALGO_VERSION
    format: str = "safetensors"
    info: dict = field(default_factory=dict)   # free-form: file size, source keys count ...
    _vals: np.ndarray | None = field(default=None, repr=False)
    _offs: np.ndarray | None = field(default=None, repr=False)
    _index: dict | None = field(default=None, repr=False)
    _views: dict | None = field(default=None, repr=False)
    _params: np.ndarray | None = field(default=None, repr=False)
    _key_facts: tuple | None = field(default=None, repr=False)

    # -- access -----------------------------------------------------------------
    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.keys)}
        return self._index

    def _decode_all(self) -> None:
        """Decode every sample at once: one decode per run of tensors stored in the same dtype."""
        counts = [int(n) for n in self.counts]
        offs = np.zeros(len(self.keys) + 1, np.int64)
        offs[1:] = np.cumsum(counts)
        parts, pos, i = [], 0, 0
        while i < len(counts):
            dt, j, n = self.dtypes[i], i, 0
            while j < len(counts) and self.dtypes[j] == dt:
                n += counts[j]
                j += 1
            nb = n * dtypes.DTYPES[dt].itemsize
            if n:
                parts.append(dtypes.decode(self.raw[pos:pos + nb], dt))
            pos, i = pos + nb, j
        self._vals = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        self._offs = offs

    def values(self, i: int) -> np.ndarray:
        """Decoded float32 sample of tensor i."""
        if self._vals is None:
            self._decode_all()
        return self._vals[self._offs[i]:self._offs[i + 1]]

    def view(self, comp: str, min_ndim: int = 0) -> "ComponentView":
        """The sampled float tensors of one component as flat arrays (cached)."""
        if self._views is None:
            self._views = {}
        key = (comp, min_ndim)
        if key not in self._views:
            if self._vals is None:
                self._decode_all()
            _, ndim, is_float = self._facts()
            sel = self._in_component(comp) & (ndim >= min_ndim) & is_float & (np.asarray(self.counts) > 0)
            self._views[key] = ComponentView(self, np.nonzero(sel)[0].tolist() if len(sel) else [])
        return self._views[key]

    def _facts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per tensor, computed once: its component, its number of dimensions, float or not."""
        if self._key_facts is None:
            self._key_facts = (np.array([layout.component_of(k) for k in self.keys]),
                               np.array([len(sh) for sh in self.shapes], np.int64),
                               np.array([dtypes.DTYPES[d].is_float if d in dtypes.DTYPES else False
                                         for d in self.dtypes], bool))
        return self._key_facts

    def _in_component(self, comp: str) -> np.ndarray:
        """Per tensor: does it belong to ``comp`` (layout.in_component, over every key at once)?"""
        comps = self._facts()[0]
        return (comps != "ema") if comp == layout.WHOLE else (comps == comp)

    @property
    def params(self) -> np.ndarray:
        """Parameters per tensor (elements of float tensors; 0 for the others), computed once."""
        if self._params is None:
            is_float = self._facts()[2]
            self._params = np.array([math.prod(s) if f else 0 for s, f in zip(self.shapes, is_float)], np.int64)
        return self._params

    def params_of(self, comp: str) -> int:
        """Parameters of the float tensors of ``comp`` (WHOLE: every key but EMA copies)."""
        return int(self.params[self._in_component(comp)].sum()) if self.keys else 0

    def sample_digest(self) -> str:
        """Equal for two fingerprints exactly when they sampled the same bytes of the same tensors
        (and the files hold as many tensor bytes): files that may be byte copies of each other."""
        h = hashlib.blake2b(digest_size=16)
        h.update("\0".join(self.keys).encode("utf-8", "surrogateescape"))
        h.update("\0".join(self.dtypes).encode())
        h.update(np.ascontiguousarray(self.h_raw, np.uint64).tobytes())
        h.update(str(self.info.get("tensor_bytes")).encode())
        return h.hexdigest()

    def shape_map(self) -> dict[str, tuple[int, ...]]:
        return dict(zip(self.keys, self.shapes))

    def dtype_map(self) -> dict[str, str]:
        return dict(zip(self.keys, self.dtypes))

    def components(self) -> list[str]:
        return layout.components_of(self.keys)

    @property
    def nbytes(self) -> int:
        return len(self.serialize())

    # -- storage ----------------------------------------------------------------
    def serialize(self) -> bytes:
        meta = {"version": self.version, "format": self.format, "keys": self.keys,
                "shapes": [list(s) for s in self.shapes], "dtypes": self.dtypes, "info": self.info}
        buf = io.BytesIO()
        np.savez_compressed(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                            counts=self.counts.astype(np.int32), raw=np.frombuffer(self.raw, np.uint8),
                            h_raw=self.h_raw.astype(np.uint64), h_val=self.h_val.astype(np.uint64))
        return buf.getvalue()

    @classmethod
    def deserialize(cls, blob: bytes, source: str = "fingerprint") -> "Fingerprint":
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                fp = cls(keys=meta["keys"], shapes=[tuple(s) for s in meta["shapes"]], dtypes=meta["dtypes"],
                         counts=z["counts"].astype(np.int32), raw=z["raw"].tobytes(),
                         h_raw=z["h_raw"].astype(np.uint64), h_val=z["h_val"].astype(np.uint64),
                         version=int(meta["version"]), format=meta.get("format", "safetensors"),
                         info=meta.get("info", {}))
        except Exception as e:  # any damage: zip, json, missing arrays
            raise BadFileError(f"damaged fingerprint ({type(e).__name__}: {e})", source) from None
        if len(fp.keys) != len(fp.counts) or len(fp.raw) != sum(
                int(n) * dtypes.DTYPES[d].itemsize for n, d in zip(fp.counts, fp.dtypes)):
            raise BadFileError("damaged fingerprint (inconsistent sizes)", source)
        return fp


#: sample layouts (counts per tensor) whose position arrays are shared by every view with that
#: layout: a folder holds a few architectures, and every file of one has the same layout
POSITION_CACHE = 64


@functools.lru_cache(maxsize=POSITION_CACHE)
def _positions(counts: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, tensor of each value) of a view whose tensors hold these sample counts (int64),
    shared and read-only: a scan of 1,000 files kept 1,000 copies of them (a quarter of its
    memory). The tensor index is int32 (memory)."""
    c = np.frombuffer(counts, np.int64)
    offs = np.concatenate([[0], np.cumsum(c)]).astype(np.int64)
    tid = np.repeat(np.arange(len(c), dtype=np.int32), c)
    offs.flags.writeable = tid.flags.writeable = False
    return offs, tid


class ComponentView:
    """Flat arrays over a subset of a fingerprint's tensors (all in key order)."""

    def __init__(self, fp: Fingerprint, idx: list[int]):
        self.keys = [fp.keys[i] for i in idx]
        self.key_index = {k: j for j, k in enumerate(self.keys)}
        self.shapes = [fp.shapes[i] for i in idx]
        self.dtypes = [fp.dtypes[i] for i in idx]
        ia = np.asarray(idx, np.int64)
        self.counts = fp.counts[ia].astype(np.int64) if len(idx) else np.zeros(0, np.int64)
        self.h_raw = fp.h_raw[ia].astype(np.uint64) if len(idx) else np.zeros(0, np.uint64)
        self.offs, self.tid = _positions(self.counts.tobytes())
        if len(idx) and idx[-1] - idx[0] == len(idx) - 1:
            # tensors in a row (a component's keys sort together): a slice of the values, no copy
            self.raw_vals = fp._vals[fp._offs[idx[0]]:fp._offs[idx[-1] + 1]]
        else:
            # flat positions in the fingerprint's values: each tensor's start plus the position inside it
            gather = (fp._offs[ia][self.tid] + np.arange(len(self.tid)) - self.offs[self.tid]) if len(idx) else \
                np.zeros(0, np.int64)
            self.raw_vals = fp._vals[gather]      # as stored
        # ComfyUI "fp8 scaled" files store round(w / s) in fp8 next to a scalar ``scale_weight``
        tscale = np.ones(len(idx), np.float32)
        for j, i in enumerate(idx if any(d.startswith("F8") for d in self.dtypes) else ()):
            k = fp.keys[i]
            if k.endswith(".weight") and fp.dtypes[i].startswith("F8"):
                si = fp.index.get(k[:-len("weight")] + "scale_weight")
                if si is not None and fp.counts[si] == 1:
                    tscale[j] = fp.values(si)[0]
        self.scaled = bool(np.any(tscale != 1))
        self.scale = tscale[self.tid] if self.scaled else None
        self.vals = self.raw_vals * self.scale if self.scaled else self.raw_vals
        self._rvar = None

    @property
    def rvar(self) -> np.ndarray:
        """Per-element variance of the rounding to this file's dtype."""
        if self._rvar is None:
            self._rvar = self._rounding_var()
        return self._rvar

    def _rounding_var(self) -> np.ndarray:
        out = np.zeros(len(self.vals), np.float64)
        for dt in set(self.dtypes):
            m = self.elem_dtype_is(dt)
            out[m] = dtypes.rounding_var(self.raw_vals[m], dt)
        if self.scaled:
            out *= self.scale.astype(np.float64) ** 2
        return out

    @property
    def rvar_sums(self) -> np.ndarray:
        """Per tensor: the sum of its values' rounding variances (computed once)."""
        if getattr(self, "_rvar_sums", None) is None:
            out = np.zeros(len(self.keys))
            live = np.nonzero(self.counts)[0]
            if len(live):     # from a temporary: the per-element array is not kept (memory of a scan)
                rv = self._rvar if self._rvar is not None else self._rounding_var()
                out[live] = np.add.reduceat(rv, self.offs[live])
            self._rvar_sums = out
        return self._rvar_sums

    @property
    def layout(self) -> bytes:
        """A digest of the view's tensors (keys, shapes, sample counts): equal for two views
        exactly when they hold the same tensors, sampled alike (computed once)."""
        if getattr(self, "_layout", None) is None:
            h = hashlib.blake2b(digest_size=16)
            h.update("\0".join(self.keys).encode("utf-8", "surrogateescape"))
            h.update(repr(self.shapes).encode())
            h.update(np.ascontiguousarray(self.counts, np.int64).tobytes())
            self._layout = h.digest()
        return self._layout

    @property
    def single_dtype(self) -> str | None:
        """The one dtype every tensor of the view is stored in, else None (computed once)."""
        if not hasattr(self, "_single_dtype"):
            ds = set(self.dtypes)
            self._single_dtype = ds.pop() if len(ds) == 1 else None
        return self._single_dtype

    @property
    def tensor_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Per tensor: the sum of its sampled values and of their squares (float64, computed once)."""
        if getattr(self, "_tensor_sums", None) is None:
            s1, s2 = np.zeros(len(self.keys)), np.zeros(len(self.keys))
            live = np.nonzero(self.counts)[0]
            if len(live):
                v = self.vals.astype(np.float64)
                s1[live] = np.add.reduceat(v, self.offs[live])
                s2[live] = np.add.reduceat(v * v, self.offs[live])
            self._tensor_sums = (s1, s2)
        return self._tensor_sums

    @property
    def finite(self) -> bool:
        """Whether every sampled value is finite (computed once)."""
        if getattr(self, "_finite", None) is None:
            self._finite = bool(np.isfinite(self.vals).all())
        return self._finite

    def elem_dtype_is(self, dt: str) -> np.ndarray:
        tmask = np.array([d == dt for d in self.dtypes], bool)
        return tmask[self.tid] if len(self.tid) else np.zeros(0, bool)

    def elements(self, tensor_idx: np.ndarray) -> np.ndarray:
        """Flat element indices of the given tensors, in order."""
        if len(tensor_idx) == 0:
            return np.zeros(0, np.int64)
        cnt = self.counts[tensor_idx]
        starts = self.offs[tensor_idx]
        rel = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        return np.repeat(starts, cnt) + rel


def canonical_tensors(tensors: dict, path: str | None = None) -> dict[str, object]:
    """canonical key -> TensorInfo, dropping duplicates (first wins, with a warning)."""
    out: dict[str, object] = {}
    for key, t in tensors.items():
        ck = layout.canonical_key(key)
        if ck in out:
            log.warning("%s: %s and %s map to the same canonical key %s; keeping the first", path, out[ck].key, key, ck)
            continue
        out[ck] = t
    return out


def fingerprint_source(src, ct: dict | None = None) -> Fingerprint:
    """Fingerprint an open model source (has ``tensors``, ``read_elements``, ``format``).
    ``ct``: its canonical_tensors() if the caller already computed them."""
    if ct is None:
        ct = canonical_tensors(src.tensors, getattr(src, "path", None))
    keys = sorted(ct)
    requests, plan = [], []
    for ck in keys:
        t = ct[ck]
        comp = layout.split(ck)[0]
        n = 0 if comp in NOT_SAMPLED else run_length(t.shape)
        start = run_start(ck, t.shape, n) if n else 0
        plan.append(n)
        if n:
            requests.append((t.key, start, n))
    quant = getattr(src, "quant", None) or {}       # GGUF: block-quantized tensors (read as F32)
    blobs = iter(src.read_elements(requests))
    raws, h_raw, h_val = [], [], []
    for ck, n in zip(keys, plan):
        b = next(blobs) if n else b""
        raws.append(b)
        h_raw.append(_h64(b))
        h_val.append(_h64(dtypes.decode(b, ct[ck].dtype).tobytes()) if n else _h64(b""))
    return Fingerprint(
        keys=keys, shapes=[tuple(ct[k].shape) for k in keys], dtypes=[ct[k].dtype for k in keys],
        counts=np.array(plan, np.int32), raw=b"".join(raws),
        h_raw=np.array(h_raw, np.uint64), h_val=np.array(h_val, np.uint64),
        format=getattr(src, "format", "safetensors"),
        info={"n_tensors": len(src.tensors), "tensor_bytes": int(sum(t.nbytes for t in src.tensors.values())),
              **({"quant": {ck: quant[t.key] for ck, t in ct.items() if t.key in quant}} if quant else {})})
