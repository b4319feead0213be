"""The safetensors dtype table, decoding of raw bytes to float32, and rounding to each format.

numpy has no bfloat16 or float8 types. They are decoded and rounded here with numpy alone,
exactly, instead of through ``ml_dtypes`` (the library JAX uses for them):

* bf16 -> fp32 is the 16 bits shifted into the top half of a float32 (bf16 *is* the top half);
* fp8 e4m3fn / e5m2 -> fp32 is a lookup in a 256-entry table built from the format's definition;
* fp32 -> bf16 or fp8 is a multiple of the format's spacing at that value, rounded to even, in
  float64 (exact), with ml_dtypes' overflow (e4m3fn has no infinity: beyond 464 is NaN).

Why not ml_dtypes: measured with ``python -X importtime`` in a fresh venv, ``import ml_dtypes``
0.7.0 costs 1.15 s (0.9 s of CPU), 0.5.4 about 0.03 s, and every command and every host start
imported this module (issue 23). The code above is a few lines, and tests/test_dtypes.py compares
it with ml_dtypes on every bf16 and fp8 bit pattern and on millions of float32 values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DType:
    name: str            # safetensors name, e.g. "BF16"
    itemsize: int
    storage: str         # little-endian numpy dtype of the stored bytes (bf16/fp8: their bits as uint)
    is_float: bool
    mantissa_bits: int   # explicit mantissa bits (precision); ints: large
    short: str           # human name used in reports ("fp16", "bf16", ...)


DTYPES: dict[str, DType] = {d.name: d for d in (
    DType("F64", 8, "<f8", True, 52, "fp64"),
    DType("F32", 4, "<f4", True, 23, "fp32"),
    DType("F16", 2, "<f2", True, 10, "fp16"),
    DType("BF16", 2, "<u2", True, 7, "bf16"),
    DType("F8_E4M3", 1, "u1", True, 3, "fp8_e4m3"),
    DType("F8_E5M2", 1, "u1", True, 2, "fp8_e5m2"),
    DType("I64", 8, "<i8", False, 63, "int64"),
    DType("I32", 4, "<i4", False, 31, "int32"),
    DType("I16", 2, "<i2", False, 15, "int16"),
    DType("I8", 1, "i1", False, 7, "int8"),
    DType("U8", 1, "u1", False, 8, "uint8"),
    DType("U16", 2, "<u2", False, 16, "uint16"),
    DType("U32", 4, "<u4", False, 32, "uint32"),
    DType("U64", 8, "<u8", False, 64, "uint64"),
    DType("BOOL", 1, "?", False, 1, "bool"),
)}


def get(name: str) -> DType | None:
    return DTYPES.get(name)


def _fp8_table(exp_bits: int, man_bits: int, finite_only: bool) -> np.ndarray:
    """The float32 value of each of the 256 codes of an fp8 format (IEEE-like, bias 2^(e-1) - 1).
    ``finite_only`` (the "fn" formats): no infinities, only the all-ones code is NaN."""
    code = np.arange(256)
    sign = np.where(code & 0x80, -1.0, 1.0)
    e = (code >> man_bits) & ((1 << exp_bits) - 1)
    m = code & ((1 << man_bits) - 1)
    bias = (1 << (exp_bits - 1)) - 1
    top = (1 << exp_bits) - 1
    val = np.where(e == 0, m / (1 << man_bits) * 2.0 ** (1 - bias),
                   (1 + m / (1 << man_bits)) * 2.0 ** (e - bias))
    if finite_only:
        val = np.where((e == top) & (m == (1 << man_bits) - 1), np.nan, val)
    else:
        val = np.where(e == top, np.where(m == 0, np.inf, np.nan), val)
    return (sign * val).astype(np.float32)


#: fp8 code -> float32 value (exact: every fp8 value is a float32)
FP8_TABLES = {"F8_E4M3": _fp8_table(4, 3, True), "F8_E5M2": _fp8_table(5, 2, False)}


def decode(raw: bytes | memoryview, dtype: str) -> np.ndarray:
    """Decode little-endian raw bytes of ``dtype`` to a float32 array."""
    arr = np.frombuffer(raw, dtype=DTYPES[dtype].storage)
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if dtype in FP8_TABLES:
        return FP8_TABLES[dtype][arr]
    if dtype == "F64":
        with np.errstate(over="ignore", invalid="ignore"):  # beyond fp32 range becomes inf
            return arr.astype(np.float32)
    return arr.astype(np.float32)


#: largest finite value of each narrow float format (beyond it, rounding overflows)
MAX_FINITE = {"BF16": (2 - 2.0 ** -7) * 2.0 ** 127,
              "F8_E4M3": 448.0, "F8_E5M2": 57344.0}
#: what an overflow becomes: e4m3fn has no infinity (NaN, as ml_dtypes and PyTorch give)
OVERFLOW = {"BF16": np.inf, "F8_E4M3": np.nan, "F8_E5M2": np.inf}


def _round_to(v: np.ndarray, dtype: str) -> np.ndarray:
    """float32 -> nearest value of a narrow float format (ties to even), as float32. In float64,
    exactly: the spacing at |v| is 2^(max(exponent, smallest normal exponent) - mantissa bits),
    a power of two, so v / spacing is exact and ``rint`` (ties to even) picks the even mantissa."""
    d = DTYPES[dtype]
    with np.errstate(invalid="ignore", over="ignore"):
        a = np.abs(v.astype(np.float64))
        e = np.maximum(np.frexp(a)[1] - 1, MIN_EXP[dtype])
        spacing = np.ldexp(1.0, e - d.mantissa_bits)
        q = np.rint(a / spacing) * spacing
        q = np.where(q > MAX_FINITE[dtype], OVERFLOW[dtype], q)
        q = np.where(np.isnan(a), np.nan, q)
        return np.copysign(q, v).astype(np.float32)


def quantize(values: np.ndarray, dtype: str) -> np.ndarray:
    """Round float32 values to ``dtype`` (round-to-nearest-even) and back to float32."""
    d = DTYPES[dtype]
    v = np.ascontiguousarray(values, dtype=np.float32)
    if not d.is_float or d.name in ("F32", "F64"):
        return v.copy() if v is values else v
    if dtype in OVERFLOW:
        return _round_to(v, dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        return v.astype(np.float16).astype(np.float32)


def coarser(a: str, b: str) -> str:
    """The dtype of the two with fewer mantissa bits (the one both can be compared in)."""
    da, db = DTYPES[a], DTYPES[b]
    return a if da.mantissa_bits <= db.mantissa_bits else b


def rounding_var(values: np.ndarray, dtype: str) -> np.ndarray:
    """Per-element variance of the rounding error of storing ``values`` in ``dtype``."""
    d = DTYPES[dtype]
    if not d.is_float or d.mantissa_bits >= 23:
        return np.zeros(values.shape, np.float64)
    a = np.abs(values.astype(np.float64))
    a = np.where(np.isfinite(a) & (a > 0), a, 1e-30)
    spacing = np.exp2(np.floor(np.log2(a)) - d.mantissa_bits)
    return spacing * spacing / 12.0


#: smallest normal exponent of each float format (below it the spacing stays fixed)
MIN_EXP = {"F64": -1022, "F32": -126, "F16": -14, "BF16": -126, "F8_E4M3": -6, "F8_E5M2": -14}


def rounding_interval(values: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi): the reals that round to ``values`` stored as ``dtype`` lie between, halfway
    to each neighbour (float64; at a power of two the neighbour below is nearer)."""
    d = DTYPES[dtype]
    v = values.astype(np.float64)
    a = np.abs(v)
    if not d.is_float:
        return v - 0.5, v + 0.5
    fin = np.isfinite(a) & (a > 0)
    e = np.floor(np.log2(np.where(fin, a, 1.0)))
    e = np.maximum(np.where(fin, e, MIN_EXP[dtype]), MIN_EXP[dtype])
    up = np.exp2(e - d.mantissa_bits) / 2                       # half the spacing away from zero
    pow2 = fin & (a == np.exp2(e)) & (e > MIN_EXP[dtype])
    down = np.where(pow2, up / 2, up)                           # ... and towards zero
    lo = np.where(v < 0, v - up, v - down)
    hi = np.where(v < 0, v + down, v + up)
    return lo, hi


