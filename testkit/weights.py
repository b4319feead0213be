"""dtypes, sizes and deterministic random weights for a ``{key: shape}`` spec."""
from __future__ import annotations

import hashlib
import math
from typing import Mapping

import ml_dtypes
import numpy as np

# safetensors dtype name -> (numpy dtype, bytes per element)
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


def dtype_of_key(key: str) -> str:
    """Default dtype class of a key: integer buffers are "I64", the rest "F16"."""
    if key.endswith("position_ids"):
        return "I64"
    return "F16"


def is_int_key(key: str) -> bool:
    return dtype_of_key(key).startswith("I")


def param_count(spec: Mapping[str, tuple[int, ...]], *, include_int: bool = False) -> int:
    """Number of elements in `spec` (integer buffers such as position_ids excluded by default)."""
    return sum(math.prod(s) for k, s in spec.items() if include_int or not is_int_key(k))


def resolve_dtype(key: str, dtype: str | Mapping[str, str], is_int: bool) -> str:
    if is_int:
        return "I64"
    d = dtype.get(key, "F16") if isinstance(dtype, Mapping) else dtype
    if d not in FLOAT_DTYPES:
        raise ValueError(f"unsupported float dtype {d!r} for {key}; known: {FLOAT_DTYPES}")
    return d


def spec_nbytes(spec: Mapping[str, tuple[int, ...]], dtype: str | Mapping[str, str] = "F16") -> int:
    """Bytes of tensor data (without header) when `spec` is written with `dtype`."""
    return sum(math.prod(s) * DTYPES[resolve_dtype(k, dtype, is_int_key(k))].itemsize
               for k, s in spec.items())


def _key_rng(seed: int, key: str) -> np.random.Generator:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()
    words = [int(w) for w in np.frombuffer(digest, dtype="<u4")]
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *words])


_EMBED_MARKERS = ("token_embedding", "position_embedding", "positional_embedding")


def _random_tensor(key: str, shape: tuple[int, ...], seed: int, scale_by_fan_in: bool) -> np.ndarray:
    if key.endswith("position_ids"):
        return np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
    if key.endswith("logit_scale"):
        return np.full(shape, np.log(100.0), dtype=np.float32)  # 4.6052
    rng = _key_rng(seed, key)
    x = rng.standard_normal(shape, dtype=np.float32)
    leaf = key.rsplit(".", 1)[-1]
    if any(m in key for m in _EMBED_MARKERS):
        x *= np.float32(0.02)
    elif leaf.endswith("bias"):  # bias, in_proj_bias
        x *= np.float32(0.02)
    elif len(shape) == 1:  # every 1-D weight is a LayerNorm / GroupNorm scale
        x = np.float32(1.0) + np.float32(0.05) * x
    elif len(shape) >= 2 and scale_by_fan_in:
        fan_in = math.prod(shape[1:])
        x *= np.float32(1.0 / math.sqrt(fan_in))
    return x


def random_state_dict(spec: Mapping[str, tuple[int, ...]], seed: int, *,
                      scale_by_fan_in: bool = True) -> dict[str, np.ndarray]:
    """Deterministic float32 tensors (int64 for position_ids) for every key of `spec`.

    Each tensor depends only on (seed, key, shape): weights ~ N(0, 1/fan_in)
    (N(0, 1) if not scale_by_fan_in), norm scales 1 + 0.05 N, biases 0.02 N,
    embeddings 0.02 N, logit_scale ln(100), position_ids arange.
    """
    return {k: _random_tensor(k, tuple(s), seed, scale_by_fan_in) for k, s in spec.items()}


def convert(arr: np.ndarray, dt: str) -> np.ndarray:
    if dt == "I64":
        return np.ascontiguousarray(arr, dtype="<i8")
    a = np.asarray(arr)
    if dt.startswith("F8_"):
        fi = ml_dtypes.finfo(DTYPES[dt])
        a = np.clip(a.astype(np.float32, copy=False), float(fi.min), float(fi.max))  # saturate
    return np.ascontiguousarray(a.astype(DTYPES[dt], copy=False))
