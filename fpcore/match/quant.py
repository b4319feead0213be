"""Same weights through a block quantisation (GGUF Q8_0, Q4_0, Q5_0, Q4_1, Q5_1).

These schemes are deterministic from the weights: each block of 32 gets a scale (and for
the *_1 types a minimum) from its own values, then codes by rounding. A quantised copy is
checked by requantising the reference's sampled blocks with the file's scheme (the
``gguf`` package's own quantiser) and comparing the dequantised codes exactly; where they
differ, by whether one master value could give both the reference's value (within its
dtype's rounding) and the file's code (within half a code step of the file's block): the
double rounding of a copy quantised from a higher-precision master than the reference.
A fine-tune moves weights across code boundaries well beyond the reference's rounding, so
it stays a derivative. K-quants are not requantised: the gguf package has no quantiser for
them, and their 256-value super-blocks are larger than a sample run.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes

#: GGML types whose blocks are requantised: (block size, code grid). "sym" K: codes are
#: d * q with |q| <= K reached by the block's largest magnitude, so the step is max|a| / K;
#: "asym" L: codes are d * q + m with q in 0..L, so the step is (max a - min a) / L.
SCHEMES: dict[str, tuple[int, str, int]] = {
    "Q8_0": (32, "sym", 127), "Q4_0": (32, "sym", 8), "Q5_0": (32, "sym", 16),
    "Q4_1": (32, "asym", 15), "Q5_1": (32, "asym", 31),
}


def comparable(scheme: str | None, count: int) -> bool:
    """Can a sample of ``count`` values (whole blocks from the end of a tensor) be requantised?"""
    return scheme in SCHEMES and count > 0 and count % SCHEMES[scheme][0] == 0


def _step(blocks: np.ndarray, grid: str, k: int) -> np.ndarray:
    a = blocks.astype(np.float64)
    if grid == "sym":
        s = np.max(np.abs(a), axis=1) / k
    else:
        s = (np.max(a, axis=1) - np.min(a, axis=1)) / k
    return np.repeat(s, blocks.shape[1])


def requantise(values: np.ndarray, scheme: str) -> np.ndarray | None:
    """``values`` (whole blocks) quantised with ``scheme`` and dequantised; None without gguf."""
    try:
        import gguf  # noqa: PLC0415 - the optional dependency of GGUF files
    except ImportError:
        return None
    bs = SCHEMES[scheme][0]
    qt = gguf.GGMLQuantizationType[scheme]
    q = gguf.quants.quantize(values.astype(np.float32).reshape(-1, bs), qt)
    return gguf.quants.dequantize(q, qt).reshape(-1).astype(np.float32)


def same_quantised(a: np.ndarray, scheme: str, b: np.ndarray, db: str) -> np.ndarray:
    """Elementwise: could ``a`` (dequantised values of ``scheme``, whole blocks) be the
    reference's ``b`` (stored as ``db``) quantised?"""
    bs, grid, k = SCHEMES[scheme]
    with np.errstate(invalid="ignore"):
        ok = (a == b) | (np.isnan(a) & np.isnan(b))
        req = requantise(b, scheme)
        if req is not None:
            ok |= req == a
        if not ok.all():
            half = _step(a.reshape(-1, bs), grid, k) / 2
            hb = dtypes.half_spacing(b, db)
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            ok |= np.minimum(a64 + half, b64 + hb) - np.maximum(a64 - half, b64 - hb) > 0
    return ok