def half_spacing(values: np.ndarray, dtype: str) -> np.ndarray:
    """Half the larger distance from ``values`` (stored as ``dtype``) to a neighbour (float64)."""
    lo, hi = rounding_interval(values, dtype)
    v = values.astype(np.float64)
    return np.maximum(v - lo, hi - v)


def could_be_same(a: np.ndarray, da: str, sa, b: np.ndarray, db: str, sb) -> np.ndarray:
    """Elementwise: can one master value give ``a`` stored as ``da`` times scale ``sa`` and
    ``b`` stored as ``db`` times ``sb`` (ComfyUI "fp8 scaled": fp8(w / s) * s)? True where
    the sets of reals rounding to each overlap, so a double rounding through another
    precision is allowed and a change beyond the rounding is not."""
    sa = np.abs(np.asarray(sa, np.float64))
    sb = np.abs(np.asarray(sb, np.float64))
    with np.errstate(invalid="ignore", over="ignore"):
        la, ha = rounding_interval(a, da)
        lb, hb = rounding_interval(b, db)
        va, vb = a.astype(np.float64) * sa, b.astype(np.float64) * sb
        ok = (va == vb) | (np.isnan(va) & np.isnan(vb))
        ok |= np.minimum(ha * sa, hb * sb) - np.maximum(la * sa, lb * sb) > 0
    return ok


#: GGML block types: (values per block, bytes per block), for sizes by bytes
GGML_BLOCKS = {"Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
               "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
               "Q8_K": (256, 292)}


def storage_bytes(dtype: str, numel: int) -> float:
    """Bytes ``numel`` values take stored as ``dtype`` (a safetensors or GGML type name)."""
    if dtype in DTYPES:
        return numel * DTYPES[dtype].itemsize
    n, b = GGML_BLOCKS.get(dtype, (1, 1))
    return numel * b / n


def storage_label(entries, scaled: bool = False) -> str | None:
    """The precision of a file by bytes, not by tensor count: ``entries`` are (dtype, numel).
    "fp16", "bf16", "fp8_e4m3", "fp8 (e4m3, scaled)" (ComfyUI scaled fp8), "Q8_0" (GGUF) ...
    A block-quantized file is named by its quantization (the largest by bytes of its quantized
    tensors): GGUF files keep convolutions and norms in float, which can outweigh them."""
    by: dict[str, float] = {}
    for dt, n in entries:
        by[dt] = by.get(dt, 0.0) + storage_bytes(dt, n)
    quant = {dt: b for dt, b in by.items() if dt not in DTYPES}
    if quant:
        return max(quant, key=quant.get)
    if not by:
        return None
    top = max(by, key=by.get)
    if top.startswith("F8_") and scaled:
        return f"fp8 ({top[3:].lower()}, scaled)"
    return DTYPES[top].short if top in DTYPES else top


def _tie_ok(fine: np.ndarray, other: np.ndarray, fmt: str) -> np.ndarray:
    """Where ``fine`` lies exactly halfway between two neighbours of format ``fmt`` and
    ``other`` is one of them: a double rounding (fp32 -> fp16 -> bf16 vs fp32 -> bf16)
    may land on either, so both are the same weight."""
    q = quantize(fine, fmt).astype(np.float64)
    f = fine.astype(np.float64)
    n2 = 2.0 * f - q
    n2f = n2.astype(np.float32)
    with np.errstate(invalid="ignore"):
        on_grid = quantize(n2f, fmt).astype(np.float64) == n2f.astype(np.float64)
        exact_mid = (n2f.astype(np.float64) - f) == (f - q)
        o = other.astype(np.float64)
        return (q != f) & on_grid & exact_mid & ((o == q) | (o == n2f))


def same_after_rounding(a: np.ndarray, da: str, b: np.ndarray, db: str) -> np.ndarray:
    """Elementwise: could ``a`` (stored as ``da``) and ``b`` (stored as ``db``) be the same
    weight, differing only by the rounding of a precision change?"""
    with np.errstate(invalid="ignore"):
        ok = (a == b) | (np.isnan(a) & np.isnan(b))
        if ok.all() or da == db:
            return ok
        ok |= quantize(b, da) == a
        ok |= quantize(a, db) == b
        if not ok.all():
            bad = ~ok
            ok[bad] = _tie_ok(b[bad], a[bad], da) | _tie_ok(a[bad], b[bad], db)
    return ok


#: dtype name as torch / numpy / ml_dtypes print it (``torch.float16`` -> "float16") -> safetensors
#: dtype name; the torch checkpoint reader and the in-memory source both read it
TORCH_NAMES: dict[str, str] = {
    "float64": "F64", "double": "F64",
    "float32": "F32", "float": "F32",
    "float16": "F16", "half": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "int64": "I64", "long": "I64",
    "int32": "I32", "int": "I32",
    "int16": "I16", "short": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
}
